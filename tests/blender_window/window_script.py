"""Runs inside a real Blender program with its window open (Xvfb), driven by test_panel_window.py:

    blender --factory-startup --python window_script.py -- CONFIG.json

Everything happens from bpy.app.timers while Blender's event loop runs, as for a user: the add-on
is enabled from the checkout, a Sequencer with a movie and a sound strip is set up, Sync Lips is
invoked in the Sequencer (so invoke, the modal handler and its timer run for real), Esc is pressed
with xdotool (real X events through Blender's own event handling) with the mouse over other
places and during playback, and the Cancel operator is run. Then the panel's own buttons are
clicked with the mouse, as a user does (a button press, unlike a script call, reuses the
operator's last properties): Preview, Sync, Sync again, an undo, and Sync 2 Strips with Cancel
All once the first result is in. What happened is written to the results JSON for the test to
judge; nothing is asserted here. Standard library and bpy only (a user's Blender Python has
nothing else).
"""

from __future__ import annotations

import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from window_kit import (  # noqa: E402
    COPY_KEY, NO_BUTTON, CONFIG, add_copy_key, T0, addon_module, log, mouse_to, open_saved_file_with_addon, override,
    pointer, rect, region_of, results, run, seq_area, show_lip_sync_tab, window, xdo)

results.update({"events_seen": [], "panel_drawn": [], "job_progress": {}, "copy_keys": 0})


