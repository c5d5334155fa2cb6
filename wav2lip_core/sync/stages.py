"""The sync pass: decode the used frames in output order, crop the faces, run the model in
batches, paste the generated faces back, as overlapping stages (overlap.py).

Decode+crop, the model and blend each run in a thread of their own (blend apart from the
encoder so that, with cores to spare, the one thread that feeds x264 does nothing else); what
follows (encoding, in pipeline.run) stays in the caller's thread, so callbacks (progress, note,
cancel) only ever run there. At most SYNC_IN_FLIGHT batches are between the decoder and the
encoder, whatever the clip's length. Frames are Pictures (picture.py: the decoder's YUV planes, only the face box converted)
or BGR arrays; they are touched only through blend.crop_face/paste and the writer.

With --silence hold (plan.weights) a frame of weight 0 keeps its source face and never reaches
the model (a batch of such frames skips the model stage); a weight between 0 and 1 fades the
generated face in over the source's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import Cancelled, Wav2LipError
from ..faces.align import Leveller, applies
from ..faces.tracking import FaceTrack
from ..media.decode import read_frames
from ..media.picture import Picture
from .blend import (PLAIN, FaceEdit, crop_face, face_edit, model_inputs, paste, prediction_to_uint8, region_bgr,
                    restore_pasted)
from .overlap import Overlap
from .plan import Plan

CancelFn = Callable[[], bool]
NoteFn = Callable[[str], None]

# Batches between the decoder and the encoder in the sync pass: one being written, one being
# blended, one in the model, one ready for it and one being decoded, so the model never waits
# for the decoder when the CPU has a core to spare. Fewer when that many batches of big frames
# would pass SYNC_BUDGET_BYTES (a batch of 64 1080p frames is ~400 MB as BGR), never fewer than
# two (the decoder then still works while the model runs).
SYNC_IN_FLIGHT = 5
SYNC_BUDGET_BYTES = 768 * 1024 * 1024


def in_flight(width: int, height: int, batch: int) -> int:
    """Batches allowed between the decoder and the encoder for frames of this size."""
    per_batch = width * height * 3 * max(batch, 1)  # as BGR: Pictures of 4:2:0 clips take half
    return max(2, min(SYNC_IN_FLIGHT, SYNC_BUDGET_BYTES // per_batch))


class Stopwatch:
    """Seconds per stage: each stage's busy time (its thread's waits are not counted)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()  # the sync pass's stages add from their own threads

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


@dataclass
class FrameItem:
    """One output frame on its way through the sync pass."""

    k: int  # output index
    frame: object  # Picture or BGR array; changed in place by blend_group
    box: tuple[int, int, int, int] | None  # face box (y1, y2, x1, x2); None: no face, passed through
    mel: np.ndarray  # its (80, 16) mel window
    weight: float = 1.0  # 1: the model's mouth; 0: the source's (no forward); between: a fade
    edit: FaceEdit = PLAIN  # mouth mask / levelling rotation (blend.face_edit), set by decode+crop
    # The face to paste, set by the model stage: its 96x96 output, or after --enhance the
    # restored face at the box's size (face_in_box), already in the frame's orientation.
    face: np.ndarray | None = None
    face_in_box: bool = False
    # Which face of the frame (--speaker: one item per speaker, all in the same group, the frame
    # shared); the writer takes each frame once, from its voice-0 item.
    voice: int = 0

    @property
    def synced(self) -> bool:
        """Whether the model runs for this frame."""
        return self.box is not None and self.weight > 0


Voice = tuple[FaceTrack, Plan]  # one face's track and the plan of the audio that drives it


def _batches(plan: Plan, track: FaceTrack, batch: "int | BatchLimit", cancel: CancelFn,
             pictures: bool = False, voices: list[Voice] | None = None) -> Iterator[list[FrameItem]]:
    """Groups of FrameItems in output order; each group is as large as the batch limit when it
    is built (it shrinks after a GPU out-of-memory), and holds every voice of its frames."""
    group = []
    voices = voices or [(track, plan)]
    frames = read_frames(plan.info, plan.sources, pictures=pictures)
    for k, (src, frame) in enumerate(frames):
        if cancel():
            raise Cancelled("cancelled")
        rel = src - plan.start
        for v, (vtrack, vplan) in enumerate(voices):
            box = tuple(int(x) for x in vtrack.boxes[rel]) if vtrack.has_face[rel] else None
            group.append(FrameItem(k, frame, box, vplan.window(k), vplan.weight(k), voice=v))
        if len(group) >= (batch.size if isinstance(batch, BatchLimit) else batch):
            yield group
            group = []
    if group:
        yield group


