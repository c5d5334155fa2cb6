"""The add-on inside real Blender (bpy 5.0.1; tools/test.sh also runs it under 4.5.15), with the
stand-in engine (fast, no torch).

The same operator with the real core runs in test_addon_e2e.py."""

from __future__ import annotations

import json
import os
import re

import pytest

from .conftest import add_movie, add_sound, deselect_all, strips

KATIE = "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, 200 frames
SPEECH = "vretalk_audio1.wav"  # 5.0 s


def results_of(scene, source):
    """The synced result strips of `source` on the timeline."""
    return [s for s in strips(scene) if s.get("wav2lip_result_of") == source]


def selected_face_and_speech(scene, media):
    """Face (its first 30 frames) on channel 2 over the Speech strip, the face selected."""
    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_end = 170
    add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    face.select = True
    return face


def test_register_unregister_twice(bpy_addon):
    bpy, mod = bpy_addon
    mod.unregister()
    assert not hasattr(bpy.types, "SEQUENCER_OT_wav2lip_sync")
    mod.register()
    mod.unregister()
    mod.register()
    assert hasattr(bpy.types, "SEQUENCER_OT_wav2lip_sync")
    assert hasattr(bpy.types, "SEQUENCER_PT_wav2lip")
    assert hasattr(bpy.types.Scene, "wav2lip")
    import addon_utils

    addon_utils.disable("blender_addon", default_set=True)
    assert not hasattr(bpy.types, "SEQUENCER_OT_wav2lip_sync")
    addon_utils.enable("blender_addon", default_set=True)
    assert bpy.context.preferences.addons["blender_addon"].preferences.output_dir == "//lipsync/"


class FakeLayout:
    """Records what a draw function asks for and checks it against RNA, like Blender would."""

    def __init__(self, log):
        self.log = log
        self.enabled = True
        self.scale_y = 1.0

    def _child(self, *a, **k):
        return FakeLayout(self.log)

    row = column = box = split = _child

    def label(self, text="", icon="NONE", **k):
        self.log.append(("label", text))

    def separator(self, **k):
        pass

    def prop(self, data, prop, **k):
        assert prop in data.bl_rna.properties, prop
        self.log.append(("prop", prop))

    def operator(self, idname, **k):
        import bpy

        mod, name = idname.split(".")
        op = getattr(getattr(bpy.ops, mod), name)
        rna = op.get_rna_type()
        self.log.append(("operator", idname, k.get("text")))

        class Props:
            def __setattr__(self, key, value):
                assert key in rna.properties, key

        return Props()

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.log.append(("progress", factor, text))


def _draw(bpy):
    log = []
    bpy.types.SEQUENCER_PT_wav2lip.draw(type("P", (), {"layout": FakeLayout(log)})(), bpy.context)
    return log


def test_panel_draws(fresh, media):
    bpy, scene = fresh
    log = _draw(bpy)
    assert ("label", "No movie strip selected") in log and ("label", "No sound strip") in log
    assert any(e[0] == "operator" and e[1] == "sequencer.wav2lip_sync" for e in log)

    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    deselect_all(scene)
    face.select = True
    scene.sequence_editor.active_strip = face
    log = _draw(bpy)
    assert ("label", "Face") in log and ("label", "No sound strip") in log

    speech = add_sound(scene, "Speech", media / SPEECH, 1, 1)
    speech.select = True
    log = _draw(bpy)
    assert ("label", "Face") in log and ("label", "Speech") in log
    assert ("prop", "checkpoint") in log and ("prop", "mute_source") in log

    # The Strip menu entry draws too.
    mlog = []
    bpy.types.SEQUENCER_MT_strip.draw  # exists
    from blender_addon import panel

    panel.menu_func(type("M", (), {"layout": FakeLayout(mlog)})(), bpy.context)
    assert ("operator", "sequencer.wav2lip_sync", None) in mlog


