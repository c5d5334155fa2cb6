"""The add-on with the real warm engine (`python -m wav2lip_core serve`) inside real Blender:
several strips queued on one engine (the second job warm), preview inserted and replaced, the
engine killed mid-job (that job fails with one line, the next runs on a fresh engine), and no
engine left after the add-on is disabled, a file loads, or Blender exits (normally or killed).

Clips are short (12 frames at 512x512, a fixed face box) for CI on two cores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import add_movie, add_sound, deselect_all, strips

ROOT = Path(__file__).resolve().parents[2]
KATIE = "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, 200 frames
SPEECH = "vretalk_audio1.wav"  # 5.0 s
KATIE_BOX = (150, 460, 130, 410)
N = 12  # frames per strip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process reusing the id
        return True
    try:  # a zombie (exited, not reaped yet by whoever adopted it) is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _kw(checkpoint, engine_python, tmp_path, **more):
    return dict(checkpoint=str(checkpoint), engine_python=engine_python, device="cpu", detector="box",
                box=KATIE_BOX, output_dir=str(tmp_path / "out"), **more)


def _two_shots(scene, media):
    """Two 12-frame shots of the clip (frames 1-12 and 30-41 of a 24 fps scene), each over its own
    sound strip; only the movie strips are selected (each finds the sound under it)."""
    a = add_movie(scene, "ShotA", media / KATIE, 2, 1)
    a.frame_offset_end = a.frame_duration - N
    b = add_movie(scene, "ShotB", media / KATIE, 2, 30)
    b.frame_offset_start = 20  # clip frames 20..31
    b.frame_offset_end = b.frame_duration - 20 - N
    b.frame_start = 30 - 20
    sa = add_sound(scene, "SpeechA", media / SPEECH, 1, 1)
    sa.frame_final_end = 20
    add_sound(scene, "SpeechB", media / SPEECH, 1, 28)
    deselect_all(scene)
    a.select = b.select = True
    scene.sequence_editor.active_strip = b
    assert (a.frame_final_start, a.frame_final_end, b.frame_final_start, b.frame_final_end) == (1, 13, 30, 42)
    return a, b


def test_several_strips_on_one_warm_engine_then_preview_replaced_by_the_full_sync(
        fresh, media, checkpoint, engine_python, tmp_path):
    bpy, scene = fresh
    from blender_addon import engine, sync_batch

    _two_shots(scene, media)
    before = {s.name for s in strips(scene)}
    res = bpy.ops.sequencer.wav2lip_sync(**_kw(checkpoint, engine_python, tmp_path))
    assert res == {"FINISHED"}
    new = {s.name: s for s in strips(scene) if s.name not in before}
    assert sorted(new) == ["ShotA.lipsync", "ShotB.lipsync"]
    for name, start in (("ShotA.lipsync", 1), ("ShotB.lipsync", 30)):
        s = new[name]
        assert (s.channel, s.frame_final_start, s.frame_final_duration) == (3, start, N)
        assert os.path.isfile(bpy.path.abspath(s.filepath))
    batch = sync_batch.last_batch()
    assert [j.request.sound_name for j in batch.jobs] == ["SpeechA", "SpeechB"]  # each its own sound
    first, second = (j.engine_job.poll() for j in batch.jobs)
    assert first.status == second.status == "done"
    assert second.warm is True  # the model stayed loaded between the two jobs
    pid = engine.session_pid()
    assert pid is not None and batch.jobs[0].engine_job.pid == batch.jobs[1].engine_job.pid == pid
    # Only the results are left in the output folder (no work folders, no placeholders).
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ShotA.lipsync.mp4", "ShotB.lipsync.mp4"]

    # Preview: the scene's preview range, on the same warm engine, as a tagged preview strip.
    deselect_all(scene)
    shot_a = scene.sequence_editor.strips["ShotA"] if hasattr(scene.sequence_editor, "strips") \
        else scene.sequence_editor.sequences["ShotA"]
    shot_a.select = True
    scene.sequence_editor.active_strip = shot_a
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 3, 8
    assert bpy.ops.sequencer.wav2lip_sync(preview=True, **_kw(checkpoint, engine_python, tmp_path)) == {"FINISHED"}
    previews = [s for s in strips(scene) if s.get(sync_batch.PREVIEW_TAG) == "ShotA"]
    assert [(s.name, s.frame_final_start, s.frame_final_duration) for s in previews] == [("ShotA.preview", 3, 6)]
    assert sync_batch.last_batch().jobs[0].engine_job.poll().warm is True and engine.session_pid() == pid

    # The source stays selected and active (the preview strip is not): preview again at once.
    assert scene.sequence_editor.active_strip == shot_a and shot_a.select and not previews[0].select
    # The next preview (3 s around the playhead, clipped to the 12-frame strip: all of it) replaces it.
    scene.use_preview_range = False
    scene.frame_current = 5
    assert bpy.ops.sequencer.wav2lip_sync(preview=True, **_kw(checkpoint, engine_python, tmp_path)) == {"FINISHED"}
    previews = [s for s in strips(scene) if s.get(sync_batch.PREVIEW_TAG) == "ShotA"]
    assert [(s.frame_final_start, s.frame_final_duration) for s in previews] == [(1, N)]

    # The full sync replaces the preview.
    deselect_all(scene)
    shot_a.select = True
    scene.sequence_editor.active_strip = shot_a
    assert bpy.ops.sequencer.wav2lip_sync(**_kw(checkpoint, engine_python, tmp_path)) == {"FINISHED"}
    assert not [s for s in strips(scene) if s.get(sync_batch.PREVIEW_TAG)]
    assert engine.session_pid() == pid  # one engine for the whole session so far


class _Op:
    """What prepare_batch reads from the operator (the modal path, driven by hand)."""

    video_strip = audio_strip = ""
    detector_weights = ""
    mute_source = preview = False

    class properties:
        @staticmethod
        def is_property_set(name):
            return False

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def _finish_op(bpy):
    cls = bpy.types.SEQUENCER_OT_wav2lip_sync
    reports = []

    class Op:
        report = staticmethod(lambda level, msg: reports.append((sorted(level)[0], msg)))
        _finish = cls._finish
        _finish_in_batch = cls._finish_in_batch

    return Op(), reports


def test_engine_killed_mid_job_fails_that_job_and_the_next_runs_on_a_fresh_engine(
        fresh, media, checkpoint, engine_python, tmp_path):
    bpy, scene = fresh
    from blender_addon import engine, sync_batch

    _two_shots(scene, media)
    before = {s.name for s in strips(scene)}
    batch = sync_batch.prepare_batch(bpy.context, _Op(**_kw(checkpoint, engine_python, tmp_path)))
    first, second = batch.jobs
    deadline = time.monotonic() + 120
    while first.engine_job.first_progress_at is None and not first.engine_job.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = engine.session_pid()
    assert pid is not None and not first.engine_job.finished
    os.kill(pid, signal.SIGKILL)
    p = first.engine_job.wait(30)
    assert p.status == "failed"
    assert p.message == ("the lip-sync engine stopped unexpectedly (killed by SIGKILL); "
                         "the next sync starts a fresh one")
    op, reports = _finish_op(bpy)
    assert op._finish_in_batch(bpy.context, first) == {"CANCELLED"}
    assert reports == [("ERROR", f"Lip sync of 'ShotA' failed: {p.message}")]

    # The queued job goes to a fresh engine and is inserted.
    q = second.engine_job.wait(180)
    assert q.status == "done", q.message
    assert q.warm is False  # a new process: the model was loaded again
    assert second.engine_job.pid != pid and not _alive(pid)
    assert op._finish_in_batch(bpy.context, second) == {"FINISHED"}
    assert sync_batch.active_batch() is None
    assert {s.name for s in strips(scene)} - before == {"ShotB.lipsync"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ShotB.lipsync.mp4"]


def test_cancel_stops_the_job_and_drops_the_queue_and_the_engine_stays_warm(
        fresh, media, checkpoint, engine_python, tmp_path):
    bpy, scene = fresh
    from blender_addon import engine, operators, sync_batch

    _two_shots(scene, media)
    batch = sync_batch.prepare_batch(bpy.context, _Op(**_kw(checkpoint, engine_python, tmp_path)))
    first, second = batch.jobs
    deadline = time.monotonic() + 120
    while first.engine_job.poll().stage != "sync" and not first.engine_job.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = engine.session_pid()
    t0 = time.monotonic()
    operators.cancel_active_job()
    answered = time.monotonic() - t0
    assert first.engine_job.poll().status == second.engine_job.poll().status == "cancelled"
    assert answered < 1.0, answered  # a cancel request, not a wait for the engine
    assert operators.active_job() is None
    out = tmp_path / "out"
    end = time.monotonic() + 5  # the work folder goes when the engine has let go of the job
    while out.exists() and any(out.iterdir()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not out.exists() or not any(out.iterdir())
    print(f"cancel answered in {answered:.2f} s")
    # The engine was asked to cancel, not killed: the next job is served warm by the same process.
    deselect_all(scene)
    scene.sequence_editor.active_strip = None
    res = bpy.ops.sequencer.wav2lip_sync(video_strip="ShotA", **_kw(checkpoint, engine_python, tmp_path))
    assert res == {"FINISHED"}
    assert engine.session_pid() == pid and sync_batch.last_batch().jobs[0].engine_job.poll().warm is True


def test_no_engine_after_unregister_or_a_file_load(bpy_addon, fresh, media, checkpoint, engine_python, tmp_path):
    bpy, scene = fresh
    import addon_utils

    from blender_addon import engine

    _two_shots(scene, media)
    kw = _kw(checkpoint, engine_python, tmp_path)
    assert bpy.ops.sequencer.wav2lip_sync(video_strip="ShotA", **kw) == {"FINISHED"}
    pid = engine.session_pid()
    assert pid is not None and _alive(pid)
    bpy.ops.wm.read_homefile(use_empty=True)  # load_pre
    assert _gone_within(pid, 5) and engine.session_pid() is None

    scene = bpy.context.scene
    scene.sequence_editor_create()
    _two_shots(scene, media)
    assert bpy.ops.sequencer.wav2lip_sync(video_strip="ShotB", **kw) == {"FINISHED"}
    pid = engine.session_pid()
    assert pid is not None and _alive(pid)
    addon_utils.disable("blender_addon", default_set=True, handle_error=None)
    try:
        assert _gone_within(pid, 5) and engine.session_pid() is None
    finally:
        assert addon_utils.enable("blender_addon", default_set=True, handle_error=None) is not None


_BLENDER_SESSION = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    import bpy, addon_utils
    addon_utils.enable("blender_addon", default_set=True, handle_error=None)
    from blender_addon import engine, engine_python, engine_jobs
    eng = engine.session_engine({python!r}, engine_python.engine_env())
    job = engine_jobs.EngineJob(dest={dest!r})
    job.args = ["--face", {face!r}, "--audio", {audio!r}, "--checkpoint", {ckpt!r}, "--out", str(job.work_out),
                "--box", "150", "460", "130", "410", "--duration", "4", "--device", "cpu"]
    engine_jobs.JobQueue([job], lambda: eng).start()
    while job.first_progress_at is None and not job.finished:
        time.sleep(0.02)
    print("PID", eng.pid, flush=True)
    if {hard!r}:
        os._exit(0)  # no atexit: what a crashed or killed Blender does
""")


