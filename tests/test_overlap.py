"""The sync pass's overlapping stages (decode+crop, model, blend+encode) on real footage: the same
output as the stages run one after another, bounded frames in flight, cancel and errors from any
stage ending the run cleanly (one error, no output, no thread left), callbacks on one thread.

Where a test needs a model that is slow or fails on purpose it passes a stand-in executor to
run(..., executor=...): the executor is not what these tests check.
"""

from __future__ import annotations

import os
import threading
import time

import av
import numpy as np
import pytest
import torch

from conftest import MEDIA
from wav2lip_core.sync import pipeline, stages as sync
from wav2lip_core.media.audio import load_audio
from wav2lip_core.sync.blend import crop_face, model_inputs, paste, prediction_to_uint8
from wav2lip_core.media.decode import read_frames
from wav2lip_core.media.encode import VideoWriter
from wav2lip_core.errors import Cancelled, MediaError, Wav2LipError
from wav2lip_core.sync.pipeline import LipSyncRequest, run
from wav2lip_core.sync.plan import make_plan
from wav2lip_core.sync.stages import synthesize
from wav2lip_core.media.probe import probe_video
from wav2lip_core.protocol import STAGE_SYNC
from wav2lip_core.model.runtime import load_executor

KATIE = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps
AUDIO1 = MEDIA / "vretalk_audio1.wav"  # 5 s of speech
BOX = (60, 330, 150, 370)  # Katie's face: top, bottom, left, right


class ModelBroke(Wav2LipError):
    """A stand-in executor's failure, so the test can tell it from anything else."""


class StandIn:
    """An executor that takes `delay` seconds per call and 'generates' the unmasked crop; it fails
    on call `fail_on`, or halves the batch limit on call `halve_on` (a GPU out-of-memory)."""

    name, precision, device = "stand-in", "fp32", "cpu"

    def __init__(self, delay: float = 0.0, fail_on: int | None = None, halve_on: int | None = None):
        self.delay, self.fail_on, self.halve_on = delay, fail_on, halve_on
        self.sizes: list[int] = []

    def forward(self, mel, face, limit=None, stop=None):
        self.sizes.append(len(face))
        if len(self.sizes) == self.fail_on:
            raise ModelBroke(f"stand-in model failed on call {self.fail_on}")
        if len(self.sizes) == self.halve_on:
            limit.halve()
        time.sleep(self.delay)
        return np.array(face[:, 3:], np.float32)


class Callbacks:
    """progress/cancel/note recording the thread each ran on; cancel turns true once `cancel_at`
    output frames were reported (and remembers when)."""

    def __init__(self, cancel_at: int | None = None):
        self.cancel_at = cancel_at
        self.threads: set[int] = set()
        self.notes: list[str] = []
        self.done = 0
        self.cancelled_at: float | None = None

    def progress(self, stage, done, total):
        self.threads.add(threading.get_ident())
        if stage == STAGE_SYNC:
            self.done = done

    def note(self, line):
        self.threads.add(threading.get_ident())
        self.notes.append(line)

    def cancel(self):
        self.threads.add(threading.get_ident())
        if self.cancel_at is not None and self.done >= self.cancel_at:
            if self.cancelled_at is None:
                self.cancelled_at = time.perf_counter()
            return True
        return False


@pytest.fixture(scope="module")
def torch_executor(checkpoint):
    return load_executor(checkpoint, runtime="torch", device=torch.device("cpu"), precision="fp32")


@pytest.fixture
def request_for(checkpoint, tmp_path):
    def make(**kw) -> LipSyncRequest:
        out = tmp_path / "out" / "out.mp4"
        out.parent.mkdir(exist_ok=True)
        kw.setdefault("box", BOX)
        kw.setdefault("device", "cpu")
        kw.setdefault("precision", "fp32")
        kw.setdefault("runtime", "torch")
        return LipSyncRequest(face=str(KATIE), audio=str(AUDIO1), checkpoint=str(checkpoint), out=str(out), **kw)
    return make