def test_panel_shows_progress_while_running(fresh, media, fake_python, dummy_checkpoint, tmp_path, monkeypatch):
    bpy, scene = fresh
    from blender_addon import job_state, operators

    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    face.select = True
    monkeypatch.setenv("FAKE_ENGINE_MODE", "slow")

    class Op:  # what prepare() reads from the operator
        video_strip = audio_strip = ""
        checkpoint, detector, detector_weights, box = dummy_checkpoint, "auto", "", (0, 0, 0, 0)
        device, engine_python, output_dir, mute_source = "cpu", fake_python, str(tmp_path / "o"), False

        class properties:
            @staticmethod
            def is_property_set(name):
                return True

    job = operators.prepare(bpy.context, Op())
    try:
        import time

        deadline = time.monotonic() + 20
        while job.engine_job.poll().stage != "sync" and time.monotonic() < deadline:
            time.sleep(0.05)
        log = _draw(bpy)
        prog = [e for e in log if e[0] == "progress"]
        assert prog and prog[0][2].startswith("Syncing lips")
        assert ("operator", "sequencer.wav2lip_cancel", "Cancel") in log
        assert bpy.ops.sequencer.wav2lip_cancel() == {"FINISHED"}
    finally:
        operators.cancel_active_job()
    assert operators.active_job() is None
    assert job.engine_job.poll().status == job_state.CANCELLED
    assert _removed(job.engine_job.workdir)
    assert not os.path.exists(job.dest)


def _trimmed_scene(bpy, scene, media):
    """24 fps scene, 25 fps clip trimmed to frames 13..100, speech starting at frame 20, a busy
    channel 3 over the clip."""
    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_start = 12
    face.frame_offset_end = 100
    speech = add_sound(scene, "Speech", media / SPEECH, 1, 20)
    add_sound(scene, "Music", media / SPEECH, 3, 1)
    deselect_all(scene)
    face.select = True
    speech.select = True
    scene.sequence_editor.active_strip = face
    assert (face.frame_final_start, face.frame_final_end) == (13, 101)
    return face, speech


def test_sync_inserts_one_strip_with_scene_timing(fresh, media, fake_python, dummy_checkpoint, engine_log, tmp_path):
    bpy, scene = fresh
    face, speech = _trimmed_scene(bpy, scene, media)
    blend = tmp_path / "proj" / "scene.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    scene = bpy.context.scene
    before = {s.name for s in strips(scene)}

    res = bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python, device="cpu")
    assert res == {"FINISHED"}
    new = [s for s in strips(scene) if s.name not in before]
    assert len(new) == 1
    out = new[0]
    assert out.name == "Face.lipsync" and out.type == "MOVIE"
    assert (out.frame_final_start, out.frame_final_duration) == (13, 88)
    assert out.channel == 4  # 3 is busy
    # The source stays selected, not the result (active, so the Strip sidebar shows it): the
    # panel goes on offering the source.
    assert not out.select and face.select and scene.sequence_editor.active_strip == out
    from blender_addon import capture

    assert [(v.name, a.name) for v, a in capture.choose_pairs(bpy.context, scene)] == [("Face", "Speech")]
    assert out.filepath.startswith("//")
    assert os.path.isfile(bpy.path.abspath(out.filepath))
    assert os.path.dirname(bpy.path.abspath(out.filepath)) == str(blend.parent / "lipsync")
    assert not scene.sequence_editor.strips["Face"].mute

    args = json.loads(engine_log.read_text())
    assert args["face"] == str(media / KATIE) and args["audio"] == str(media / SPEECH)
    # A 25 fps clip in a 24 fps scene (playback rate not adjusted): scene frame 13 + k shows clip
    # frame 12 + k, which is on screen from (12 + k) / 25 s.
    assert args["fps"] == 24 and args["protocol"] == _protocol_version() and args["frames"] is None
    assert args["source_times_list"] == pytest.approx([(12 + k) / 25 for k in range(88)])
    assert args["audio_start"] == pytest.approx((13 - 20) / 24)
    assert args["duration"] == pytest.approx(88 / 24)
    assert args["device"] == "cpu" and args["progress"] == "json"

    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    again = bpy.context.scene.sequence_editor.strips["Face.lipsync"]
    assert again.filepath.startswith("//lipsync/")
    assert os.path.isfile(bpy.path.abspath(again.filepath))
    assert again.frame_final_duration == 88 and again.frame_final_start == 13

    # A second run replaces the strip's own result (not stacked above it) with a second file,
    # the first file kept (an undo brings its strip back); strip and file share one name.
    first_file = bpy.path.abspath(again.filepath)
    sc = bpy.context.scene
    assert bpy.ops.sequencer.wav2lip_sync(video_strip="Face", audio_strip="Speech", checkpoint=dummy_checkpoint,
                                          engine_python=fake_python, mute_source=True) == {"FINISHED"}
    second, = results_of(sc, "Face")
    assert second.name == "Face.lipsync_001" and second.channel == 4
    assert os.path.basename(bpy.path.abspath(second.filepath)) == "Face.lipsync_001.mp4"
    assert os.path.isfile(first_file)
    assert sc.sequence_editor.strips["Face"].mute