@pytest.mark.parametrize("hard", [False, True], ids=["quit", "killed"])
def test_no_engine_outlives_blender(hard, media, checkpoint, engine_python, tmp_path):
    """Blender exits (atexit stops the engine) or dies mid-job (the engine sees the end of its
    input and stops): either way the engine is gone and nothing is left in the output folder."""
    pytest.importorskip("bpy")
    script = tmp_path / "session.py"
    script.write_text(_BLENDER_SESSION.format(
        root=str(ROOT), python=engine_python, dest=str(tmp_path / "out" / "x.mp4"), face=str(media / KATIE),
        audio=str(media / SPEECH), ckpt=str(checkpoint), hard=hard))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    pids = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("PID ")]
    assert pids, r.stdout[-2000:] + r.stderr[-2000:]
    assert _gone_within(pids[0], 10), "the engine outlived its Blender"
    deadline = time.monotonic() + 10
    while (tmp_path / "out").exists() and any((tmp_path / "out").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftovers = [p.name for p in (tmp_path / "out").iterdir()] if (tmp_path / "out").exists() else []
    if hard:  # killed: nobody was left to remove the work folder; the next job beside it does
        assert len(leftovers) == 1 and leftovers[0].startswith(".wav2lip-job-"), leftovers
        from ._load import load

        load("engine_jobs").EngineJob(dest=tmp_path / "out" / "y.mp4").cleanup()
        assert not any((tmp_path / "out").iterdir())
    else:
        assert leftovers == [], leftovers