@pytest.fixture
def threads_left():
    """The Python threads started during the test and still alive at its end."""
    before = set(threading.enumerate())
    return lambda: [t for t in threading.enumerate() if t not in before]


@pytest.fixture
def counted(monkeypatch):
    """Counts of frames decoded for the sync pass and frames handed to the encoder, and the most
    decoded-but-not-written at any moment."""
    c = {"decoded": 0, "written": 0, "most_ahead": 0}
    real_read, real_write = sync.read_frames, VideoWriter.write

    def reading(*args, **kw):
        for item in real_read(*args, **kw):
            c["decoded"] += 1
            c["most_ahead"] = max(c["most_ahead"], c["decoded"] - c["written"])
            yield item

    def writing(self, frame, t):
        real_write(self, frame, t)
        c["written"] += 1

    monkeypatch.setattr(sync, "read_frames", reading)
    monkeypatch.setattr(VideoWriter, "write", writing)
    return c


def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def assert_clean(req: LipSyncRequest, calls: Callbacks, threads_left) -> None:
    assert os.listdir(os.path.dirname(req.out)) == [], "a failed run left output (or its temp file)"
    assert threads_left() == [], "a stage's thread outlived run()"
    assert calls.threads == {threading.get_ident()}, "a callback ran outside the caller's thread"


# ---------------------------------------------------------------------------------------------


def test_output_is_the_stages_run_one_after_another(request_for, torch_executor, tmp_path, threads_left):
    """A 6-frame clip played ping-pong for 0.6 s (15 frames) in batches of 4: the overlapped run
    writes exactly the frames a plain sequential loop over the same public steps writes."""
    batch = 4
    req = request_for(frames=6, duration=0.6, batch_size=batch, blend="feather")
    calls = Callbacks()
    res = run(req, progress=calls.progress, cancel=calls.cancel, note=calls.note, executor=torch_executor)
    assert res.frames == 15
    assert threads_left() == [] and calls.threads == {threading.get_ident()}
    assert {"decode", "crop", "model", "blend", "encode", "sync"} <= set(res.stage_seconds)

    # The reference: decode all, then per batch crop -> model -> paste, then encode in order.
    info = probe_video(str(KATIE))
    plan = make_plan(req, info, load_audio(str(AUDIO1)))
    assert plan.sources == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    frames = [f for _, f in read_frames(info, plan.sources, pictures=True)]  # as run() reads them
    ref = tmp_path / "ref.mp4"
    with VideoWriter(ref, width=info.width, height=info.height, fps=plan.fps, colour=info.colour) as w:
        for b0 in range(0, len(frames), batch):
            ks = range(b0, min(b0 + batch, len(frames)))
            faces = model_inputs(np.stack([crop_face(frames[k], BOX) for k in ks]))
            mels = np.stack([plan.mel[:, plan.mel_starts[k]: plan.mel_starts[k] + 16] for k in ks])[:, None]
            preds = torch_executor.forward(np.ascontiguousarray(mels), faces)
            for k, p in zip(ks, preds):
                paste(frames[k], prediction_to_uint8(p), BOX, "feather")
                w.write(frames[k], plan.times[k])

    got, want = decoded_frames(res.out), decoded_frames(ref)
    assert len(got) == len(want) == 15
    for k, (a, b) in enumerate(zip(got, want)):
        assert np.array_equal(a, b), f"frame {k} differs from the sequential reference"
    source = decoded_frames(KATIE)[:6]
    y1, y2, x1, x2 = BOX
    assert not np.array_equal(got[0][y1:y2, x1:x2], source[0][y1:y2, x1:x2]), "the model's face was not pasted"