def test_sound_picked_by_overlap_and_trimmed_sound_heard_only_where_it_plays(fresh, media, fake_python, dummy_checkpoint, engine_log, tmp_path):
    bpy, scene = fresh
    face = add_movie(scene, "Face", media / KATIE, 2, 1)  # frames 1..200
    face.frame_offset_end = 152  # used 1..48 (2 s at 24 fps)
    far = add_sound(scene, "Far", media / SPEECH, 1, 300)
    speech = add_sound(scene, "Speech", media / SPEECH, 3, 1)  # file spans frames 1..120
    speech.frame_offset_start = 12  # plays frames 13..36 only
    speech.frame_offset_end = 84
    deselect_all(scene)
    face.select = True
    assert bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python,
                                          output_dir=str(tmp_path / "out")) == {"FINISHED"}
    args = json.loads(engine_log.read_text())
    # The engine gets the file itself and cuts it: heard from frame 13 (0.5 s) until frame 37 (1.5 s).
    assert args["audio"] == str(media / SPEECH)
    assert args["audio_start"] == 0 and args["duration"] == pytest.approx(2.0)
    assert args["audible"] == [pytest.approx(0.5), pytest.approx(1.5)]
    assert far.name == "Far"  # untouched
    assert results_of(scene, "Face")[0].frame_final_duration == 48


def test_unsaved_file_goes_to_temp_with_warning_once(fresh, media, fake_python, dummy_checkpoint, capfd, monkeypatch):
    bpy, scene = fresh
    from blender_addon import sync_batch

    monkeypatch.setattr(sync_batch, "_unsaved_warned", False)  # as in a new session, whatever ran before
    face = selected_face_and_speech(scene, media)
    import tempfile

    paths = []
    for _ in range(2):
        assert bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python) == {"FINISHED"}
        paths.append(results_of(scene, "Face")[0].filepath)
    out = capfd.readouterr().out
    # Blender prints an operator's reports in background mode: the warning came, and only once.
    assert out.count("Warning: the .blend file is not saved: the synced clip goes to the temp folder") == 1, out
    for path in paths:
        assert os.path.dirname(path) == os.path.join(tempfile.gettempdir(), f"wav2lip_lipsync-{os.getuid()}")
        assert os.path.isfile(path)
        os.remove(path)
    assert not [n for n in os.listdir(os.path.dirname(paths[0])) if n.startswith(".wav2lip-job-")]


def _no_new_strip(scene, before):
    return {s.name for s in strips(scene)} == before


@pytest.mark.parametrize("case, match", [
    ("nothing", "nothing to sync"),
    ("no_sound", "no sound strip"),
    ("no_checkpoint", "checkpoint not found"),
    ("bad_python", "cannot start the lip-sync engine"),
    ("engine_error", "not a Wav2Lip model"),
    ("crash", "Segmentation fault"),
    ("reversed", "changed speed"),
    ("speed_effect", "Speed Control"),
])
def test_errors_report_and_insert_nothing(case, match, fresh, media, fake_python, dummy_checkpoint, tmp_path, monkeypatch):
    bpy, scene = fresh
    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_end = 170
    if case != "no_sound":
        add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    if case != "nothing":
        face.select = True
    kw = dict(checkpoint=dummy_checkpoint, engine_python=fake_python, output_dir=str(tmp_path / "out"))
    if case == "no_checkpoint":
        kw["checkpoint"] = str(tmp_path / "missing.pth")
    if case == "bad_python":
        kw["engine_python"] = str(tmp_path / "no-such-env" / "bin" / "python")
    if case in ("engine_error", "crash"):
        monkeypatch.setenv("FAKE_ENGINE_MODE", "error" if case == "engine_error" else "crash")
    if case == "reversed":
        face.use_reverse_frames = True
    if case == "speed_effect":
        ed = scene.sequence_editor
        coll = ed.strips if hasattr(ed, "strips") else ed.sequences
        coll.new_effect(name="Speed", type="SPEED", channel=5, frame_start=1, input1=face)
    before = {s.name for s in strips(scene)}
    with pytest.raises(RuntimeError, match=match) as exc:
        bpy.ops.sequencer.wav2lip_sync(**kw)
    assert "Traceback" not in str(exc.value)
    assert _no_new_strip(scene, before)
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())
    from blender_addon import operators

    assert operators.active_job() is None


