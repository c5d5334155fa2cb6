"""Whom a job syncs: the detector that runs, the people the request chose (faces.targets.Target:
--face-at X Y at --face-time, each --speaker, or the largest face of each shot), identity
(faces.identity) set up from the face at each chosen pixel, and one box track per person from
one pass over the clip (faces.tracking.track_targets), through the detection cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable


from .. import protocol
from ..errors import Wav2LipError
from ..faces.detectors import DetectorSettings, make_detector, resolve_detector
from ..faces.lookup import face_at_point
from ..faces.targets import Target
from ..faces.tracking import FaceTrack, track_targets
from ..media.decode import read_frames
from .plan import Plan

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]
NoteFn = Callable[[str], None]


def detection_settings(req, device: str) -> tuple[DetectorSettings, str]:
    """The detector that runs for `req` ("auto" resolved) and a line telling the user which."""
    kind, weights, line = ("box", None, "") if req.box is not None else resolve_detector(req.detector, req.detector_weights)
    return DetectorSettings(kind=kind, weights=weights, box=req.box, pads=tuple(req.pads), smooth=req.smooth,
                            device=device, face_at=tuple(req.face_at) if req.face_at is not None else None), line


def settings_told(req, device, tell: NoteFn) -> DetectorSettings:
    """detection_settings for the job's torch `device`, the line saying which detector "auto"
    chose told."""
    settings, line = detection_settings(req, "cuda" if device.type == "cuda" else "cpu")
    if line:
        tell(line)
    return settings


def targets_for(req) -> list[Target]:
    """The people `req` syncs, in the order of their audios (one unless --speaker)."""
    if req.speakers:
        return [Target(point=(float(s.x), float(s.y)), time=req.face_time if s.time is None else s.time)
                for s in req.speakers]
    if req.face_at is not None:
        return [Target(point=(float(req.face_at[0]), float(req.face_at[1])), time=req.face_time)]
    return [Target()]


def identity_for(plan: Plan, settings: DetectorSettings, targets: list[Target], tell: NoteFn):
    """(embedder, galleries): identity.Embedder and each target's embedding, taken from the face
    at its pixel at its time; (None, Nones) when nothing was pointed at or the identity extra
    is missing (told: faces are then followed by position, picked again at every cut)."""
    from ..faces import identity

    none = (None, [None] * len(targets))
    if not any(t.point is not None for t in targets):
        return none
    embedder = identity.load_embedder()
    if embedder is None:
        tell(identity.MISSING_NOTE)
        return none
    detector = make_detector(settings)
    galleries = []
    for t in targets:
        if t.point is None:
            galleries.append(None)
            continue
        face = face_at_point(plan.info, t.time, t.point, detector, settings.max_side)
        if face is None:
            raise Wav2LipError(
                f"no face at ({t.point[0]:g}, {t.point[1]:g}) at {t.time:g} s of {plan.info.path}: "
                f"`wav2lip {protocol.FACES_COMMAND} VIDEO --time {t.time:g}` lists the faces there and their pixels")
        rgb, row = face
        galleries.append(embedder.embed(rgb, row[None]))
    return embedder, galleries


def find_faces(plan: Plan, settings: DetectorSettings, *, cache_dir: str | None, use_cache: bool,
               progress: ProgressFn, cancel: CancelFn) -> FaceTrack:
    """Boxes for the used source frames [start, start + n) where n is what the output shows,
    following settings.face_at by position (or the largest face of each shot)."""
    target = Target(point=tuple(map(float, settings.face_at)) if settings.face_at is not None else None)
    return find_tracks(plan, settings, [target], cache_dir=cache_dir, use_cache=use_cache, progress=progress,
                       cancel=cancel)[0]


def find_tracks(plan: Plan, settings: DetectorSettings, targets: list[Target], *, cache_dir: str | None,
                use_cache: bool, progress: ProgressFn, cancel: CancelFn, embedder=None,
                galleries: list | None = None) -> list[FaceTrack]:
    """One track per target for the used source frames (as find_faces), from the cache when the
    same clip was tracked for the same people with the same settings."""
    from ..faces.cache import FaceCache

    info = plan.info
    n = min(plan.used, max(plan.sources) - plan.start + 1)
    if settings.kind == "box":
        from ..faces.tracking import fixed_box_track

        y1, y2, x1, x2 = settings.box
        box = (min(y1, info.height - 1), min(y2, info.height), min(x1, info.width - 1), min(x2, info.width))
        return [fixed_box_track(box, n, lambda d, t: progress(protocol.STAGE_DETECT, d, t))]
    cache = FaceCache(cache_dir) if use_cache else None
    keys: list[str] = []
    if cache is not None:
        base = f"{cache.key(info.path, settings)}-{plan.start}-{n}"
        # One face by position from time 0 is what settings.face_at already says: the key it
        # always had. Anything else (more people, a later pick time, a rank, identity) adds its own.
        by_settings = len(targets) == 1 and targets[0] == Target(point=targets[0].point) and embedder is None
        if not by_settings:
            who = json.dumps([[t.key() for t in targets], embedder is not None], sort_keys=True)
            base += "-" + hashlib.sha256(who.encode()).hexdigest()[:12]
        keys = [base] if len(targets) == 1 else [f"{base}-{k}" for k in range(len(targets))]
        hits = [cache.load(key) for key in keys]
        if all(h is not None and len(h.boxes) == n for h in hits):
            progress(protocol.STAGE_DETECT, n, n)
            return hits  # type: ignore[return-value]
    frames = ((i - plan.start, f) for i, f in read_frames(info, range(plan.start, plan.start + n)))
    tracks = track_targets(frames, n, settings, targets, galleries=galleries, embedder=embedder,
                           progress=lambda d, t: progress(protocol.STAGE_DETECT, d, t), cancel=cancel,
                           source=info.path)
    if cache is not None:
        for key, track in zip(keys, tracks):
            cache.save(key, track)
    return tracks


def detect_people(req, plan: Plan, device, progress: ProgressFn, cancel: CancelFn,
                  tell: NoteFn) -> tuple[DetectorSettings, list[FaceTrack]]:
    """The detector that runs (told when "auto" chose it) and one track per person the request
    syncs (the "detect" stage), each person's frames and how they were followed told."""
    settings = settings_told(req, device, tell)
    targets = targets_for(req)
    embedder, galleries = (None, None) if settings.kind == "box" else identity_for(plan, settings, targets, tell)
    tracks = find_tracks(plan, settings, targets, cache_dir=req.cache_dir, use_cache=req.cache, progress=progress,
                         cancel=cancel, embedder=embedder, galleries=galleries)
    if tracks and tracks[0].shot_starts:
        tell(f"{len(tracks[0].shot_starts)} shot cut(s): each shot's faces are found afresh")
    for k, track in enumerate(tracks):
        if len(targets) > 1 or targets[0].point is not None:
            who = req.speakers[k].label if req.speakers else f"the face at {req.face_at[0]} {req.face_at[1]}"
            how = "by identity" if galleries and galleries[k] is not None else "by position"
            tell(f"{who}: in {int(track.has_face.sum())} of {len(track.has_face)} frames, followed {how}")
        if not track.has_face.any() and len(tracks) > 1:
            tell(f"{req.speakers[k].label}: never found after {protocol.OPT_FACE_TIME}; its audio drives no face")
    return settings, tracks
