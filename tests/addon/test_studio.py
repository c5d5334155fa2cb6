"""The studio round trip (blender_addon/studio.py, jobs_export.py): export the selected strips as a
JOBS file, run the real `wav2lip batch` on it, import its report back as strips.

Clips are 1 s (24 frames of the 512x512 Katie clip) with a fixed face box, so the real batch
stays short on two cores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ._load import load
from .conftest import add_movie, add_sound, deselect_all, strips

ROOT = Path(__file__).resolve().parents[2]
KATIE = "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, 200 frames
SPEECH = "vretalk_audio1.wav"
KATIE_BOX = (150, 460, 130, 410)


# --- the file formats, without Blender ------------------------------------------------------------

def test_job_ids_name_scene_strip_and_range_exactly():
    jf = load("jobs_export")
    for scene, strip, frame in [("Scene", "Face", 9), ("a/b@c", "50% @ 2/3", -12), ("%2F", "x@1+2", 0)]:
        ref = jf.StripRef(scene, strip, frame, 30)
        text = jf.job_id(ref)
        assert jf.parse_job_id(text) == ref
    assert jf.job_id(jf.StripRef("Scene", "Face", 9, 30)) == "Scene/Face@9+30"  # readable in the report
    for foreign in ("3", "shot-1", "a/b/c@1+2", "Scene/Face@x+2", None, 7):
        assert jf.parse_job_id(foreign) is None


def test_job_line_holds_the_engine_arguments_and_inline_times(tmp_path):
    """What `wav2lip batch` makes of a JOBS line (batch_format.job_args, as the runner calls it) is
    the argument list the add-on built, but for --progress; the times file holds the list."""
    jf, snap = load("jobs_export"), load("sync_request")
    P = jf.P
    req = snap.SyncRequest(
        source_name="Face", source_channel=2, face_path="/clips/face.mp4", is_image=False, scene_fps=24.0,
        insert_frame=9, used_frames=3, start_frame=8, audio_path="/clips/speech.wav", audio_start=-0.125,
        duration=0.125, audible=(0.0, 0.1), source_times=(0.32, 0.36, 1 / 3))
    args = req.engine_args(checkpoint="/w/ckpt.pth", out="/o/Face.lipsync.mp4", source_times_path="T",
                           box=(1, 2, 3, 4), device="cpu", extra=("--blend", "feather", "--sync-offset", "0.5"))
    job = jf.job_line(jf.StripRef("Scene", "Face", 9, 3), args, req.source_times)
    assert job["id"] == "Scene/Face@9+3" and job["source-times"] == [0.32, 0.36, 1 / 3]
    json.loads(json.dumps(job))  # plain JSON

    written = {}

    def list_file(opt, values):
        written[opt] = values
        return "T"

    expected = list(args)
    i = expected.index(P.OPT_PROGRESS)
    del expected[i:i + 2]
    assert jf.J.job_args(job, list_file) == expected
    assert written == {P.OPT_SOURCE_TIMES: [0.32, 0.36, 1 / 3]}


def test_a_jobs_line_with_tiny_numbers_reads_back_through_the_real_parser():
    """The export's numbers as `wav2lip batch` hands them to the engine (batch_format.job_args, then
    the CLI's own parser): a tiny negative audio start must stay a value, not look like an option."""
    from wav2lip_core.jobs import request

    jf, snap = load("jobs_export"), load("sync_request")
    req = snap.SyncRequest(
        source_name="Face", source_channel=2, face_path="/clips/face.mp4", is_image=True, scene_fps=24.0,
        insert_frame=9, used_frames=3, start_frame=None, audio_path="/clips/speech.wav", audio_start=-3.3e-05,
        duration=0.125, audible=(1e-05, 0.1))
    args = req.engine_args(checkpoint="/w/ckpt.pth", out="/o/Face.lipsync.mp4",
                           extra=("--sync-offset", "-0.5", "--enhance-fidelity", "0.00001"))
    job = jf.job_line(jf.StripRef("Scene", "Face", 9, 3), args, None)
    assert job["audio-start"] == -3.3e-05 and job["audible"] == [1e-05, 0.1]  # numbers in the file
    parsed = request.build_parser().parse_args(jf.J.job_args(job))
    assert (parsed.audio_start, parsed.audible, parsed.duration) == (-3.3e-05, [1e-05, 0.1], 0.125)
    assert (parsed.sync_offset, parsed.enhance_fidelity) == (-0.5, 1e-05)