class _Event:
    def __init__(self, type, value="NOTHING", mouse_x=-1, mouse_y=-1):
        self.type, self.value = type, value
        self.mouse_x, self.mouse_y = mouse_x, mouse_y


def _fake_modal_op(bpy, props):
    """The operator's modal methods on a stand-in `self` (Blender never runs modal handlers in
    background mode, so this drives them by hand)."""
    cls = bpy.types.SEQUENCER_OT_wav2lip_sync
    reports = []

    class Op:
        _timer = None
        report = staticmethod(lambda level, msg: reports.append((sorted(level)[0], msg)))
        modal = cls.modal
        _remove_timer = cls._remove_timer
        _stop = cls._stop
        _finish = cls._finish
        _finish_in_batch = cls._finish_in_batch

    op = Op()
    op._batch = None  # invoke sets it
    for k, v in props.items():
        setattr(op, k, v)
    op.properties = type("P", (), {"is_property_set": staticmethod(lambda name: True)})()
    return op, reports


@pytest.mark.parametrize("how", ["esc", "cancel_button", "finish"])
def test_modal_paths(how, fresh, media, fake_python, dummy_checkpoint, tmp_path, monkeypatch):
    bpy, scene = fresh
    from blender_addon import operators

    selected_face_and_speech(scene, media)
    if how != "finish":
        monkeypatch.setenv("FAKE_ENGINE_MODE", "slow")
    props = dict(video_strip="", audio_strip="", checkpoint=dummy_checkpoint, detector="PREFS", detector_weights="",
                 box=(0, 0, 0, 0), device="PREFS", engine_python=fake_python, output_dir=str(tmp_path / "out"),
                 mute_source=False)
    op, reports = _fake_modal_op(bpy, props)
    before = {s.name for s in strips(scene)}
    job = operators.prepare(bpy.context, op)
    op._batch = operators.active_batch()
    assert operators.active_job() is job
    import time

    assert op.modal(bpy.context, _Event("MOUSEMOVE")) == {"PASS_THROUGH"}  # the user keeps editing
    if how == "esc":
        # Esc away from the Lip Sync panel (here: outside every area) keeps the job running; the
        # panel's own Esc is driven in a real window (tests/blender_window/).
        assert op.modal(bpy.context, _Event("ESC", "PRESS")) == {"PASS_THROUGH"}
        assert operators.active_job() is job and not job.engine_job.finished
        assert bpy.ops.sequencer.wav2lip_cancel() == {"FINISHED"}
        res = op.modal(bpy.context, _Event("TIMER"))
    elif how == "cancel_button":
        assert bpy.ops.sequencer.wav2lip_cancel() == {"FINISHED"}
        res = op.modal(bpy.context, _Event("TIMER"))
    else:
        res = {"PASS_THROUGH"}
        deadline = time.monotonic() + 60
        while res == {"PASS_THROUGH"} and time.monotonic() < deadline:
            time.sleep(0.05)
            res = op.modal(bpy.context, _Event("TIMER"))
    assert operators.active_job() is None
    new = {s.name for s in strips(scene)} - before
    if how == "finish":
        assert res == {"FINISHED"} and new == {"Face.lipsync"}
        # The run time, said as such (it read as the clip's length).
        assert any(level == "INFO" and re.search(r"^Inserted 'Face.lipsync' .*\(synced in \d+ s\)$", msg)
                   for level, msg in reports), reports
    else:
        assert res == {"CANCELLED"} and not new
        assert any("cancelled" in msg for _, msg in reports)
        assert _removed(job.engine_job.workdir) and not os.path.exists(job.dest)


