"""`--face-at auto`: per shot, the face whose mouth follows the job's audio best.

The tracker follows up to CANDIDATES faces in one pass (the largest, the second largest, ... at
each shot start, by position within the shot: faces.targets.Target.rank); a second pass over
the output's frames records each candidate's mouth signal (the sync meter's: lip opening with
the landmarks extra, else motion in the lower half of the face box); per shot, the candidate
whose signal the meter finds most confidently in step with the sound is the one synced. A shot
where no candidate reads above the meter's confidence floor, nor clearly (MARGIN) above the
others, keeps the largest face, and says so.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import protocol
from ..errors import Cancelled
from ..faces.detectors import DetectorSettings
from ..faces.targets import Target
from ..faces.tracking import FaceTrack
from ..media.decode import read_frames
from ..quality import meter
from ..quality.meter_live import MouthRecorder, measure_recorded
from .plan import Plan
from .who import find_tracks, settings_told

# Faces considered per shot: a dialogue scene rarely shows more than three faces large enough to
# lip-sync, and each candidate costs its mouth signal on every frame.
CANDIDATES = 3
# A face below the meter's confidence floor is still taken when it reads this much more
# confidently than every other face of the shot. Measured on face1 (its own sound) beside Katie
# (another speech), 6 s, 512x256: 0.49 and 0.59 for the speaker against 0.32 for the other.
MARGIN = 0.1


def _shots(plan: Plan, track: FaceTrack) -> list[tuple[int, int]]:
    """Output frame ranges [first, last) that show one shot each (a cut in the source, or a jump
    in the source order, ends one)."""
    starts = set(track.shot_starts)
    bounds = [0]
    for k in range(1, len(plan.sources)):
        rel = plan.sources[k] - plan.start
        if plan.sources[k] != plan.sources[k - 1] + 1 or rel in starts:
            bounds.append(k)
    bounds.append(len(plan.sources))
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _score(measure: meter.SyncMeasure) -> tuple[float, float]:
    peak = measure.shots[0].peak if measure.shots else 0.0
    return float(measure.confidence), float(peak)


def auto_face(req, plan: Plan, device, progress: Callable[[str, int, int], None], cancel: Callable[[], bool],
              tell: Callable[[str], None]) -> tuple[DetectorSettings, list[FaceTrack]]:
    """The detector and one track: per shot, the candidate face that speaks (told per shot)."""
    settings = settings_told(req, device, tell)
    if plan.sound is None:
        raise ValueError("auto_face needs a plan made with sound=True")
    candidates = find_tracks(plan, settings, [Target(rank=r) for r in range(CANDIDATES)], cache_dir=req.cache_dir,
                             use_cache=req.cache, progress=progress, cancel=cancel)
    recorders = [MouthRecorder(plan.times, plan.fps) for _ in candidates]
    n_out = len(plan.sources)
    progress(protocol.STAGE_DETECT, 0, n_out)
    for k, (src, frame) in enumerate(read_frames(plan.info, plan.sources)):
        if cancel():
            raise Cancelled("cancelled")
        rel = src - plan.start
        for track, recorder in zip(candidates, recorders):
            if track.has_face[rel]:
                recorder.add(k, frame, tuple(int(v) for v in track.boxes[rel]))
        if k % 25 == 24:
            progress(protocol.STAGE_DETECT, k + 1, n_out)
    chosen = _choose(plan, candidates, recorders, tell)
    progress(protocol.STAGE_DETECT, n_out, n_out)
    return settings, [chosen]


def _choose(plan: Plan, candidates: list[FaceTrack], recorders: list[MouthRecorder],
            tell: Callable[[str], None]) -> FaceTrack:
    """One track made of, per shot, the boxes of the candidate that reads best."""
    first = candidates[0]
    boxes = first.boxes.copy()
    has_face = first.has_face.copy()
    for a, b in _shots(plan, first):
        rel = np.asarray(plan.sources[a:b]) - plan.start
        present = [c for c, t in enumerate(candidates) if t.has_face[rel].any()]
        when = f"{plan.times[a]:.2f}-{plan.times[b - 1] + 1 / plan.fps:.2f} s"
        if not present:
            continue
        scores = {c: _score(measure_recorded(recorders[c], plan.sound, a, b)) for c in present}
        ranked = sorted(present, key=lambda c: scores[c], reverse=True)
        best = ranked[0]
        lead = scores[best][0] - (scores[ranked[1]][0] if len(ranked) > 1 else 0.0)
        if scores[best][0] < meter.MIN_CONFIDENCE and lead < MARGIN:
            best = present[0]
            tell(f"face auto, {when}: no face reads in step with the audio; syncing the largest")
        else:
            box = candidates[best].boxes[rel[candidates[best].has_face[rel]][0]]
            others = ", ".join(f"{scores[c][0]:.2f}" for c in ranked[1:])
            tell(f"face auto, {when}: the face at ({(box[2] + box[3]) // 2}, {(box[0] + box[1]) // 2}) "
                 f"(confidence {scores[best][0]:.2f}" + (f"; the other faces {others})" if others else ")"))
        boxes[rel] = candidates[best].boxes[rel]
        has_face[rel] = candidates[best].has_face[rel]
    return FaceTrack(boxes=boxes, has_face=has_face, detected_frames=first.detected_frames,
                     from_cache=first.from_cache, shot_starts=first.shot_starts)