def test_exported_jobs_files_get_the_users_normal_permissions(tmp_path):
    jf = load("jobs_export")
    old = os.umask(0o027)
    try:
        jf.write_jobs(str(tmp_path / "jobs.jsonl"), [{"id": "a"}])
    finally:
        os.umask(old)
    assert (tmp_path / "jobs.jsonl").stat().st_mode & 0o777 == 0o640  # 0o666 less the umask, as the core writes
    assert os.listdir(tmp_path) == ["jobs.jsonl"]


def test_report_read_back(tmp_path):
    jf = load("jobs_export")
    report = tmp_path / "r.jsonl"
    lines = [
        {"id": "Scene/Face@9+30", "line": 1, "status": "ok", "seconds": 3.0, "out": "/o/a.mp4"},
        "not json",
        {"id": "Scene/Gone@50+24", "line": 2, "status": "failed", "seconds": 0.1, "out": "/o/b.mp4",
         "error": "cannot open\n /clips/gone.mp4"},
        {"id": "Scene/Face@9+30", "line": 1, "status": "skipped", "seconds": 0, "out": "/o/a.mp4"},
    ]
    report.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    got = jf.read_report(str(report))
    assert [(e.id, e.status) for e in got] == [("Scene/Gone@50+24", "failed"), ("Scene/Face@9+30", "skipped")]
    assert jf.problem(got[0]) == "'Gone': the batch job failed: cannot open /clips/gone.mp4"
    assert jf.problem(got[1]) == ""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(jf.ReportError, match="holds no batch jobs"):
        jf.read_report(str(empty))
    with pytest.raises(jf.ReportError, match="cannot read"):
        jf.read_report(str(tmp_path / "missing.jsonl"))


# --- inside Blender ---------------------------------------------------------------------------------

@pytest.fixture
def studio(bpy_addon):
    """studio.py, whose operators the add-on registers with the rest."""
    bpy, _ = bpy_addon
    from blender_addon import studio as mod

    assert hasattr(bpy.types, mod.SEQUENCER_OT_wav2lip_export_jobs.__name__)
    assert hasattr(bpy.types, mod.SEQUENCER_OT_wav2lip_import_report.__name__)
    return mod


@pytest.fixture
def prefs(bpy_addon):
    """The add-on preferences, put back as they were afterwards."""
    bpy, _ = bpy_addon
    p = bpy.context.preferences.addons["blender_addon"].preferences
    names = ("checkpoint", "detector", "box", "device", "engine_python")
    saved = {n: (tuple(getattr(p, n)) if n == "box" else getattr(p, n)) for n in names}
    yield p
    for n, v in saved.items():
        setattr(p, n, v)