def test_precision_preference_reaches_the_engine_and_the_operator_overrides_it(fresh, media, fake_python,
                                                                               dummy_checkpoint, engine_log):
    bpy, scene = fresh
    _trimmed_scene(bpy, scene, media)
    prefs = bpy.context.preferences.addons["blender_addon"].preferences
    assert prefs.precision == "auto"
    prefs.precision = "int8"
    try:
        assert bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python) == {"FINISHED"}
        assert json.loads(engine_log.read_text())["precision"] == "int8"
        assert bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python,
                                              precision="fp32") == {"FINISHED"}
        assert json.loads(engine_log.read_text())["precision"] == "fp32"
    finally:
        prefs.precision = "auto"


def test_empty_preferences_use_what_install_py_recorded(bpy_addon, tmp_path, monkeypatch):
    bpy, _ = bpy_addon
    from blender_addon import job_settings

    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "wav2lip_lipsync.json").write_text(json.dumps({"python": "/env/bin/python", "checkpoint": "/w/ck.pth"}))
    monkeypatch.setattr(bpy.utils, "user_resource", lambda kind, **kw: str(cfg))
    s = job_settings.settings_from(bpy.context)
    assert s.engine_python == "/env/bin/python" and s.checkpoint == os.path.normpath("/w/ck.pth")
    op = type("Op", (), dict(checkpoint="/other.pth", engine_python="", detector_weights="", output_dir="",
                             detector="PREFS", device="PREFS", box=(0, 0, 0, 0)))()
    assert job_settings.settings_from(bpy.context, op).checkpoint == "/other.pth"


def _started_job(bpy, scene, media, fake_python, dummy_checkpoint, tmp_path, **props):
    """A job started through prepare() (as invoke does), with the operator's methods on a
    stand-in `self` to finish it."""
    from blender_addon import operators

    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_start, face.frame_offset_end = 10, 150  # used 11..50
    add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    face.select = True
    base = dict(video_strip="", audio_strip="", checkpoint=dummy_checkpoint, detector="PREFS", detector_weights="",
                box=(0, 0, 0, 0), device="PREFS", engine_python=fake_python, output_dir=str(tmp_path / "out"),
                mute_source=False)
    base.update(props)
    op, reports = _fake_modal_op(bpy, base)
    job = operators.prepare(bpy.context, op)
    op._batch = operators.active_batch()
    return face, op, reports, job


@pytest.mark.parametrize("change", ["moved", "trimmed", "deleted"])
def test_source_strip_changed_while_the_job_runs(change, fresh, media, fake_python, dummy_checkpoint, tmp_path):
    bpy, scene = fresh
    face, op, reports, job = _started_job(bpy, scene, media, fake_python, dummy_checkpoint, tmp_path)
    ed = scene.sequence_editor
    if change == "moved":
        face.frame_start += 30  # the whole strip, 30 frames later: the result follows it
        face.channel = 6
    elif change == "trimmed":
        face.frame_offset_start += 5
    else:
        ed.strips.remove(face) if hasattr(ed, "strips") else ed.sequences.remove(face)
    assert job.engine_job.wait(60).status == "done"
    assert op._finish(bpy.context, job) == {"FINISHED"}
    new = next(s for s in strips(scene) if s.name == "Face.lipsync")
    assert new.frame_final_duration == 40
    warnings = [m for level, m in reports if level == "WARNING"]
    if change == "moved":
        assert new.frame_final_start == 41 and new.channel == 7 and not warnings
    elif change == "trimmed":
        assert new.frame_final_start == 11 and new.channel == 3
        assert len(warnings) == 1 and "'Face' was changed while syncing" in warnings[0] and "sync again" in warnings[0]
    else:
        assert new.frame_final_start == 11 and new.channel == 3
        assert len(warnings) == 1 and "was deleted while syncing" in warnings[0]


def test_engine_notes_are_reported(fresh, media, fake_python, dummy_checkpoint, tmp_path, monkeypatch):
    bpy, scene = fresh
    monkeypatch.setenv("FAKE_ENGINE_MODE", "note")
    face, op, reports, job = _started_job(bpy, scene, media, fake_python, dummy_checkpoint, tmp_path)
    job.engine_job.wait(60)
    assert job.engine_job.poll().notes  # what the panel shows while the job runs
    assert op._finish(bpy.context, job) == {"FINISHED"}
    assert ("INFO", job.engine_job.poll().notes[0]) in reports
    assert "install.py --detector-weights" in job.engine_job.poll().notes[0]


