"""What the Lip Sync panel and the add-on preferences show (bpy 5.0.1; the real Blender 3.4.1
window in tests/blender_window/test_panel_display_window.py): labelled settings with the values a
job will use and where they came from, a selection problem shown before Sync is pressed, each
progress bar with its own value, notes wrapped between words; and the private temp folder of
unsaved files."""

from __future__ import annotations

import json
import os
import stat
import time
import types

import pytest
from panel_text import labels

from .conftest import add_movie, add_sound, deselect_all

KATIE = "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, 200 frames
SPEECH = "vretalk_audio1.wav"  # 5.0 s
ADDON = "blender_addon"


class Recorder:
    """A layout that records what a draw function asks for (checked against RNA, as Blender
    would), with the `enabled` state of the layout each button is drawn in."""

    def __init__(self, log, parent=None):
        self.log = log
        self.parent = parent
        self.enabled = True
        self.scale_y = 1.0
        self.use_property_split = parent.use_property_split if parent is not None else False
        self.use_property_decorate = True

    def _child(self, *a, **k):
        return Recorder(self.log, self)

    row = column = box = split = _child

    def _enabled(self):
        node = self
        while node is not None:
            if not node.enabled:
                return False
            node = node.parent
        return True

    def label(self, text="", icon="NONE", **k):
        self.log.append(("label", text, icon))

    def separator(self, **k):
        pass

    def prop(self, data, prop, text=None, **k):
        assert prop in data.bl_rna.properties, prop
        # The text Blender shows beside the field: the given text, else the property's name.
        shown = data.bl_rna.properties[prop].name if text is None else text
        self.log.append(("prop", data, prop, shown))

    def operator(self, idname, text=None, **k):
        import bpy

        mod, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, mod), name).get_rna_type()
        self.log.append(("operator", idname, text, self._enabled()))

        class Props:
            def __setattr__(self, key, value):
                assert key in rna.properties, key

        return Props()

    def progress(self, factor=0.0, type="BAR", text=""):
        self.log.append(("progress", factor, text))


def draw(bpy, context=None):
    from blender_addon import panel

    log = []
    panel.draw_panel(Recorder(log), context or bpy.context)
    return log


def sync_button(log):
    return next(e for e in log if e[0] == "operator" and e[1] == "sequencer.wav2lip_sync" and e[2] != "Preview")


@pytest.fixture
def prefs(bpy_addon):
    """The add-on preferences, put back as they were afterwards."""
    bpy, _ = bpy_addon
    p = bpy.context.preferences.addons[ADDON].preferences
    names = ("checkpoint", "detector_weights", "engine_python", "detector")
    saved = {n: getattr(p, n) for n in names}
    p.checkpoint = p.detector_weights = p.engine_python = ""
    p.detector = "auto"
    yield p
    for n, v in saved.items():
        setattr(p, n, v)


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """Blender's config folder in tmp_path, with the record install.py writes there (protocol's
    CONFIG_NAME) naming real files; torch's cache empty."""
    from wav2lip_core import protocol

    config = tmp_path / "config"
    config.mkdir()
    files = {}
    for key, name in ((protocol.CONFIG_CHECKPOINT, "wav2lip_gan.pth"),
                      (protocol.CONFIG_DETECTOR_WEIGHTS, "blazeface.pth"),
                      (protocol.CONFIG_PYTHON, "python3.11")):
        f = tmp_path / "installed" / name
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
        files[key] = str(f)
    (config / protocol.CONFIG_NAME).write_text(json.dumps(files))
    monkeypatch.setenv("BLENDER_USER_CONFIG", str(config))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return config / protocol.CONFIG_NAME


def test_every_setting_is_labelled_and_shows_the_value_used_and_its_source(fresh, prefs, recorded, media, tmp_path):
    bpy, scene = fresh
    log = draw(bpy)
    props = [e for e in log if e[0] == "prop"]
    assert {e[2] for e in props} >= {"checkpoint", "detector", "device", "precision", "silence", "blend",
                                     "sync_offset", "enhance", "mute_source"}
    # Each field has its name beside it (no bare path field, no two anonymous "Auto" menus).
    assert [e for e in props if not e[3]] == [], props
    shown = labels(log)
    # Empty preferences: what install.py recorded is what a job uses, and the panel says so.
    assert "Checkpoint: wav2lip_gan.pth (from install.py)" in shown, shown
    assert "Detector Weights: blazeface.pth (from install.py)" in shown, shown
    assert "Engine Python: python3.11 (from install.py)" in shown, shown

    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"x")
    prefs.checkpoint = str(mine)
    shown = labels(draw(bpy))
    assert "Checkpoint: mine.pth (from preferences)" in shown, shown

    prefs.checkpoint = ""
    recorded.unlink()
    shown = labels(draw(bpy))
    assert any(t.startswith("Checkpoint: (not set: ") for t in shown), shown
    assert any(t.startswith("Engine Python: (not set: ") for t in shown), shown
    assert any(t.startswith("Detector Weights: (not set: Auto uses Haar") for t in shown), shown