def _shots(bpy, scene, media, tmp_path, third=None):
    """Face (frames 9-32) and Face2 (frames 121-144), 24 frames each, over their own sound strips;
    `third`: a copy of the clip as a third shot (frames 309-332). All selected; the file saved."""
    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_start, face.frame_offset_end = 8, 168
    add_sound(scene, "Speech", media / SPEECH, 1, 1)
    face2 = add_movie(scene, "Face2", media / KATIE, 2, 101)
    face2.frame_offset_start, face2.frame_offset_end = 20, 156
    add_sound(scene, "Speech2", media / SPEECH, 1, 110)
    if third is not None:
        gone = add_movie(scene, "Gone", third, 2, 301)
        gone.frame_offset_start, gone.frame_offset_end = 8, 168
        add_sound(scene, "Speech3", media / SPEECH, 1, 301)
    for s in strips(scene):
        s.select = True
    blend = tmp_path / "proj" / "studio.blend"
    blend.parent.mkdir(exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return bpy.context.scene


def _read_jobs(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_export_with_nothing_selected_says_so(fresh, studio, media, tmp_path):
    bpy, scene = fresh
    add_movie(scene, "Face", media / KATIE, 2, 1)
    add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    with pytest.raises(RuntimeError, match="nothing to export: select the movie or image strips") as exc:
        bpy.ops.sequencer.wav2lip_export_jobs(filepath=str(tmp_path / "jobs.jsonl"))
    assert "Traceback" not in str(exc.value)
    assert not (tmp_path / "jobs.jsonl").exists()


def test_export_sends_what_sync_lips_sends(fresh, studio, prefs, media, fake_python, dummy_checkpoint, engine_log, tmp_path):
    """Each job's arguments are those Sync Lips gives the engine for the same strip (the stand-in
    engine logs them), but for the output path; outputs never name an existing file."""
    bpy, scene = fresh
    scene = _shots(bpy, scene, media, tmp_path)
    prefs.checkpoint, prefs.detector, prefs.device, prefs.engine_python = dummy_checkpoint, "box", "cpu", fake_python
    prefs.box = KATIE_BOX
    scene.wav2lip.sync_offset = 0.5
    lipsync = tmp_path / "proj" / "lipsync"
    lipsync.mkdir()
    (lipsync / "Face.lipsync.mp4").write_bytes(b"an earlier result")

    jobs_path = tmp_path / "shots.jsonl"
    assert bpy.ops.sequencer.wav2lip_export_jobs(filepath=str(jobs_path)) == {"FINISHED"}
    jobs = _read_jobs(jobs_path)
    assert [j["id"] for j in jobs] == ["Scene/Face@9+24", "Scene/Face2@121+24"]
    assert [j["out"] for j in jobs] == [str(lipsync / "Face.lipsync_001.mp4"), str(lipsync / "Face2.lipsync.mp4")]
    assert sorted(os.listdir(lipsync)) == ["Face.lipsync.mp4"]  # nothing else claimed or overwritten
    assert (lipsync / "Face.lipsync.mp4").read_bytes() == b"an earlier result"
    assert jobs[0]["face"] == str(media / KATIE) and jobs[0]["audio"] == str(media / SPEECH)
    assert jobs[0]["checkpoint"] == dummy_checkpoint and jobs[0]["box"] == list(KATIE_BOX)

    for job, face, sound in [(jobs[0], "Face", "Speech"), (jobs[1], "Face2", "Speech2")]:
        assert bpy.ops.sequencer.wav2lip_sync(video_strip=face, audio_strip=sound) == {"FINISHED"}
        sent = json.loads(engine_log.read_text())
        argv = sent["argv"]
        for opt in ("--out", "--progress", "--source-times"):
            i = argv.index(opt)
            del argv[i:i + 2]
        from wav2lip_core.batch_format import job_args

        exported = job_args({k: v for k, v in job.items() if k not in ("out", "source-times")})
        assert exported == argv
        assert job["source-times"] == sent["source_times_list"] and len(job["source-times"]) == 24
        assert "--sync-offset" in argv


def test_round_trip_with_the_real_batch(fresh, studio, prefs, media, checkpoint, engine_python, tmp_path, capfd):
    """Export three shots, lose the third's clip, run `wav2lip batch`: the two clips are inserted
    above their sources at their first frames, the failure is one report line, and importing
    the report again adds nothing."""
    bpy, scene = fresh
    third = tmp_path / "third.mp4"
    shutil.copyfile(media / KATIE, third)
    scene = _shots(bpy, scene, media, tmp_path, third=third)
    prefs.checkpoint, prefs.detector, prefs.device = str(checkpoint), "box", "cpu"
    prefs.box = KATIE_BOX
    jobs_path = tmp_path / "farm" / "shots.jsonl"
    jobs_path.parent.mkdir()
    assert bpy.ops.sequencer.wav2lip_export_jobs(filepath=str(jobs_path)) == {"FINISHED"}
    assert [j["id"] for j in _read_jobs(jobs_path)] == ["Scene/Face@9+24", "Scene/Face2@121+24", "Scene/Gone@309+24"]
    os.remove(third)

    report = tmp_path / "farm" / "report.jsonl"
    r = subprocess.run([engine_python, "-m", "wav2lip_core", "batch", str(jobs_path), "--report", str(report),
                        "--progress", "none"], capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]  # one job failed
    lipsync = tmp_path / "proj" / "lipsync"
    assert sorted(os.listdir(lipsync)) == ["Face.lipsync.mp4", "Face2.lipsync.mp4"]

    before = {s.name for s in strips(scene)}
    capfd.readouterr()
    assert bpy.ops.sequencer.wav2lip_import_report(filepath=str(report)) == {"FINISHED"}
    printed = capfd.readouterr()
    new = {s.name: s for s in strips(scene) if s.name not in before}
    assert sorted(new) == ["Face.lipsync", "Face2.lipsync"]
    a, b = new["Face.lipsync"], new["Face2.lipsync"]
    assert (a.channel, a.frame_final_start, a.frame_final_duration) == (3, 9, 24)
    assert (b.channel, b.frame_final_start, b.frame_final_duration) == (3, 121, 24)
    assert bpy.path.abspath(a.filepath) == str(lipsync / "Face.lipsync.mp4")
    text = printed.out + printed.err
    assert "'Gone': the batch job failed:" in text and "Inserted 2 clips, 1 not inserted" in text

    assert bpy.ops.sequencer.wav2lip_import_report(filepath=str(report)) == {"FINISHED"}
    assert {s.name for s in strips(scene)} == before | {"Face.lipsync", "Face2.lipsync"}
    assert "Inserted 0 clips, 2 already on the timeline" in capfd.readouterr().out


def test_import_follows_a_moved_strip_and_warns_about_a_trimmed_one(fresh, studio, prefs, media, dummy_checkpoint,
                                                                     tmp_path, capfd):
    """Placement as Sync Lips' own (insert.insert_result): a strip moved as a whole since the
    export takes its clip along; one trimmed since gets it where it was, with a warning."""
    bpy, scene = fresh
    scene = _shots(bpy, scene, media, tmp_path)
    prefs.checkpoint, prefs.detector, prefs.device = dummy_checkpoint, "box", "cpu"
    prefs.box = KATIE_BOX
    jobs_path = tmp_path / "shots.jsonl"
    assert bpy.ops.sequencer.wav2lip_export_jobs(filepath=str(jobs_path)) == {"FINISHED"}
    report = tmp_path / "report.jsonl"
    with open(report, "w") as f:
        for n, job in enumerate(_read_jobs(jobs_path), 1):  # a batch's report, its clips made by hand
            shutil.copyfile(media / KATIE, job["out"])
            f.write(json.dumps({"id": job["id"], "line": n, "status": "ok", "seconds": 1.0, "out": job["out"]}) + "\n")
    face = next(s for s in strips(scene) if s.name == "Face")
    face2 = next(s for s in strips(scene) if s.name == "Face2")
    face.frame_start += 10  # used 19..42 now
    face2.frame_offset_end += 4  # used 121..140 now

    capfd.readouterr()
    assert bpy.ops.sequencer.wav2lip_import_report(filepath=str(report)) == {"FINISHED"}
    out = capfd.readouterr().out
    a, b = (next(s for s in strips(scene) if s.name == n) for n in ("Face.lipsync", "Face2.lipsync"))
    assert (a.channel, a.frame_final_start, a.frame_final_duration) == (3, 19, 24)
    assert (b.channel, b.frame_final_start, b.frame_final_duration) == (3, 121, 24)
    assert "'Face2' was changed while syncing; the synced clip matches it as it was (frames 121-144)" in out


def test_a_sound_a_hair_late_syncs_and_exports_for_the_real_parser(fresh, studio, prefs, media, fake_python,
                                                                   dummy_checkpoint, engine_log, tmp_path):
    """A sound strip delayed by 33 microseconds (Blender 5.0's sound offset) gives the engine an
    audio start of -3.3e-05 s. Sync Lips (the stand-in parses with the engine's own parser) and
    the exported JOBS line (read back as `wav2lip batch` does) both get it as a value."""
    from wav2lip_core.batch_format import job_args
    from wav2lip_core.jobs import request

    bpy, scene = fresh
    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_end = 176  # frames 1-24, as the sound
    speech = add_sound(scene, "Speech", media / SPEECH, 1, 1)
    if not hasattr(speech, "sound_offset"):
        pytest.skip("this Blender has no sound offset")
    speech.sound_offset = 3.3e-05
    for s in strips(scene):
        s.select = True
    prefs.checkpoint, prefs.detector, prefs.device, prefs.engine_python = dummy_checkpoint, "box", "cpu", fake_python
    prefs.box = KATIE_BOX
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "hair.blend"))  # results beside it
    assert bpy.ops.sequencer.wav2lip_sync(video_strip="Face", audio_strip="Speech") == {"FINISHED"}
    sent = json.loads(engine_log.read_text())
    assert sent["audio_start"] == -speech.sound_offset  # the file time heard at frame 1, exactly
    jobs_path = tmp_path / "jobs.jsonl"
    assert bpy.ops.sequencer.wav2lip_export_jobs(filepath=str(jobs_path)) == {"FINISHED"}
    job = _read_jobs(jobs_path)[0]
    assert job["audio-start"] == -speech.sound_offset
    parsed = request.build_parser().parse_args(job_args(
        {k: v for k, v in job.items() if k not in ("id", "source-times")}))
    assert parsed.audio_start == job["audio-start"]