def mouse_over_sidebar() -> None:
    """Over the sidebar below its panels (no button there to take the events)."""
    ui = region_of(seq_area(), "UI")
    mouse_to(ui.x + ui.width // 2, ui.y + ui.height // 4)


class TEST_OT_event_probe(bpy.types.Operator):
    """Records the Esc presses and Ctrl+Wheel events that reach the window, with the mouse
    position Blender saw (so the test knows each real X event arrived where it was aimed)."""

    bl_idname = "wm.test_event_probe"
    bl_label = "Event probe"

    def invoke(self, context, event):
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == COPY_KEY[0] and event.value == "PRESS" and event.ctrl and event.shift and event.alt:
            results["copy_keys"] += 1
        if event.type in {"ESC", "WHEELDOWNMOUSE", "WHEELUPMOUSE"} and event.value == "PRESS":
            results["events_seen"].append([round(time.monotonic() - T0, 3), event.type, event.ctrl,
                                           event.mouse_x, event.mouse_y])
        return {"PASS_THROUGH"}



def strip_names() -> list:
    ed = bpy.context.scene.sequence_editor
    coll = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
    return sorted(s.name for s in coll)


def lipsync_files() -> list:
    folder = os.path.join(CONFIG["work"], "lipsync")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# A key that copies the Python command of the button under the mouse (Blender's "Copy Python
# Command", given a key here): how the script finds the panel's buttons, whose places Blender's
# Python does not tell.
SYNC_OP = "bpy.ops.sequencer.wav2lip_sync("
CANCEL_OP = "bpy.ops.sequencer.wav2lip_cancel("


def wait_for_probe(key: str, before):
    """Until the probe has seen what changes results[key] (at most 2 s): then Blender has handled
    that event completely (the probe, a window handler, sees each event first)."""
    end = time.monotonic() + 2.0
    while results[key] == before and time.monotonic() < end:
        yield 0.001


def button_command(x: int, y: int):
    """The Python command of the button at window position (x, y), NO_BUTTON where there is none
    (a scenario step: `cmd = yield from button_command(x, y)`)."""
    wm = bpy.context.window_manager
    wm.clipboard = NO_BUTTON
    if pointer.get("at") != (x, y):
        mouse_to(x, y, sync=True)
        # One step of Blender's event loop handles the move (leaving a button, Blender queues a
        # mouse move of its own, which highlights the button now under the mouse: it comes before
        # the key pressed now).
        yield 0.001
    keys = results["copy_keys"]
    xdo("key", COPY_KEY[1])
    yield from wait_for_probe("copy_keys", keys)  # (the same step handled the copy)
    return wm.clipboard


def find_button(want, x_parts=(0.3,), step=24, depth=None, near=None):
    """(x, y) of the sidebar's first button, from the top (or nearest to y `near` first), whose
    command `want(command)` accepts; None when there is none. Probed `step` px apart: less than a
    button's height here (20 px at the interface size 1, 25 at 1.25; the Sync row 1.4 times that)."""
    ui = region_of(seq_area(), "UI")
    top = ui.y + ui.height - 1
    t0, probes = time.monotonic(), 0
    ys = list(range(top - 10, max(ui.y, top - (depth or ui.height)), -step))  # default: the whole sidebar
    if near is not None:
        ys = [near] + sorted(ys, key=lambda y: abs(y - near))
    for y in ys:
        for part in x_parts:
            x = ui.x + int(ui.width * part)
            cmd = yield from button_command(x, y)
            probes += 1
            if want(cmd):
                log("scan", probes=probes, seconds=round(time.monotonic() - t0, 2))
                return x, y
    log("scan", probes=probes, seconds=round(time.monotonic() - t0, 2))
    return None


_buttons: dict = {}


def find_sync_buttons():
    """The idle panel's Sync and Preview buttons: one row, Sync on the left."""
    pos = yield from find_button(is_sync)
    log("found button", name="sync", pos=pos)
    if pos is None:
        return
    _buttons["sync"] = pos
    ui = region_of(seq_area(), "UI")
    right = (ui.x + int(ui.width * 0.7), pos[1])
    cmd = yield from button_command(*right)
    if is_preview(cmd):
        _buttons["preview"] = right
    else:
        pos = yield from find_button(is_preview, (0.7, 0.3))
        if pos is not None:
            _buttons["preview"] = pos
    log("found button", name="preview", pos=_buttons.get("preview"))


def click_button(name: str, want):
    """Click the panel's button `name` with the mouse, after checking that it is still there
    (found again when the panel has changed since); returns whether it was clicked."""
    pos = _buttons.get(name)
    near = None
    if pos is not None:
        cmd = yield from button_command(*pos)
        if not want(cmd):
            near, pos = pos[1], None
    if pos is None:
        pos = yield from find_button(want, (0.3, 0.7), near=near)
        log("found button", name=name, pos=pos)
    if pos is None:
        return False
    _buttons[name] = pos
    xdo("click", 1)
    return True


def is_sync(cmd: str) -> bool:
    return cmd.startswith(SYNC_OP) and "preview=True" not in cmd


def is_preview(cmd: str) -> bool:
    return cmd.startswith(SYNC_OP) and "preview=True" in cmd


def is_cancel(cmd: str) -> bool:
    return cmd.startswith(CANCEL_OP)


def screenshot(name: str) -> None:
    path = os.path.join(CONFIG["work"], name)
    with override():
        bpy.ops.screen.screenshot(filepath=path)
    log("screenshot", path=path)
    results.setdefault("screenshots", {})[name] = path


def start_job(mode: str) -> object:
    os.environ["FAKE_ENGINE_MODE"] = mode
    with override():
        res = bpy.ops.sequencer.wav2lip_sync("INVOKE_DEFAULT")
    job = addon_module("operators").active_job()
    log("invoke", mode=mode, result=sorted(res), job=job is not None)
    return job


def job_state(job) -> dict:
    p = job.engine_job.poll()
    active = addon_module("operators").active_job()
    return {"active": active is job, "status": p.status, "finished": job.engine_job.finished,
            "fraction": p.fraction, "text": p.text}


def watch(job, key: str, seconds: float, until_finished: bool = False):
    """Record the job's progress every 0.1 s (a generator step of the scenario)."""
    samples = results["job_progress"].setdefault(key, [])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        st = job_state(job)
        samples.append([round(time.monotonic() - T0, 3), st["fraction"], st["text"]])
        if until_finished and addon_module("operators").active_job() is None:
            return
        yield 0.1


def press_escape(job):
    """Press Esc, then wait until Blender has handled it: a handler behind the job's saw it (the
    job passed it on) or the job stopped (it took it). A scenario step."""
    seen = sum(1 for e in results["events_seen"] if e[1] == "ESC")
    xdo("key", "Escape")
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        if sum(1 for e in results["events_seen"] if e[1] == "ESC") > seen:
            break
        if addon_module("operators").active_job() is not job:
            break
        yield 0.1
    yield 0.3


def scenario():
    prefs = yield from open_saved_file_with_addon()
    prefs.engine_python = CONFIG["engine_python"]
    prefs.checkpoint = CONFIG["checkpoint"]
    # A larger interface for the README's picture (only this session: nothing is saved).
    bpy.context.preferences.view.ui_scale = CONFIG.get("ui_scale", 1.0)
    results["ui_scale"] = bpy.context.preferences.view.ui_scale
    os.environ["FAKE_ENGINE_PACE"] = str(CONFIG.get("pace", 0.08))

    # Watch what the panel draws: every call of compat.progress_bar, with its factor and text.
    compat = addon_module("compat")
    real_progress_bar = compat.progress_bar

    def spy(layout, factor, text, *args, **kwargs):
        results["panel_drawn"].append([round(time.monotonic() - T0, 3), factor, text])
        return real_progress_bar(layout, factor, text, *args, **kwargs)

    compat.progress_bar = spy
    results["progress_widget"] = bool(compat.HAS_PROGRESS_WIDGET)

    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    ed = scene.sequence_editor_create()
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    face = coll.new_movie(name="Face", filepath=CONFIG["clip"], channel=1, frame_start=1)
    coll.new_sound(name="Dialogue", filepath=CONFIG["sound"], channel=2, frame_start=1)
    scene.frame_start, scene.frame_end = 1, face.frame_final_end - 1
    for s in coll:
        s.select = True
    ed.active_strip = face
    results["face"] = {"frames": face.frame_final_duration, "start": face.frame_final_start}

    # The biggest editor (the 3D viewport) becomes a Sequencer; its sidebar opens next step
    # (a freshly switched area has no regions to set yet).
    big = max(window().screen.areas, key=lambda a: a.width * a.height)
    big.type = "SEQUENCE_EDITOR"
    yield 0.3
    seq_area().spaces.active.show_region_ui = True
    bpy.ops.wm.save_mainfile()
    with override():
        bpy.ops.ed.undo_push(message="Scene ready")
    yield 1.0

    area = seq_area()
    ui = region_of(area, "UI")
    results["window"] = {"x": window().x, "y": window().y, "width": window().width, "height": window().height}
    results["sequencer_area"] = rect(area)
    results["sidebar"] = rect(ui)
    results["regions"] = {r.type: rect(r) for r in area.regions}
    results["outliner"] = rect(region_of(next(a for a in window().screen.areas if a.type == "OUTLINER"), "WINDOW"))
    bpy.utils.register_class(TEST_OT_event_probe)
    with override():
        bpy.ops.wm.test_event_probe("INVOKE_DEFAULT")

    # Show the Lip Sync tab (the add-on's comes last): directly where Blender can (4.2+), else
    # the mouse wheel over the tab column until the panel draws (3.4 has no API for the tab).
    shown, attempt = yield from show_lip_sync_tab(ui)
    log("lip sync tab", shown=shown, attempts=attempt)
    results["tab_shown"] = shown
    yield 0.5
    screenshot("idle.png")

    # 1. A job that finishes: progress moves, the strip appears, one undo removes it.
    before = strip_names()
    job = start_job("ok")
    yield from watch(job, "ok", 30.0, until_finished=True)
    yield 0.5
    results["after_finish"] = {"strips": strip_names(), "files": lipsync_files(), "state": job_state(job)}
    new = [n for n in strip_names() if n not in before]
    if new:
        s = scene.sequence_editor.sequences_all[new[0]] if not hasattr(scene.sequence_editor, "strips_all") \
            else scene.sequence_editor.strips_all[new[0]]
        results["inserted"] = {"name": s.name, "channel": s.channel, "start": s.frame_final_start,
                               "frames": s.frame_final_duration, "filepath": s.filepath}
    with override():
        res = bpy.ops.ed.undo()
    yield 0.5
    results["after_undo"] = {"result": sorted(res), "strips": strip_names()}
    log("undo", **results["after_undo"])

    # 2. A long job: Esc elsewhere, and Esc during playback, leave it running; Cancel stops it.
    job = start_job("slow")
    yield from watch(job, "slow", 1.5)
    screenshot("running.png")
    esc = results["esc"] = {}
    for place, region in (("outliner", region_of(next(a for a in window().screen.areas if a.type == "OUTLINER"),
                                                  "WINDOW")),
                          ("sequencer timeline", region_of(seq_area(), "WINDOW"))):
        mouse_to(region.x + region.width // 2, region.y + region.height // 2)
        yield from press_escape(job)
        esc[place] = job_state(job)
        log("esc over " + place, **esc[place])

    mouse_over_sidebar()
    with override():
        bpy.ops.screen.animation_play()
    yield 0.8
    playing_before = bpy.context.screen.is_animation_playing
    yield from press_escape(job)
    esc["during playback"] = dict(job_state(job), playing_before=playing_before,
                                  playing_after=bpy.context.screen.is_animation_playing)
    log("esc during playback", **esc["during playback"])
    if bpy.context.screen.is_animation_playing:  # (so the rest does not run with playback on)
        with override():
            bpy.ops.screen.animation_cancel(restore_frame=True)
    yield from watch(job, "slow", 0.5)

    with override(region_type="UI"):
        ready = bpy.ops.sequencer.wav2lip_cancel.poll()  # (False: no job left to cancel)
        res = bpy.ops.sequencer.wav2lip_cancel() if ready else {"NOT RUN: no job"}
    yield 1.0
    results["cancel_button"] = dict(job_state(job), result=sorted(res), strips=strip_names(),
                                    files=lipsync_files(), workdir_exists=job.engine_job.workdir.exists())
    log("cancel button", **results["cancel_button"])

    # 3. Esc with the mouse over the Lip Sync panel and nothing playing: cancels.
    job = start_job("slow")
    yield from watch(job, "slow2", 1.0)
    mouse_over_sidebar()
    yield 0.5
    results["esc_over_panel_pressed_at"] = round(time.monotonic() - T0, 3)
    yield from press_escape(job)
    results["esc_over_panel"] = dict(job_state(job), strips=strip_names(), files=lipsync_files(),
                                     workdir_exists=job.engine_job.workdir.exists())
    log("esc over the panel", **results["esc_over_panel"])

    # 4. Two shots at once: both movie strips selected (each finds the sound under it), one
    #    batch on the warm engine; each result is inserted as it finishes, one undo step each.
    scene = bpy.context.scene  # (undo replaced the data: fresh references)
    coll = scene.sequence_editor.strips if hasattr(scene.sequence_editor, "strips") else scene.sequence_editor.sequences
    face = coll["Face"]
    face2 = coll.new_movie(name="Face2", filepath=CONFIG["clip"], channel=1, frame_start=face.frame_final_end + 10)
    face2.frame_offset_end = max(0, face2.frame_duration - 40)
    coll.new_sound(name="Dialogue2", filepath=CONFIG["sound"], channel=2, frame_start=face2.frame_final_start)
    for s in coll:
        s.select = s.name in ("Face", "Face2")
    scene.sequence_editor.active_strip = face2
    face2_span = (face2.frame_final_start, face2.frame_final_duration)
    with override():
        bpy.ops.ed.undo_push(message="Second shot ready")
    yield 0.5
    before = strip_names()
    multi_started = round(time.monotonic() - T0, 3)
    job = start_job("ok")
    operators = addon_module("operators")
    batch = operators.active_batch()
    seen = []
    end = time.monotonic() + 60
    while operators.active_batch() is not None and time.monotonic() < end:
        names = strip_names()
        seen.append([round(time.monotonic() - T0, 3), [n for n in names if n not in before]])
        yield 0.1
    yield 0.5
    multi = results["multi"] = {
        "started": multi_started, "jobs": len(batch.jobs) if batch is not None else 0,
        "sounds": [j.request.sound_name for j in batch.jobs] if batch is not None else [],
        "warm": [j.engine_job.poll().warm for j in batch.jobs] if batch is not None else [],
        "pids": [j.engine_job.pid for j in batch.jobs] if batch is not None else [],
        "inserted_over_time": seen, "strips": strip_names(), "files": lipsync_files(),
        "face2": {"start": face2_span[0], "frames": face2_span[1]}}
    scene = bpy.context.scene
    ed = scene.sequence_editor
    allstrips = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
    multi["inserted"] = {n: [allstrips[n].channel, allstrips[n].frame_final_start, allstrips[n].frame_final_duration]
                         for n in strip_names() if n not in before}
    undone = []
    for _ in range(2):
        with override():
            res = bpy.ops.ed.undo()
        yield 0.5
        undone.append([sorted(res), strip_names()])
    multi["undo"] = undone
    multi["before"] = before
    results["engine_pid"] = addon_module("engine").session_pid()  # still warm: Blender's exit stops it
    log("multi", **{k: multi[k] for k in ("jobs", "inserted", "undo")})

    # 5. The panel's own buttons, clicked with the mouse: Preview, then Sync (the whole strip, not
    #    a preview), then Sync again (it replaces the strip's own result), then one undo.
    add_copy_key()
    scene = bpy.context.scene
    ed = scene.sequence_editor
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    for s in coll:
        s.select = s.name == "Face"
    ed.active_strip = coll["Face"]
    scene.frame_current = 40
    with override():
        bpy.ops.ed.undo_push(message="Face selected")
    yield 0.5
    clicks = results["clicks"] = {"files_before": lipsync_files()}
    yield from find_sync_buttons()
    for step, name, want in (("preview", "preview", is_preview), ("sync", "sync", is_sync),
                             ("sync again", "sync", is_sync)):
        batch = yield from run_clicked(name, want)
        clicks[step] = after_click(batch)
        log("clicked " + step, **{k: clicks[step][k] for k in ("clicked", "preview", "jobs")})
    with override():
        res = bpy.ops.ed.undo()
    yield 0.5
    clicks["undo"] = {"result": sorted(res), "strips": strip_table(), "files": lipsync_files()}
    log("undo after the clicks", **clicks["undo"])

    # 6. Sync 2 Strips, then Cancel All once the first result is in (slower jobs: a new engine).
    scene = bpy.context.scene
    ed = scene.sequence_editor
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    for s in coll:
        s.select = s.name in ("Face", "Face2")
    ed.active_strip = coll["Face2"]
    os.environ["FAKE_ENGINE_PACE"] = "0.25"
    with override():
        bpy.ops.ed.undo_push(message="Two shots selected")
    yield 0.5
    sync_batch = addon_module("sync_batch")
    cancel_all = results["cancel_all"] = {"strips_before": strip_table()}
    clicked = yield from click_button("sync", is_sync)
    batch = None
    end = time.monotonic() + 10
    while clicked and batch is None and time.monotonic() < end:
        batch = sync_batch.active_batch()
        yield 0.05
    if batch is not None:
        yield from find_button_while_running(batch)
        end = time.monotonic() + 60
        while sync_batch.active_batch() is batch and not batch.jobs[0].outcome and time.monotonic() < end:
            yield 0.1
        cancel_all["first_inserted_before_cancel"] = bool(batch.jobs[0].outcome)
        cancel_all["second_running"] = len(batch.jobs) > 1 and not batch.jobs[1].engine_job.finished
        cancel_all["cancel_clicked"] = yield from click_button("cancel", is_cancel)
        end = time.monotonic() + 10
        while sync_batch.active_batch() is batch and time.monotonic() < end:
            yield 0.1
        yield 0.5
        cancel_all.update(jobs=len(batch.jobs), outcomes=[j.outcome for j in batch.jobs],
                          statuses=[j.engine_job.poll().status for j in batch.jobs])
    cancel_all.update(clicked=clicked, strips=strip_table(), files=lipsync_files())
    log("cancel all", **{k: cancel_all.get(k) for k in ("clicked", "cancel_clicked", "outcomes", "statuses")})
    os.environ["FAKE_ENGINE_PACE"] = str(CONFIG.get("pace", 0.08))

    # What the user was told: the Info editor's reports, copied through the clipboard.
    info = next(a for a in window().screen.areas if a.type == "OUTLINER")
    info.type = "INFO"
    yield 0.5
    with override(info):
        bpy.ops.info.select_all(action="SELECT")
        bpy.ops.info.report_copy()
    results["reports"] = bpy.context.window_manager.clipboard.splitlines()
    # The undo steps' names, as Edit > Undo History lists them (printed on Blender's stdout).
    print("window_script: undo steps follow", flush=True)
    bpy.context.window_manager.print_undo_steps()


def strip_table() -> dict:
    """Every strip: channel, first frame, frames, file name (movies), selected."""
    ed = bpy.context.scene.sequence_editor
    coll = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
    return {s.name: {"channel": s.channel, "start": s.frame_final_start, "frames": s.frame_final_duration,
                     "file": os.path.basename(bpy.path.abspath(s.filepath)) if s.type == "MOVIE" else "",
                     "select": s.select}
            for s in coll}


def run_clicked(name: str, want):
    """Click a button that starts a batch, and wait for the batch to end; the batch (or None)."""
    sync_batch = addon_module("sync_batch")
    last = sync_batch.last_batch()
    clicked = yield from click_button(name, want)
    batch = None
    end = time.monotonic() + 60
    while clicked and time.monotonic() < end:
        batch = sync_batch.active_batch() or batch
        if sync_batch.active_batch() is None and sync_batch.last_batch() is not last:
            batch = sync_batch.last_batch()
            break
        yield 0.1
    yield 0.5
    return batch


def after_click(batch) -> dict:
    scene = bpy.context.scene
    capture = addon_module("capture")
    with override():
        pairs = capture.choose_pairs(bpy.context, scene)
    return {"clicked": batch is not None, "preview": batch.preview if batch is not None else None,
            "jobs": [[j.request.source_name, j.request.insert_frame, j.request.used_frames, os.path.basename(j.dest),
                      j.engine_job.poll().status] for j in batch.jobs] if batch is not None else [],
            "strips": strip_table(), "files": lipsync_files(),
            "pairs": [[v.name, a.name if a is not None else None] for v, a in pairs]}


def find_button_while_running(batch):
    """Find the running panel's Cancel button (the panel looks different while a batch runs)."""
    if "cancel" in _buttons:
        return
    pos = yield from find_button(is_cancel)
    log("found button", name="cancel", pos=pos)
    if pos is not None:
        _buttons["cancel"] = pos


run(scenario())
