"""Pick Face's mapping against Blender's own picture (bpy): a clip with one bright marker is put
in a strip that is moved, scaled, rotated, cropped and flipped; Blender renders the frame, the
marker's place in the render is found, and pick_map must map that render point back to the
marker's clip pixel (within 1 px). The render is the independent computation: pick_map's
forward formula is not used to make the expectation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from .conftest import add_movie

W, H = 160, 120  # the clip
FRAME_W, FRAME_H = 256, 192  # the render


def marker_clip(path, mx, my, size=8, n=3, fps=24):
    """A clip, grey, with a white `size` square whose top left corner is clip pixel (mx, my)."""
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(fps))
        st.width, st.height = W, H
        st.pix_fmt = "yuv444p"
        st.options = {"qp": "0"}
        for _ in range(n):
            img = np.full((H, W, 3), 60, np.uint8)
            img[my:my + size, mx:mx + size] = 255
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def marker_in_render(px):
    """The marker's centre in render-frame coordinates (y up), from a render (top row first)."""
    bright = px[..., :3].mean(axis=2) > 0.8
    rows, cols = np.nonzero(bright)
    assert len(rows) > 4, "the marker is not in the render"
    h = px.shape[0]
    return float(cols.mean() + 0.5), float(h - (rows.mean() + 0.5))