def test_frames_in_flight_stay_bounded_and_decoding_runs_ahead(request_for, counted, threads_left):
    """With a slow model the decoder runs ahead of it, but never more than SYNC_IN_FLIGHT
    batches ahead of the encoder, however long the clip."""
    batch = 4
    executor = StandIn(delay=0.1)
    req = request_for(duration=2.0, batch_size=batch)  # 50 frames, 13 batches
    res = run(req, executor=executor)
    assert res.frames == counted["written"] == counted["decoded"] == 50
    assert counted["most_ahead"] <= sync.SYNC_IN_FLIGHT * batch
    # Sequentially a batch is written before the next is decoded (at most `batch` ahead).
    assert counted["most_ahead"] >= 2 * batch, "decoding did not overlap the model"
    assert threads_left() == []


@pytest.fixture(scope="module")
def openvino_executor(checkpoint):
    return load_executor(checkpoint, runtime="openvino", device="cpu", precision="fp32")


def test_cancel_during_a_long_openvino_inference_returns_within_a_second(request_for, openvino_executor, threads_left):
    """A batch of 64 frames takes several seconds on this CPU; cancelling while the model is inside
    it still returns within a second (the inference itself is cancelled), with no output."""
    executor = openvino_executor
    req = request_for(runtime="openvino", batch_size=64, duration=3.0)
    marks: dict[str, float] = {}

    def progress(stage, done, total):
        if stage == STAGE_SYNC:
            marks.setdefault("sync", time.perf_counter())

    def cancel() -> bool:  # true 0.5 s into the sync pass: the first batch of 64 is in the model
        if "sync" in marks and time.perf_counter() - marks["sync"] > 0.5:
            marks.setdefault("cancel", time.perf_counter())
            return True
        return False

    with pytest.raises(Cancelled):
        run(req, progress=progress, cancel=cancel, executor=executor)
    elapsed = time.perf_counter() - marks["cancel"]
    assert elapsed < 1.0, f"cancel took {elapsed:.2f} s"
    assert not os.path.exists(req.out) and not os.listdir(os.path.dirname(req.out))
    assert threads_left() == []
    # The executor still works for the next job after its inference was cancelled.
    z = np.zeros((2, 1, 80, 16), np.float32), np.zeros((2, 6, 96, 96), np.float32)
    assert executor.forward(*z).shape == (2, 3, 96, 96)


def test_cancel_while_stages_wait_returns_within_a_second(request_for, counted, threads_left):
    """The model is slow, so the decoder waits for a free slot and the encoder for the model's
    next batch when cancel turns true: run() raises Cancelled within a second, leaves no output
    and no thread."""
    executor = StandIn(delay=0.25)
    req = request_for(duration=4.0, batch_size=4)  # 100 frames: ~6 s of stand-in model
    calls = Callbacks(cancel_at=8)
    with pytest.raises(Cancelled):
        run(req, progress=calls.progress, cancel=calls.cancel, note=calls.note, executor=executor)
    elapsed = time.perf_counter() - calls.cancelled_at
    assert elapsed < 1.0, f"cancel took {elapsed:.2f} s"
    assert counted["decoded"] > counted["written"], "premise: the decoder was ahead (waiting) at cancel"
    assert counted["written"] < 100
    assert_clean(req, calls, threads_left)


def test_model_error_stops_every_stage(request_for, counted, threads_left):
    executor = StandIn(fail_on=3)
    req = request_for(duration=2.0, batch_size=4)
    calls = Callbacks()
    with pytest.raises(ModelBroke) as e:
        run(req, progress=calls.progress, cancel=calls.cancel, note=calls.note, executor=executor)
    assert type(e.value) is ModelBroke and str(e.value) == "stand-in model failed on call 3"
    assert len(executor.sizes) == 3, "the model kept running after its error"
    # Never more than the two batches before the failure, whole batches only (the second may
    # still be in the blend stage when the error stops every stage).
    assert counted["written"] in (0, 4, 8)
    assert_clean(req, calls, threads_left)