class BatchLimit:
    """How many frames go through the model at once. An out-of-memory halves it for the rest of
    the run: retrying every later batch at the full size would fail (and cost) the same way."""

    def __init__(self, size: int, note: NoteFn | None = None):
        self.size = size
        self._note = note

    def halve(self) -> None:
        if self.size == 1:
            raise Wav2LipError("the GPU ran out of memory even at batch size 1: use --device cpu")
        self.size //= 2
        if self._note is not None:
            self._note(f"the GPU ran out of memory: continuing with batch size {self.size}")


def sync_stages(plan: Plan, track: FaceTrack, executor, limit: BatchLimit, watch: Stopwatch,
                poll: Callable[[], None], *, pictures: bool = True, predictor=None, blend: str = "feather",
                align: str = "off", restorer=None, recorders=None, voices: list[Voice] | None = None) -> Overlap:
    """The sync pass's decode+crop, model, (with a `restorer`, enhance.Restorer) enhance and
    blend stages, overlapped; iterating the result (in a with block) gives (group, faced items)
    per batch in output order, the generated faces already pasted into the group's frames.
    `recorders` (quality.meter_live.MouthRecorder, one per voice): given every finished frame
    and that voice's box, in the blend stage's thread (the sync meter; its time counts as
    "meter"). `voices`: several faces, each with its own track and plan (--speaker)."""

    levelling = predictor is not None and applies(align, blend)
    levellers = [Leveller(predictor) if levelling else None for _ in (voices or [None])]

    def prepared(stopping: CancelFn) -> Iterator[tuple]:
        t = time.perf_counter()
        for group in _batches(plan, track, limit, stopping, pictures, voices):
            t = watch.add("decode", t)
            faced = [g for g in group if g.synced]
            if predictor is not None:  # landmarks only for frames the model runs on...
                for g in group:
                    if stopping():  # ~20 ms a face: a big batch must not hold up a cancel
                        raise Cancelled("cancelled")
                    leveller = levellers[g.voice]
                    if g.synced:
                        g.edit = face_edit(predictor, g.frame, g.box, blend, align, leveller)
                    elif g.box is not None and leveller is not None:
                        # ...but a held face keeps the leveller's schedule, so the frames after
                        # a silence are turned as they would be under --silence sync.
                        leveller.rotation(g.frame, g.box)
                t = watch.add("landmarks", t)
            inputs = _inputs(faced) if faced else None
            watch.add("crop", t)
            yield group, faced, inputs
            t = time.perf_counter()  # the wait for a free slot is not decoding

    def model(item: tuple) -> tuple:
        group, faced, inputs = item
        if inputs is None:
            return group, faced
        t = time.perf_counter()
        # `stop`: a cancelled job does not wait for the batch in the model (~1 s on a 2-core CPU).
        preds = executor.forward(*inputs, limit, stop=lambda: overlap.stopping)
        for g, p in zip(faced, preds, strict=True):
            g.face = prediction_to_uint8(p)
        watch.add("model", t)
        return group, faced

    def enhance(item: tuple) -> tuple:
        # Its own thread: a restorer costs seconds per face on a CPU, so the model goes on with
        # the next batches meanwhile. Frames are only read here; blend_group writes them later.
        group, faced = item
        if faced:
            t = time.perf_counter()
            restored = restore_pasted(restorer, [region_bgr(g.frame, g.box) for g in faced], [g.face for g in faced],
                                      blend, [g.edit for g in faced], stop=lambda: overlap.stopping)
            for g, face in zip(faced, restored, strict=True):
                g.face, g.face_in_box = face, True
            watch.add("enhance", t)
        return group, faced

    def blended(item: tuple) -> tuple:
        group, faced = item
        blend_group(faced, blend, watch)
        if recorders:
            t = time.perf_counter()
            for g in group:
                recorders[g.voice].add(g.k, g.frame, g.box)
            watch.add("meter", t)
        return group, faced

    stages = [model, blended] if restorer is None else [model, enhance, blended]
    overlap = Overlap(prepared, stages, in_flight=in_flight(plan.info.width, plan.info.height, limit.size),
                      poll=poll, name="wav2lip-sync")
    return overlap