def test_the_preferences_show_the_recorded_values_too(bpy_addon, prefs, recorded):
    bpy, _ = bpy_addon
    log = []
    type(prefs).draw(_PrefsView(prefs, log), bpy.context)
    shown = labels(log)
    data = json.loads(recorded.read_text())
    assert f"Checkpoint: {data['checkpoint']} (from install.py)" in shown, shown
    assert f"Engine Python: {data['python']} (from install.py)" in shown, shown
    assert f"Detector Weights: {data['detector_weights']} (from install.py)" in shown, shown


class _PrefsView:
    """The preferences with a recording layout (AddonPreferences.layout cannot be set)."""

    def __init__(self, prefs, log):
        object.__setattr__(self, "_prefs", prefs)
        object.__setattr__(self, "layout", Recorder(log))

    def __getattr__(self, name):
        return getattr(self._prefs, name)


def test_a_sound_strip_alone_asks_for_the_movie(fresh, prefs, media):
    bpy, scene = fresh
    add_movie(scene, "Face", media / KATIE, 2, 1)
    speech = add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    speech.select = True
    log = draw(bpy)
    shown = labels(log)
    assert "Select the movie strip too" in shown and "No sound strip" not in shown, shown
    assert not sync_button(log)[3]


def test_a_sound_strip_that_does_not_overlap_is_shown_before_pressing(fresh, prefs, media):
    bpy, scene = fresh
    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_end = 170  # frames 1..30
    speech = add_sound(scene, "Speech", media / SPEECH, 1, 200)  # frames 200..324
    deselect_all(scene)
    face.select = speech.select = True
    scene.sequence_editor.active_strip = face
    log = draw(bpy)
    assert "Sound strip does not overlap the movie" in labels(log), labels(log)
    assert not sync_button(log)[3], "Sync is offered for strips that cannot be synced"

    speech.frame_start = 10  # now under the movie
    log = draw(bpy)
    assert "Sound strip does not overlap the movie" not in labels(log)
    assert sync_button(log)[3]


class _Op:
    """What prepare() reads from the operator."""

    video_strip = audio_strip = ""
    detector, detector_weights, box = "auto", "", (0, 0, 0, 0)
    device, mute_source = "cpu", False

    def __init__(self, checkpoint, python, out):
        self.checkpoint, self.engine_python, self.output_dir = checkpoint, python, out

    class properties:
        @staticmethod
        def is_property_set(name):
            return True


def _start(bpy, scene, media, faces, mode, monkeypatch, fake_python, dummy_checkpoint, tmp_path):
    from blender_addon import operators

    deselect_all(scene)
    for i in range(faces):
        face = add_movie(scene, f"Face{i}", media / KATIE, 2, 1 + 60 * i)
        face.frame_offset_end = 170
        add_sound(scene, f"Speech{i}", media / SPEECH, 1, 1 + 60 * i)
        face.select = True
    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    return operators.prepare(bpy.context, _Op(dummy_checkpoint, fake_python, str(tmp_path / "o")))


def test_below_4_each_bar_shows_its_own_value(fresh, prefs, media, fake_python, dummy_checkpoint, tmp_path, monkeypatch):
    """Blender < 4.0 draws the bars as sliders over window-manager properties, and reads their
    values after the whole panel is laid out: the batch bar must not show the job's value."""
    bpy, scene = fresh
    from blender_addon import compat, operators

    compat.unregister()
    monkeypatch.setattr(compat, "HAS_PROGRESS_WIDGET", False)
    compat.register()
    try:
        job = _start(bpy, scene, media, 2, "slow", monkeypatch, fake_python, dummy_checkpoint, tmp_path)
        try:
            deadline = time.monotonic() + 20
            while job.engine_job.poll().fraction < 0.02 and time.monotonic() < deadline:
                time.sleep(0.05)
            log = draw(bpy)
            # What each slider shows once the panel is drawn: its property's value now.
            bars = {e[3]: getattr(e[1], e[2]) for e in log if e[0] == "prop" and e[1] == bpy.context.window_manager}
        finally:
            operators.cancel_active_job()
    finally:
        compat.unregister()
        monkeypatch.undo()
        compat.register()
    assert "Strip 1 of 2" in bars and len(bars) == 2, bars
    job_value = next(v for text, v in bars.items() if text != "Strip 1 of 2")
    assert job_value >= 2
    # Job 1 of 2 at f: the batch is at f / 2 (the job may move one step between the two reads).
    assert bars["Strip 1 of 2"] == pytest.approx(job_value / 2, abs=1.0), bars