def test_decode_error_stops_every_stage(request_for, monkeypatch, threads_left):
    real_read = sync.read_frames
    message = f"{KATIE}: decoding failed near frame 9 (stand-in); the file is damaged, re-export it"

    def damaged(*args, **kw):
        for n, item in enumerate(real_read(*args, **kw)):
            if n == 9:
                raise MediaError(message)
            yield item

    monkeypatch.setattr(sync, "read_frames", damaged)
    executor = StandIn()
    req = request_for(duration=2.0, batch_size=4)
    calls = Callbacks()
    with pytest.raises(MediaError) as e:
        run(req, progress=calls.progress, cancel=calls.cancel, note=calls.note, executor=executor)
    assert type(e.value) is MediaError and str(e.value) == message
    assert len(executor.sizes) <= 2  # batches 0-3 and 4-7 at most; 8-11 never completed
    assert_clean(req, calls, threads_left)


def test_encode_error_stops_every_stage(request_for, monkeypatch, counted, threads_left):
    real_write = VideoWriter.write
    message = "out.mp4: writing failed (stand-in: No space left on device); check free disk space"
    written = []

    def full_disk(self, frame, t):
        if len(written) == 6:
            raise MediaError(message)
        real_write(self, frame, t)
        written.append(t)

    monkeypatch.setattr(VideoWriter, "write", full_disk)
    executor = StandIn(delay=0.02)
    req = request_for(duration=4.0, batch_size=4)
    calls = Callbacks()
    with pytest.raises(MediaError) as e:
        run(req, progress=calls.progress, cancel=calls.cancel, note=calls.note, executor=executor)
    assert type(e.value) is MediaError and str(e.value) == message
    assert counted["decoded"] <= 6 + sync.SYNC_IN_FLIGHT * 4, "decoding went on after the encoder failed"
    assert_clean(req, calls, threads_left)


def test_out_of_memory_halving_in_the_model_thread(request_for, threads_left):
    """The batch limit halves inside the model's thread: batches built afterwards are smaller,
    the note reaches the caller's thread, the run completes."""
    executor = StandIn(delay=0.05, halve_on=1)
    req = request_for(duration=2.0, batch_size=8)
    calls = Callbacks()
    res = run(req, progress=calls.progress, cancel=calls.cancel, note=calls.note, executor=executor)
    assert res.frames == 50 and res.batch_size == 4
    assert any("continuing with batch size 4" in line for line in calls.notes)
    assert any("continuing with batch size 4" in line for line in res.notes)
    assert calls.threads == {threading.get_ident()}
    # Batches already decoded keep their 8 frames (a real executor splits them); at most
    # SYNC_IN_FLIGHT of them, so the last three were built at the new size.
    assert executor.sizes[0] == 8 and max(executor.sizes[-3:]) <= 4
    assert sum(executor.sizes) == 50
    assert threads_left() == []


def test_synthesize_closed_early_leaves_no_thread(request_for, torch_executor, threads_left):
    req = request_for(duration=2.0, batch_size=4)
    info = probe_video(str(KATIE))
    plan = make_plan(req, info, load_audio(str(AUDIO1)))
    track = pipeline.find_faces(plan, pipeline.detection_settings(req, "cpu")[0], cache_dir=None, use_cache=False,
                                progress=lambda *a: None, cancel=lambda: False)
    gen = synthesize(plan, track, torch_executor, device="cpu", precision="fp32", batch=4, blend="feather",
                     cancel=lambda: False)
    assert [k for k, _ in (next(gen) for _ in range(5))] == [0, 1, 2, 3, 4]
    gen.close()
    assert threads_left() == []


def test_frames_in_flight_follow_a_memory_budget():
    """Big frames in big batches: fewer batches in flight (never fewer than two), so a CUDA batch
    of 1080p frames does not hold gigabytes; small ones keep the full depth."""
    assert sync.in_flight(512, 512, 16) == sync.SYNC_IN_FLIGHT
    assert sync.in_flight(1920, 1080, 16) == sync.SYNC_IN_FLIGHT  # ~100 MB a batch
    assert sync.in_flight(1920, 1080, 64) == 2  # ~400 MB a batch
    assert sync.in_flight(3840, 2160, 64) == 2
    held = sync.in_flight(1920, 1080, 32) * 1920 * 1080 * 3 * 32
    assert held <= sync.SYNC_BUDGET_BYTES
