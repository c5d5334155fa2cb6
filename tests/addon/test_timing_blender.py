"""The add-on's scene-time mapping checked against Blender itself (no engine needed):

- audio: Blender's own mixdown of the scene puts each click where the plan says the engine
  will hear it (sound strip offsets, trims, hard trims, 4.5+'s sound_offset);
- video: the sequencer renders, at scene frame V0 + i, the clip frame the plan sends as
  output frame i (trims, hard trims, a 25 fps clip in a 24 fps scene).
"""

from __future__ import annotations

import wave
from fractions import Fraction

import numpy as np
import pytest

from .conftest import add_movie, add_sound, strips

FPS = 24
BURSTS = [0.5, 0.95, 1.6, 2.0, 2.75, 3.3]  # irregular, so no lag can match by period


def write_clicks(path, bursts=BURSTS, rate=16000, seconds=4.0):
    a = np.zeros(int(rate * seconds), np.int16)
    rng = np.random.default_rng(0)
    n = int(0.04 * rate)
    for b in bursts:
        i = int(round(b * rate))
        a[i:i + n] = (rng.uniform(-1, 1, n) * 20000).astype(np.int16)
    with wave.open(str(path), "w") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(a.tobytes())
    return path


def onsets(path, threshold=2000):
    with wave.open(str(path)) as w:
        r, ch = w.getframerate(), w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, ch)[:, 0].astype(float)
    loud = np.abs(x) > threshold
    idx = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    t = idx / r
    return t[np.r_[True, np.diff(t) > 0.1]] if len(t) else t


@pytest.mark.parametrize("sound_start, trim, anim, offset", [
    (5, 0, 0, 0.0),
    (20, 0, 0, 0.0),     # the sound starts after the video's first used frame
    (-10, 6, 0, 0.0),    # starts before the video, front-trimmed
    (3, 0, 12, 0.0),     # hard trim (animation offset)
    (8, 4, 0, 0.25),     # sound_offset (4.5+)
])
def test_audio_mapping_matches_blender_mixdown(fresh, media, tmp_path, sound_start, trim, anim, offset):
    bpy, scene = fresh
    from blender_addon import capture, compat
    from blender_addon.snapshot import plan

    clicks = write_clicks(tmp_path / "clicks.wav")
    face = add_movie(scene, "Face", media / "sadtalker_WDA_KatieHill_000.mp4", 2, 1)
    face.frame_offset_start = 10  # used: 11 ..
    face.frame_offset_end = 110   # .. 90
    snd = add_sound(scene, "Clicks", clicks, 1, sound_start)
    if anim:
        snd.animation_offset_start = anim
    if trim:
        snd.frame_offset_start = trim
    if offset:
        if not hasattr(snd, "sound_offset"):
            pytest.skip("sound_offset needs Blender 4.5")
        snd.sound_offset = offset
    req = plan(capture.strip_info(scene, face), capture.strip_info(scene, snd), compat.scene_fps(scene))
    assert req.audio_cut is None

    scene.frame_start, scene.frame_end = 1, 120
    mix = tmp_path / "mix.wav"
    bpy.ops.sound.mixdown(filepath=str(mix), container="WAV", codec="PCM", format="S16", mixrate=48000, accuracy=256)
    heard = []
    for t in onsets(mix):
        f = scene.frame_start + t * FPS  # (fractional) scene frame where the click is heard
        if req.insert_frame <= f < req.insert_frame + req.used_frames:
            heard.append(req.audio_start + (f - req.insert_frame) / FPS)  # file time the engine uses there
    assert len(heard) >= 3
    for h in heard:
        assert min(abs(h - b) for b in BURSTS) < 0.003, (h, heard)


def test_trimmed_sound_cut_matches_blender_mixdown(fresh, media, tmp_path):
    """A sound strip trimmed on both sides inside the video: the cut WAV the engine gets holds
    exactly the clicks Blender plays, at the same times."""
    bpy, scene = fresh
    from blender_addon import capture, compat
    from blender_addon.snapshot import plan

    clicks = write_clicks(tmp_path / "clicks.wav")
    face = add_movie(scene, "Face", media / "sadtalker_WDA_KatieHill_000.mp4", 2, 1)
    face.frame_offset_end = 100  # used 1..100
    snd = add_sound(scene, "Clicks", clicks, 1, 1)
    snd.frame_offset_start = 20  # plays frames 21 .. 64: only the clicks at 0.95, 1.6, 2.0 s
    snd.frame_offset_end = 32
    req = plan(capture.strip_info(scene, face), capture.strip_info(scene, snd), compat.scene_fps(scene))
    assert req.audio_cut is not None
    cut = capture.write_audio_cut(req.audio_cut, str(tmp_path / "heard.wav"))
    scene.frame_start, scene.frame_end = 1, 100
    mix = tmp_path / "mix.wav"
    bpy.ops.sound.mixdown(filepath=str(mix), container="WAV", codec="PCM", format="S16", mixrate=48000, accuracy=256)
    blender = onsets(mix)
    ours = onsets(cut)
    assert len(blender) == 3 and len(ours) == 3
    assert np.allclose(blender, ours, atol=0.003)


def _gray_clip(path, n=60, fps=25):
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(fps))
        st.width = st.height = 64
        st.pix_fmt = "yuv444p"
        st.options = {"qp": "0"}
        for k in range(n):
            img = np.full((64, 64, 3), 16 + 3 * k, np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def test_video_mapping_matches_blender_render(fresh, tmp_path):
    bpy, scene = fresh
    from blender_addon import capture, compat
    from blender_addon.snapshot import plan

    clip = _gray_clip(tmp_path / "gray.mp4")  # frame k has gray level 16 + 3k; 25 fps
    face = add_movie(scene, "Face", clip, 2, 5)
    face.animation_offset_start = 4  # hard trim: content frame 0 = clip frame 4
    face.frame_offset_start = 7
    face.frame_offset_end = 20
    snd = add_sound(scene, "S", write_clicks(tmp_path / "c.wav"), 1, 1)
    req = plan(capture.strip_info(scene, face), capture.strip_info(scene, snd), compat.scene_fps(scene))
    assert req.start_frame == 7 + 4 and req.insert_frame == face.frame_final_start

    r = scene.render
    r.resolution_x = r.resolution_y = 64
    r.resolution_percentage = 100
    r.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"
    for i in (0, 5, req.used_frames - 1):
        scene.frame_set(req.insert_frame + i)
        out = tmp_path / f"f{i}.png"
        r.filepath = str(out)
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(str(out))
        px = np.array(img.pixels[:]).reshape(-1, 4)[:, 0].mean() * 255
        bpy.data.images.remove(img)
        k = round((px - 16) / 3)
        assert k == req.start_frame + i, (i, px)
