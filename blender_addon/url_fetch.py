"""Video from a URL onto the timeline: the download on the warm engine and the strips it ends in.

Owns: the one running download (`active_fetch`; started by `start_fetch`, stopped by
`cancel_active`), what may start one (http/https only; Blender's Allow Online Access on 4.2+),
where its files go (job_settings.media_folder: `//media/` beside the .blend, the private temp
folder while the file is unsaved) and `add_strips`: the movie strip and its sound strip at the
playhead. The operators (url_operators.py) and the panel (panel.py) use these.

The engine does the download (serve's fetch op: `wav2lip fetch`'s arguments as an EngineJob of
op OP_FETCH, the same queue, progress, cancel and errors as a sync), in its own process: Blender
only polls. A cancelled download leaves nothing (the engine's fetch writes into a temp folder
and renames the whole file into place). The engine's fetch cache is the media folder itself: the
same URL and range again finds the file there without going online.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple
from urllib.parse import urlsplit

import bpy
from bpy.types import Context

from . import capture, compat, engine, job_settings
from .compat import StripLike
from .engine_jobs import EngineJob, JobQueue
from .engine_python import engine_env
from .job_state import DONE, FAILED
from .snapshot import SnapshotError, first_free_channel
from .wire import protocol

P = protocol
SOURCE_TAG = "wav2lip_source_url"  # the address a fetched strip came from (a custom property)


class FetchRefused(Exception):
    """A download that is not started: one line saying why and what to do."""


@dataclass
class Fetch:
    """One download and where its strips go (fixed when it started: the playhead then)."""

    job: EngineJob
    url: str
    scene_name: str
    channel: int
    frame: int
    folder: str
    warnings: List[str] = field(default_factory=list)
    handled: bool = False  # its strips were added (or its failure reported)


_active: Optional[Fetch] = None


def active_fetch() -> Optional[Fetch]:
    """The download not yet handled (running, or finished and waiting for its strips)."""
    return _active if _active is not None and not _active.handled else None


def online_refusal() -> str:
    """Why a download may not start now ('' when it may): Blender 4.2+'s Allow Online Access
    is off (also under --offline-mode). Blender 3.4 .. 4.1 have no such setting."""
    if compat.online_access() is False:
        return f"Online access is off in Blender: {compat.ONLINE_ACCESS_HOW}"
    return ""


def check_url(url: str) -> str:
    """The address, stripped; FetchRefused for anything but an http(s) address with a host."""
    url = (url or "").strip()
    if not url:
        raise FetchRefused("give the address of a video (https://...)")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise FetchRefused(f"only http:// and https:// addresses can be downloaded, not {url[:80]}")
    return url


def fetch_args(url: str, start: float, end: float, folder: str) -> List[str]:
    """`wav2lip fetch`'s arguments: 0 for `start` is the video's start, 0 for `end` its end."""
    args = [url, P.OPT_OUT, folder]
    if start > 0:
        args += ["--from", P.plain_number(start)]
    if end > 0:
        args += ["--to", P.plain_number(end)]
    return args


def start_fetch(context: Context, url: str, start: float = 0.0, end: float = 0.0, channel: int = 1,
                op: Any = None) -> Fetch:
    """Start downloading `url` (its `start`-`end` seconds) on the session's engine, for strips
    at the playhead from `channel` up. FetchRefused says why it cannot start."""
    global _active
    if active_fetch() is not None:
        raise FetchRefused("a download is already running; wait for it or cancel it")
    refusal = online_refusal()
    if refusal:
        raise FetchRefused(refusal)
    url = check_url(url)
    if start < 0 or end < 0 or (end > 0 and end <= start):
        raise FetchRefused(f"the range {start:g}-{end:g} s is empty: To must come after From (0: the end)")
    scene = compat.sequencer_scene(context)
    if scene is None:
        raise FetchRefused("no scene to add the movie to")
    folder, warning = job_settings.media_folder()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise FetchRefused(f"cannot create the media folder {folder}: {exc.strerror or exc}") from None
    s = job_settings.settings_from(context, op)
    job = EngineJob(label=url, op=P.OP_FETCH)
    job.args = fetch_args(url, start, end, folder)
    env = engine_env()
    fetch = Fetch(job=job, url=url, scene_name=scene.name, channel=max(1, int(channel)),
                  frame=int(scene.frame_current), folder=folder, warnings=[warning] if warning else [])
    _active = fetch
    JobQueue([job], lambda: engine.session_engine_for(s.engine_python, env)).start()
    return fetch


def cancel_active() -> None:
    """Stop the running download (nothing of it is kept); a finished one is left to its operator."""
    fetch = active_fetch()
    if fetch is not None and not fetch.job.finished:
        fetch.job.cancel()


def drop_active() -> None:
    """Cancel the download and forget it (another file is opened, the add-on is disabled)."""
    global _active
    fetch, _active = _active, None
    if fetch is not None:
        fetch.handled = True
        if not fetch.job.finished:
            fetch.job.cancel()


def finish(fetch: Fetch) -> Tuple[str, str, List[StripLike]]:
    """Handle a finished download: (status, message, the strips added). Its strips go in only
    when it succeeded; a failure's message is the engine's one line."""
    global _active
    fetch.handled = True
    if _active is fetch:
        _active = None
    p = fetch.job.poll()
    if p.status != DONE or not p.out:
        return p.status, p.message or p.status, []
    try:
        strips = add_strips(fetch, p.out, str(p.info.get("title") or ""), float(p.info.get("duration") or 0.0))
    except (SnapshotError, RuntimeError, ReferenceError) as exc:
        return FAILED, f"downloaded to {p.out} but it could not be added: {exc}", []
    where = f"on channel {strips[0].channel} at frame {fetch.frame}"
    return DONE, f"Added '{strips[0].name}' {where}" + ("" if len(strips) > 1 else " (the clip has no sound)"), strips


def add_strips(fetch: Fetch, path: str, title: str, duration: float) -> List[StripLike]:
    """The movie strip at the playhead on the first free channel from the chosen one up, its
    sound strip on the first free channel above it; both selected, the movie active."""
    scene, ed = capture.scene_editor(fetch.scene_name, f"the clip is at {path}")
    name = (title or os.path.splitext(os.path.basename(path))[0])[:60]
    first = not compat.all_strips(ed)
    n = max(1, math.ceil(duration * compat.scene_fps(scene))) if duration > 0 else 1
    start = fetch.frame
    channel = first_free_channel(fetch.channel - 1, start, start + n, capture.occupied(scene))
    movie = compat.new_movie(ed, name, path, channel, start, fit_method="FIT")
    clip_fps, scene_fps = compat.media_fps(movie), compat.scene_fps(scene)
    if clip_fps > 0 and abs(clip_fps - scene_fps) > 1e-3:
        # A movie strip shows one clip frame per scene frame: at another rate its picture drifts
        # from its sound. The first strip sets the scene's rate, as Add > Movie does.
        if first:
            set_scene_fps(scene, clip_fps)
        else:
            fetch.warnings.append(f"the clip runs at {clip_fps:g} fps and the scene at {scene_fps:g} fps: its "
                                  "picture plays at the scene's rate, off its sound; Lip Sync times it correctly")
    end = start + int(movie.frame_final_duration)
    strips = [movie]
    try:
        above = first_free_channel(channel, start, end, capture.occupied(scene))
        strips.append(compat.new_sound(ed, name, path, above, start))
    except (RuntimeError, SnapshotError):
        pass  # no sound in the file (or no channel left for it): the movie alone
    relative = ""
    if bpy.data.filepath:
        try:
            relative = bpy.path.relpath(path)
        except ValueError:  # another drive (Windows): keep it absolute
            pass
    for s in compat.current_strips(ed):  # the new pair alone selected, as Add > Movie leaves it
        s.select = False
    for s in strips:
        if relative:
            if s.type == compat.SOUND:
                sound: Any = s
                sound.sound.filepath = relative
            else:
                s.filepath = relative
        compat.set_strip_tag(s, SOURCE_TAG, fetch.url)
        s.select = True
    compat.set_active_strip(ed, movie)
    return strips


def set_scene_fps(scene: Any, fps: float) -> None:
    """The scene's frame rate as Blender writes a clip's: a whole number, else N / base (29.97: 30 / 1.001)."""
    whole = round(fps)
    if abs(fps - whole) < 1e-3:
        scene.render.fps, scene.render.fps_base = int(whole), 1.0
    else:
        top = math.ceil(fps)
        scene.render.fps, scene.render.fps_base = int(top), top / fps


def progress_text(fetch: Fetch) -> Tuple[float, str]:
    """(fraction, text) for the panel: the bytes so far (a range cut's total is not known)."""
    p = fetch.job.poll()
    if p.stage == P.STAGE_FETCH:
        return (p.done / p.total if p.total > 0 else 0.0), p.text
    return 0.0, "Starting the engine..." if p.stage in ("queued", "starting") else p.text