CASES = {
    "plain": {},
    "moved_scaled": dict(offset_x=-31, offset_y=17, scale_x=0.75, scale_y=1.25),
    "rotated_origin": dict(rotation=0.5, scale_x=1.1, scale_y=1.1, offset_x=12, origin=(0.25, 0.7)),
    "cropped_flipped_x": dict(offset_x=20, offset_y=-10, crop=(10, 6, 4, 8), flip_x=True),
    "flipped_y_scaled": dict(scale_x=0.8, scale_y=0.8, offset_y=25, flip_y=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_point_maps_back_to_the_marker(case, fresh, tmp_path):
    bpy, scene = fresh
    from blender_addon import compat, pick_map

    from .numbered_clip import render_sequencer

    c = CASES[case]
    mx, my = 100, 30
    scene.render.resolution_x, scene.render.resolution_y = FRAME_W, FRAME_H
    strip = add_movie(scene, "Face", marker_clip(tmp_path / "m.mp4", mx, my), 1, 1)
    t = strip.transform
    t.offset_x, t.offset_y = c.get("offset_x", 0), c.get("offset_y", 0)
    t.scale_x, t.scale_y = c.get("scale_x", 1.0), c.get("scale_y", 1.0)
    t.rotation = c.get("rotation", 0.0)
    if "origin" in c:
        if not hasattr(t, "origin"):
            pytest.skip("this Blender has no transform origin")
        t.origin = c["origin"]
    left, right, top, bottom = c.get("crop", (0, 0, 0, 0))
    strip.crop.min_x, strip.crop.max_x, strip.crop.max_y, strip.crop.min_y = left, right, top, bottom
    strip.use_flip_x, strip.use_flip_y = c.get("flip_x", False), c.get("flip_y", False)
    assert compat.clip_size(strip) == (W, H)

    fx, fy = marker_in_render(render_sequencer(bpy, scene, [1], tmp_path / "r")[0])
    p = pick_map.Placement(clip_w=W, clip_h=H, frame_w=FRAME_W, frame_h=FRAME_H, **compat.placement_values(strip))
    back = pick_map.view_to_clip(p, *pick_map.frame_to_view(p, fx, fy))
    assert back is not None, (case, fx, fy)
    assert abs(back[0] - (mx + 4)) <= 1.0 and abs(back[1] - (my + 4)) <= 1.0, (case, back, (fx, fy))
    assert pick_map.pixel(back, p) in {(mx + dx, my + dy) for dx in (3, 4) for dy in (3, 4)}


# --- picks on the strip: saved in the .blend, exported, sent ----------------------------------------

FACE = "vretalk_face1.mp4"  # 700 x 700
SPEECH, OTHER = "vretalk_audio1.wav", "sadtalker_imagine.wav"


@pytest.fixture
def prefs(bpy_addon):
    bpy, _ = bpy_addon
    p = bpy.context.preferences.addons["blender_addon"].preferences
    names = ("checkpoint", "detector", "device", "engine_python")
    saved = {n: getattr(p, n) for n in names}
    yield p
    for n, v in saved.items():
        setattr(p, n, v)


def _two_speakers(bpy, scene, media, tmp_path, n_picks):
    from blender_addon import picks

    from .conftest import add_sound

    face = add_movie(scene, "Face", media / FACE, 3, 11)
    face.frame_final_end = 41  # 30 frames
    add_sound(scene, "Dialogue_A", media / SPEECH, 1, 11)
    b = add_sound(scene, "Dialogue_B", media / OTHER, 2, 21)  # starts 10 frames (0.4 s) into the output
    b.frame_final_end = 41
    for s in (face,):
        s.select = True
    for i, (x, y, t, snd) in enumerate([(200, 300, 0.48, "Dialogue_A"), (520, 310, 0.52, "Dialogue_B")][:n_picks]):
        picks.add_pick(face, x, y, t, 20 + i, 700, 700, snd)
    blend = tmp_path / "proj" / "picks.blend"
    blend.parent.mkdir(exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return blend


def test_picks_survive_save_and_reload(fresh, media, tmp_path):
    bpy, scene = fresh
    from blender_addon import capture, compat, picks

    blend = _two_speakers(bpy, scene, media, tmp_path, 2)
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    face = compat.find_strip(compat.editor(bpy.context.scene), "Face")
    got = [(p.x, p.y, picks.face_time(p), p.frame, p.clip_w, p.sound) for p in picks.picks_of(face)]
    assert got == [(200, 300, 0.48, 20, 700, "Dialogue_A"), (520, 310, 0.52, 21, 700, "Dialogue_B")]
    assert [picks.label(i, p) for i, p in enumerate(picks.picks_of(face))] == [
        "Face 1 (left) \u2190 Dialogue_A", "Face 2 (right) \u2190 Dialogue_B"]
    assert bpy.ops.sequencer.wav2lip_pick_remove(strip="Face", index=0) == {"FINISHED"}
    assert [p.sound for p in picks.picks_of(face)] == ["Dialogue_B"]
    assert capture.choose_strips(bpy.context, bpy.context.scene)[0].name == "Face"


def test_clip_time_of_the_pick_is_the_timing_codes(fresh, media):
    bpy, scene = fresh
    from blender_addon import compat, pick_face

    scene.render.fps = 25
    face = add_movie(scene, "Face", media / "sadtalker_WDA_KatieHill_000.mp4", 1, 11)  # 25 fps
    face.frame_offset_start = 5  # the strip shows from scene frame 16: clip frame 5
    assert compat.media_fps(face) == 25
    assert abs(pick_face.clip_time_at(scene, face, 16) - 5 / 25) < 1e-9
    assert abs(pick_face.clip_time_at(scene, face, 36) - 25 / 25) < 1e-9


@pytest.mark.parametrize("n_picks", [1, 2])
def test_export_jobs_writes_the_picks(n_picks, fresh, prefs, media, dummy_checkpoint, tmp_path):
    import json

    bpy, scene = fresh
    scene.render.fps = 25
    _two_speakers(bpy, scene, media, tmp_path, n_picks)
    prefs.checkpoint, prefs.detector, prefs.device = dummy_checkpoint, "auto", "cpu"
    path = tmp_path / "jobs.jsonl"
    assert bpy.ops.sequencer.wav2lip_export_jobs(filepath=str(path)) == {"FINISHED"}
    (job,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert job["id"] == "Scene/Face@11+30" and job["duration"] == 1.2
    if n_picks == 1:
        assert job["face-at"] == [200, 300] and job["face-time"] == 0.48 and job["audio"] == str(media / SPEECH)
        assert "speaker" not in job
    else:
        # Dialogue_A's file starts with the output (0 s), Dialogue_B's 10 frames later (0.4 s).
        assert job["speaker"] == [[200, 300, f"{media / SPEECH}@0", 0.48], [520, 310, f"{media / OTHER}@0.4", 0.52]]
        assert "audio" not in job and "audio-start" not in job and "face-at" not in job


@pytest.mark.parametrize("n_picks", [0, 1, 2])
def test_sync_sends_the_picks(n_picks, fresh, prefs, media, fake_python, dummy_checkpoint, engine_log, tmp_path):
    """What Sync Lips gives the engine (the stand-in engine parses it with the core's parser)."""
    import json

    bpy, scene = fresh
    scene.render.fps = 25
    _two_speakers(bpy, scene, media, tmp_path, n_picks)
    prefs.checkpoint, prefs.detector, prefs.device, prefs.engine_python = dummy_checkpoint, "auto", "cpu", fake_python
    assert bpy.ops.sequencer.wav2lip_sync(video_strip="Face", audio_strip="Dialogue_A") == {"FINISHED"}
    argv = json.loads(engine_log.read_text())["argv"]
    if n_picks == 0:
        assert argv[argv.index("--audio") + 1] == str(media / SPEECH) and "--face-at" not in argv
    elif n_picks == 1:
        i = argv.index("--face-at")
        assert argv[i:i + 5] == ["--face-at", "200", "300", "--face-time", "0.48"] and "--audio" in argv
    else:
        i = argv.index("--speaker")
        assert argv[i:i + 10] == ["--speaker", "200", "300", f"{media / SPEECH}@0", "0.48",
                                  "--speaker", "520", "310", f"{media / OTHER}@0.4", "0.52"]
        assert "--audio" not in argv


def test_a_trimmed_sound_strip_is_heard_only_where_it_plays(fresh, prefs, media, fake_python, dummy_checkpoint,
                                                             engine_log, tmp_path):
    """Two picks, Dialogue_B cut at frame 31 inside the output (frames 11-40): its speaker gets the
    output seconds it plays in, 0.4-0.8 s, so the engine does not hear the rest of its file."""
    import json

    bpy, scene = fresh
    scene.render.fps = 25
    _two_speakers(bpy, scene, media, tmp_path, 2)
    from blender_addon import compat

    compat.find_strip(compat.editor(scene), "Dialogue_B").frame_final_end = 31
    prefs.checkpoint, prefs.detector, prefs.device, prefs.engine_python = dummy_checkpoint, "auto", "cpu", fake_python
    assert bpy.ops.sequencer.wav2lip_sync(video_strip="Face", audio_strip="Dialogue_A") == {"FINISHED"}
    argv = json.loads(engine_log.read_text())["argv"]
    i = argv.index("--speaker")
    assert argv[i:i + 12] == ["--speaker", "200", "300", f"{media / SPEECH}@0", "0.48",
                              "--speaker", "520", "310", f"{media / OTHER}@0.4", "0.52", "0.4", "0.8"]
