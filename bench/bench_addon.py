"""Add-on timings through its own client, inside bpy (Blender as a Python module), real engine:
request-to-first-progress cold vs warm (a 2 s shot), and Preview press-to-strip on a warm engine
(3 s around the playhead, and a 1 s scene preview range). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_addon.py CHECKPOINT [MEDIA_DIR]      (from the repository root)
"""
import os
import sys
import tempfile
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, root)
ckpt = os.path.abspath(sys.argv[1])
media = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "..", "shared", "media"))
out = tempfile.mkdtemp(prefix="wav2lip-bench-addon-")
import bpy  # noqa: E402,I001  (bpy first: it puts addon_utils on the path)
import addon_utils  # noqa: E402

addon_utils.enable("blender_addon", default_set=True, handle_error=None)
from blender_addon import compat, engine, jobs  # noqa: E402

scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = 24, 1.0
ed = compat.editor(scene, create=True)
face = compat.new_movie(ed, "Face", os.path.join(media, "sadtalker_WDA_KatieHill_000.mp4"), 2, 1)
face.frame_offset_end = face.frame_duration - 120  # 5 s used
compat.new_sound(ed, "Speech", os.path.join(media, "vretalk_audio1.wav"), 1, 1)
kw = dict(checkpoint=ckpt, engine_python=sys.executable, device="cpu", detector="box", box=(150, 460, 130, 410),
          output_dir=out, video_strip="Face")
for s in compat.all_strips(ed):
    s.select = s.name == "Face"
compat.set_active_strip(ed, face)
engine.shutdown()



def timed(label, **more):
    t0 = time.monotonic()
    assert bpy.ops.sequencer.wav2lip_sync(**kw, **more) == {"FINISHED"}
    t1 = time.monotonic()
    j = jobs.last_batch().jobs[0]
    r = j.runner
    print(f"{label}: request->first progress {r.first_progress_at - r.submitted_at:.3f} s, "
          f"press->strip on timeline {t1 - t0:.2f} s, frames {j.request.used_frames}, warm={r.poll().warm}", flush=True)


# a 2 s shot: frames 1..48
face.frame_offset_end = face.frame_duration - 48
timed("2 s shot, cold engine")
timed("2 s shot, warm engine")
face.frame_offset_end = face.frame_duration - 120
scene.frame_current = 60
timed("Preview 3 s around the playhead, warm", preview=True)
timed("Preview 3 s around the playhead, warm (again)", preview=True)
scene.use_preview_range = True
scene.frame_preview_start, scene.frame_preview_end = 50, 73
timed("Preview of a 1 s preview range, warm", preview=True)
engine.shutdown()
addon_utils.disable("blender_addon", default_set=True, handle_error=None)