@pytest.mark.parametrize("mode", ["other_protocol", "old"])
def test_engine_of_another_version_is_refused(mode, fresh, media, fake_python, dummy_checkpoint, tmp_path, monkeypatch):
    bpy, scene = fresh
    selected_face_and_speech(scene, media)
    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    before = {s.name for s in strips(scene)}
    with pytest.raises(RuntimeError, match=r"the lip-sync engine speaks protocol .*re-run install.py") as exc:
        bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python,
                                       output_dir=str(tmp_path / "out"))
    assert "Traceback" not in str(exc.value)
    assert {s.name for s in strips(scene)} == before
    assert not any((tmp_path / "out").iterdir())


def test_panel_hint_says_what_auto_detector_will_run(bpy_addon, tmp_path, monkeypatch):
    from blender_addon import job_settings

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(job_settings, "installed_config", lambda: {})  # nothing recorded by install.py
    s = job_settings.Settings(detector="auto")
    assert job_settings.detector_hint(s) == "Auto: Haar; set Detector Weights for BlazeFace"
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "blazeface.pth").write_bytes(b"weights")
    assert job_settings.detector_hint(s) == "Auto: BlazeFace"
    assert job_settings.detector_hint(job_settings.Settings(detector="haar")) == ""
    # The engine looks in the same place: torch's own answer for this environment.
    code = "import os, torch.hub; print(os.path.join(torch.hub.get_dir(), 'checkpoints'))"
    import subprocess

    from conftest import ENGINE_PYTHON

    r = subprocess.run([ENGINE_PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TORCH_HOME=str(tmp_path / "torch")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == job_settings.protocol.torch_hub_checkpoints()


def _protocol_version() -> int:
    from blender_addon.wire import protocol

    return protocol.PROTOCOL_VERSION


def _removed(path, seconds=5.0) -> bool:
    """The work folder goes once the engine has let go of the cancelled job (at once, or a
    moment later when it is busy)."""
    import time

    end = time.monotonic() + seconds
    while path.exists() and time.monotonic() < end:
        time.sleep(0.05)
    return not path.exists()


def test_quality_options_reach_the_engine(fresh, media, fake_python, dummy_checkpoint, engine_log, tmp_path):
    """Issue 11's options: blend, silence and align (preferences), sync offset and Enhance face
    (the panel, per scene) with the restorer weights and fidelity (preferences), as CLI options."""
    bpy, scene = fresh
    _trimmed_scene(bpy, scene, media)
    kw = dict(checkpoint=dummy_checkpoint, engine_python=fake_python, output_dir=str(tmp_path / "out"))
    assert bpy.ops.sequencer.wav2lip_sync(**kw) == {"FINISHED"}
    args = json.loads(engine_log.read_text())
    assert (args["blend"], args["silence"], args["align"]) == ("feather", "hold", "auto")  # the defaults
    assert args["sync_offset"] is None and args["enhance"] is None and args["enhance_fidelity"] is None

    prefs = bpy.context.preferences.addons["blender_addon"].preferences
    weights = tmp_path / "GFPGANv1.4.pth"
    weights.write_bytes(b"restorer")
    settings = scene.wav2lip
    try:
        prefs.blend, prefs.silence, prefs.align = "mouth", "sync", "off"
        prefs.enhance_fidelity = 0.7
        settings.sync_offset = -1.5
        settings.enhance = True
        with pytest.raises(RuntimeError, match="Enhance face needs a restorer weights file"):
            bpy.ops.sequencer.wav2lip_sync(**kw)
        prefs.enhance_weights = str(weights)
        assert bpy.ops.sequencer.wav2lip_sync(**kw) == {"FINISHED"}
        args = json.loads(engine_log.read_text())
        assert (args["blend"], args["silence"], args["align"]) == ("mouth", "sync", "off")
        assert args["sync_offset"] == -1.5
        assert args["enhance"] == str(weights) and args["enhance_fidelity"] == pytest.approx(0.7)
    finally:
        prefs.blend, prefs.silence, prefs.align, prefs.enhance_weights = "feather", "hold", "auto", ""
        prefs.enhance_fidelity = 0.5


def test_several_selected_strips_each_need_a_sound(fresh, media, fake_python, dummy_checkpoint, tmp_path):
    bpy, scene = fresh
    a = add_movie(scene, "ShotA", media / KATIE, 2, 1)
    a.frame_offset_end = 170
    b = add_movie(scene, "ShotB", media / KATIE, 2, 100)
    b.frame_offset_end = 170
    speech = add_sound(scene, "Speech", media / SPEECH, 1, 1)
    speech.frame_final_end = 40  # under ShotA only
    deselect_all(scene)
    a.select = b.select = True
    log = _draw(bpy)
    assert ("operator", "sequencer.wav2lip_sync", "Sync 2 Strips") in log
    assert ("operator", "sequencer.wav2lip_sync", "Preview") in log
    assert ("label", "ShotB \u2190 no sound strip") in log
    before = {s.name for s in strips(scene)}
    with pytest.raises(RuntimeError, match="no sound strip for 'ShotB'"):
        bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python,
                                       output_dir=str(tmp_path / "out"))
    assert {s.name for s in strips(scene)} == before
    from blender_addon import operators

    assert operators.active_job() is None


ADDON_OPERATORS = ("sequencer.wav2lip_sync", "sequencer.wav2lip_cancel", "sequencer.wav2lip_export_jobs",
                   "sequencer.wav2lip_import_report")


def _op_rna(bpy, idname):
    mod, name = idname.split(".")
    return getattr(getattr(bpy.ops, mod), name).get_rna_type()


def test_every_operator_property_skips_the_last_used_value(bpy_addon):
    """Issue 17: after one Preview every Sync previewed, because a button press reuses the last
    call's properties unless they are SKIP_SAVE (a press in a real window: tests/blender_window)."""
    bpy, _ = bpy_addon
    for idname in ADDON_OPERATORS:
        props = [p for p in _op_rna(bpy, idname).properties if p.identifier != "rna_type"]
        remembered = [p.identifier for p in props if not p.is_skip_save]
        assert not remembered, (idname, remembered)
    assert "preview" in _op_rna(bpy, "sequencer.wav2lip_sync").properties


def test_preview_has_its_own_tooltip_and_no_tooltip_shows_backticks(bpy_addon):
    bpy, _ = bpy_addon
    cls = bpy.types.SEQUENCER_OT_wav2lip_sync
    props = bpy.context.window_manager.operator_properties_last("sequencer.wav2lip_sync")
    props.preview = False
    sync_tip = cls.description(bpy.context, props)
    props.preview = True
    preview_tip = cls.description(bpy.context, props)
    props.preview = False
    assert sync_tip == _op_rna(bpy, "sequencer.wav2lip_sync").description
    assert preview_tip != sync_tip and "preview strip" in preview_tip
    for idname in ADDON_OPERATORS:
        rna = _op_rna(bpy, idname)
        texts = [rna.description, preview_tip] + [p.description for p in rna.properties]
        assert not [t for t in texts if "`" in t], (idname, texts)


def _sync(bpy, tmp_path, fake_python, dummy_checkpoint, **kw):
    return bpy.ops.sequencer.wav2lip_sync(checkpoint=dummy_checkpoint, engine_python=fake_python,
                                          output_dir=str(tmp_path / "out"), **kw)


def test_a_result_or_preview_strip_is_never_a_source(fresh, media, fake_python, dummy_checkpoint, tmp_path):
    """Issue 17: with the result selected, Sync made `Face.lipsync.lipsync`; with only the
    preview selected, the preview was synced as a source. Each stands for its source strip."""
    bpy, scene = fresh
    from blender_addon import capture

    face = selected_face_and_speech(scene, media)
    assert _sync(bpy, tmp_path, fake_python, dummy_checkpoint) == {"FINISHED"}
    result, = results_of(scene, "Face")
    deselect_all(scene)
    result.select = True
    scene.sequence_editor.active_strip = result
    assert [(v.name, a.name) for v, a in capture.choose_pairs(bpy.context, scene)] == [("Face", "Speech")]
    assert _sync(bpy, tmp_path, fake_python, dummy_checkpoint) == {"FINISHED"}
    assert [s.name for s in results_of(scene, "Face")] == ["Face.lipsync_001"]  # replaced
    assert not [s for s in strips(scene) if "lipsync.lipsync" in s.name or "lipsync_001." in s.name]

    deselect_all(scene)
    face.select = True
    scene.sequence_editor.active_strip = face
    assert _sync(bpy, tmp_path, fake_python, dummy_checkpoint, preview=True) == {"FINISHED"}
    preview, = [s for s in strips(scene) if s.get("wav2lip_preview_of") == "Face"]
    deselect_all(scene)
    preview.select = True
    scene.sequence_editor.active_strip = preview
    assert [(v.name, a.name) for v, a in capture.choose_pairs(bpy.context, scene)] == [("Face", "Speech")]
    assert _sync(bpy, tmp_path, fake_python, dummy_checkpoint, preview=True) == {"FINISHED"}
    previews = [s for s in strips(scene) if s.get("wav2lip_preview_of")]
    assert [s.get("wav2lip_preview_of") for s in previews] == ["Face"]  # no preview of the preview


def test_a_replaced_preview_leaves_no_file(fresh, media, fake_python, dummy_checkpoint, tmp_path):
    """Issue 17: replaced previews piled up on disk. The add-on's own preview file goes when its
    strip is replaced (by the next preview or the full sync); the user's files stay."""
    bpy, scene = fresh
    selected_face_and_speech(scene, media)
    out = tmp_path / "out"

    def preview_files():
        return sorted(p.name for p in out.iterdir() if ".preview" in p.name)

    assert _sync(bpy, tmp_path, fake_python, dummy_checkpoint, preview=True) == {"FINISHED"}
    first = preview_files()
    assert len(first) == 1
    assert _sync(bpy, tmp_path, fake_python, dummy_checkpoint, preview=True) == {"FINISHED"}
    second = preview_files()
    assert len(second) == 1 and second != first
    assert _sync(bpy, tmp_path, fake_python, dummy_checkpoint) == {"FINISHED"}
    assert preview_files() == []
    assert [p.name for p in out.iterdir()] == ["Face.lipsync.mp4"]
    assert (media / KATIE).is_file() and (media / SPEECH).is_file()


def test_a_sound_strip_beside_the_clip_is_no_pair_and_a_lone_sound_is_named(fresh, media):
    bpy, scene = fresh
    from blender_addon import capture

    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_end = 170  # frames 1..30
    far = add_sound(scene, "Far", media / SPEECH, 1, 300)
    deselect_all(scene)
    face.select = far.select = True
    scene.sequence_editor.active_strip = face
    assert capture.choose_strips(bpy.context, scene) == (face, None)
    assert [(v.name, a) for v, a in capture.choose_pairs(bpy.context, scene)] == [("Face", None)]
    speech = add_sound(scene, "Speech", media / SPEECH, 3, 1)  # unselected, under the clip
    assert capture.choose_strips(bpy.context, scene) == (face, speech)
    # Only a sound strip selected: no pair, and the panel can name the sound it has.
    deselect_all(scene)
    speech.select = True
    assert capture.choose_pairs(bpy.context, scene) == []
    assert capture.lone_sound(bpy.context, scene) == speech


def test_a_job_complete_when_cancel_came_is_inserted(fresh, media, fake_python, dummy_checkpoint, tmp_path):
    """Issue 17: a cancel that raced a finished job left a complete clip that was never inserted."""
    bpy, scene = fresh
    from blender_addon import operators

    face, op, reports, job = _started_job(bpy, scene, media, fake_python, dummy_checkpoint, tmp_path)
    assert job.engine_job.wait(60).status == "done"  # finished; the operator's timer has not seen it yet
    assert bpy.ops.sequencer.wav2lip_cancel() == {"FINISHED"}
    assert op.modal(bpy.context, _Event("TIMER")) == {"CANCELLED"}
    assert operators.active_job() is None
    result, = results_of(scene, "Face")
    assert result.name == "Face.lipsync" and os.path.isfile(bpy.path.abspath(result.filepath))
    assert ("WARNING", "Lip sync cancelled; 1 of 1 inserted") in reports, reports