def blend_group(faced: list[FrameItem], blend: str, watch: Stopwatch) -> None:
    """The faces the model stage made pasted into their frames (the sync pass's blend stage: a
    batch's frames are touched by one stage at a time, and reach the writer only after this)."""
    if not faced:
        return
    t = time.perf_counter()
    for g in faced:
        options = {"mask": g.edit.mask, "rotation": g.edit.rotation, "in_box": g.face_in_box}
        if g.weight >= 1.0:
            paste(g.frame, g.face, g.box, blend, **options)
        else:
            faded_paste(g.frame, g.face, g.box, blend, g.weight, **options)
    watch.add("blend", t)


def faded_paste(frame, pred_u8: np.ndarray, box: tuple[int, int, int, int], blend: str, weight: float,
                 **paste_options) -> None:
    """paste() shown at `weight` over the source: pasted as usual (with whatever mask or rotation
    paste takes), then mixed with the box as it was, so a fade never bypasses the blend."""
    y1, y2, x1, x2 = box
    if isinstance(frame, Picture):
        before = frame.region_bgr(y1, y2, x1, x2)
        paste(frame, pred_u8, box, blend, **paste_options)
        frame.put_region_bgr(y1, y2, x1, x2, cv2.addWeighted(frame.region_bgr(y1, y2, x1, x2), weight,
                                                             before, 1.0 - weight, 0.0))
    else:
        before = frame[y1:y2, x1:x2].copy()
        paste(frame, pred_u8, box, blend, **paste_options)
        frame[y1:y2, x1:x2] = cv2.addWeighted(frame[y1:y2, x1:x2], weight, before, 1.0 - weight, 0.0)


def cancel_check(cancel: CancelFn) -> Callable[[], None]:
    def check() -> None:
        if cancel():
            raise Cancelled("cancelled")
    return check


def synthesize(plan: Plan, track: FaceTrack, model, *, device, precision: str, batch: int | BatchLimit,
               blend: str, cancel: CancelFn, watch: Stopwatch | None = None,
               pictures: bool = False, predictor=None, align: str = "off") -> Iterator[tuple[int, object]]:
    """(output index, finished BGR frame) in output order: the frames before encoding. `model` is
    a runtime.Executor, or a torch module (run with torch on `device` in `precision`). Decoding and
    the model run in threads of their own while the caller consumes; close the generator (or
    exhaust it) to stop them."""
    from ..model.runtime import as_executor

    executor = as_executor(model, device, precision)
    limit = batch if isinstance(batch, BatchLimit) else BatchLimit(batch)
    watch = watch or Stopwatch()
    with sync_stages(plan, track, executor, limit, watch, cancel_check(cancel), pictures=pictures,
                     predictor=predictor, blend=blend, align=align) as stages:
        for group, _ in stages:
            for item in group:
                if item.voice == 0:
                    yield item.k, item.frame


def _inputs(faced: list[FrameItem]) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (mel (B,1,80,16), face (B,6,96,96)) for these frames."""
    faces = np.stack([crop_face(g.frame, g.box, g.edit.rotation) for g in faced])
    mels = np.ascontiguousarray(np.stack([g.mel for g in faced])[:, None])
    return mels, model_inputs(faces)


def calibration_batches(plan: Plan, track: FaceTrack, batch: int, cancel: CancelFn,
                        count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `count` batches of this job's own model inputs (frames with a face), for int8. Held
    frames count too: a clip that is silent throughout still calibrates (and they are inputs the
    model sees under --silence sync)."""
    out = []
    for group in _batches(plan, track, batch, cancel):
        faced = [g for g in group if g.box is not None]
        if faced:
            out.append(_inputs(faced))
            if len(out) == count:
                break
    return out