def test_notes_wrap_between_words_to_the_region_width(fresh, prefs, media, fake_python, dummy_checkpoint, tmp_path,
                                                      monkeypatch):
    bpy, scene = fresh
    from blender_addon import operators

    job = _start(bpy, scene, media, 1, "note", monkeypatch, fake_python, dummy_checkpoint, tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not job.engine_job.poll().notes and time.monotonic() < deadline:
            time.sleep(0.05)
        note = job.engine_job.poll().notes[0].split(";")[0]
        assert len(note) > 40

        def note_lines(width):
            ctx = _Context(bpy.context, types.SimpleNamespace(width=width))
            log = draw(bpy, ctx)
            drawn = [e for e in log if e[0] == "label"]
            first = next(i for i, e in enumerate(drawn) if note.startswith(e[1]))
            lines = [drawn[first][1]]
            for e in drawn[first + 1:]:
                if e[2] != "BLANK1":  # continuation lines are indented like the first's text
                    break
                lines.append(e[1])
            return lines

        narrow, wide = note_lines(200), note_lines(900)
    finally:
        operators.cancel_active_job()
    assert " ".join(narrow) == note and " ".join(wide) == note
    assert len(narrow) >= 2 and len(wide) == 1, (narrow, wide)
    words = note.split()
    at = 0
    for line in narrow:  # whole words on every line, never a cut one
        n = len(line.split())
        assert line.split() == words[at:at + n], (line, narrow)
        at += n
        assert len(line) * 6 <= 200, line  # fits: the interface font is under 6 px a character


class _Context:
    """bpy.context with another region (background mode has none)."""

    def __init__(self, context, region):
        self._context, self.region = context, region

    def __getattr__(self, name):
        return getattr(self._context, name)


def test_unsaved_files_use_a_private_folder_of_this_user(fresh, tmp_path, monkeypatch):
    bpy, scene = fresh
    import tempfile

    from blender_addon import job_settings

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert not bpy.data.filepath
    mine = tmp_path / f"wav2lip_lipsync-{os.getuid()}"
    folder, warning = job_settings.output_folder(job_settings.Settings())
    assert folder == str(mine) and str(mine) in warning
    st = os.lstat(folder)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    assert job_settings.output_folder(job_settings.Settings())[0] == folder  # the same one next time

    mine.chmod(0o777)  # ours, but opened up: made private again
    assert job_settings.output_folder(job_settings.Settings())[0] == folder
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def test_a_planted_temp_folder_is_never_used(fresh, tmp_path, monkeypatch):
    bpy, scene = fresh
    import tempfile

    from blender_addon import job_settings

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    elsewhere = tmp_path / "theirs"
    elsewhere.mkdir(mode=0o777)
    (tmp_path / f"wav2lip_lipsync-{os.getuid()}").symlink_to(elsewhere)
    folder, warning = job_settings.output_folder(job_settings.Settings())
    assert os.path.realpath(folder) != str(elsewhere) and folder in warning
    st = os.lstat(folder)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700

    if os.getuid() != 0:
        return  # (only root can make a folder another user owns)
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(other))
    theirs = other / "wav2lip_lipsync-0"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    folder = job_settings.output_folder(job_settings.Settings())[0]
    assert folder != str(theirs) and os.stat(folder).st_uid == 0


def test_no_tooltip_shows_backticks(bpy_addon):
    bpy, mod = bpy_addon
    from blender_addon import operators, panel, preferences, studio

    seen = []
    for m in (preferences, operators, studio, panel):
        for cls in getattr(m, "classes", ()):
            if issubclass(cls, bpy.types.Operator):  # its tooltip and options live on its properties' type
                mod_name, op_name = cls.bl_idname.split(".")
                rna, base = getattr(getattr(bpy.ops, mod_name), op_name).get_rna_type(), set()
            else:
                rna = cls.bl_rna
                base = {p.identifier for b in cls.__mro__[1:] if hasattr(b, "bl_rna") for p in b.bl_rna.properties}
            seen.append((cls.__name__, rna.description))
            seen += [(f"{cls.__name__}.{p.identifier}", p.description) for p in rna.properties
                     if p.identifier not in base and p.identifier != "rna_type"]
    assert len(seen) > 20
    assert [(name, text) for name, text in seen if "`" in text] == []
