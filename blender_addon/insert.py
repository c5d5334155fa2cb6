"""Put a finished clip on the timeline, where its source strip is (or was), in place of the
source's earlier result and preview strips (tagged with the source's name, so the next one finds
them); the strip is named after its file. The source stays selected, the result does not: the
panel goes on offering the source."""

from __future__ import annotations

import os
from typing import Any, List, Optional

import bpy

from . import capture, compat
from .compat import StripLike
from .sync_batch import PREVIEW_SUFFIX, PREVIEW_TAG, RESULT_TAG, Job, strip_state
from .snapshot import first_free_channel


def _remove(ed: Any, strips: List[StripLike]) -> List[str]:
    """Remove the strips; the absolute paths of the movie files they showed."""
    files = []
    for s in strips:
        path = capture.strip_filepath(s)
        try:
            compat.remove_strip(ed, s)
        except (RuntimeError, ReferenceError):  # moved into a meta strip by the user: left alone
            continue
        files.append(path)
    return files


def _in_use(path: str) -> bool:
    """Whether a strip of any scene still shows the file."""
    for scene in bpy.data.scenes:
        for s in compat.all_strips(compat.editor(scene)):
            if s.type == compat.MOVIE and capture.strip_filepath(s) == path:
                return True
    return False


def remove_previews(ed: Any, source_name: str) -> int:
    """Remove the preview strips of `source_name`, and their files where no other strip shows
    them: previews are the add-on's own short-lived output (an undo back to one finds it gone)."""
    gone = [s for s in compat.all_strips(ed) if compat.strip_tag(s, PREVIEW_TAG) == source_name]
    files = _remove(ed, gone)
    for path in files:
        if PREVIEW_SUFFIX in os.path.basename(path) and not _in_use(path):
            try:
                os.remove(path)
            except OSError:
                pass
    return len(files)


def remove_results(ed: Any, source_name: str) -> int:
    """Remove the synced result strips of `source_name` (their files stay: an undo brings the
    strips back, and a file is never written over)."""
    return len(_remove(ed, [s for s in compat.all_strips(ed) if compat.strip_tag(s, RESULT_TAG) == source_name]))


def _placement(job: Job, source: Optional[StripLike]) -> "tuple[int, int, str]":
    """(first frame, channel below, warning) for the result. The source strip may have been moved,
    changed or deleted while the engine ran: moved as a whole, the result follows it; otherwise it
    goes where the source was, and the warning says the clip matches the strip as it was."""
    req = job.request
    if source is None:
        return req.insert_frame, req.source_channel, (
            f"the source strip '{req.source_name}' was deleted while syncing; the synced clip was placed "
            f"where it was (frame {req.insert_frame}, channel {req.source_channel + 1} or above)")
    now = strip_state(source)
    if not job.source_state or now == job.source_state:
        return req.insert_frame, int(source.channel), ""
    path0, start0, first0, end0, anim0 = job.source_state
    path1, start1, first1, end1, anim1 = now
    shift = first1 - first0
    if path1 == path0 and anim1 == anim0 and end1 - first1 == end0 - first0 and abs((start1 - start0) - shift) < 1e-6:
        return req.insert_frame + shift, int(source.channel), ""
    return req.insert_frame, int(source.channel), (
        f"'{req.source_name}' was changed while syncing; the synced clip matches it as it was "
        f"(frames {req.insert_frame}-{req.insert_frame + req.used_frames - 1}): sync again for the new version")


def insert_result(job: Job) -> StripLike:
    """Put the finished clip on the timeline; returns the new strip."""
    req = job.request
    scene, ed = capture.scene_editor(job.scene_name, f"the synced clip is at {job.dest}")
    source = compat.find_strip(ed, req.source_name)
    remove_previews(ed, req.source_name)  # the next preview, or the full sync, replaces a preview
    if not job.preview:
        remove_results(ed, req.source_name)  # syncing again replaces the earlier result
    start, above, changed = _placement(job, source)
    if changed:
        job.finish_warnings.append(changed)
    n = req.used_frames
    channel = first_free_channel(above, start, start + n, capture.occupied(scene))
    wanted = os.path.splitext(os.path.basename(job.dest))[0]  # strip and file share one name
    strip = compat.new_movie(ed, wanted, job.dest, channel, start)
    strip.name = _unique_strip_name(ed, wanted, strip)
    compat.set_strip_tag(strip, PREVIEW_TAG if job.preview else RESULT_TAG, req.source_name)
    if bpy.data.filepath:
        try:
            strip.filepath = bpy.path.relpath(job.dest)
        except ValueError:  # another drive (Windows): keep it absolute
            pass
    if strip.frame_final_duration > n:
        strip.frame_final_duration = n
    elif strip.frame_final_duration < n:
        job.finish_warnings.append(
            f"the synced clip has {strip.frame_final_duration} frames, {n} were expected"
        )
    if source is not None:
        _copy_look(source, strip)
    # The source stays selected (change a setting, sync or preview again); the result is never
    # taken for a source (capture maps it back), but selected it would look like one. A full
    # result becomes the active strip, unselected: the Strip sidebar shows what was inserted
    # (and scripts find it there), while the selection still names the source.
    strip.select = False
    if not job.preview:
        compat.set_active_strip(ed, strip)
    if job.mute_source and source is not None and not job.preview:
        source.mute = True
    return strip


def _unique_strip_name(ed: Any, wanted: str, own: StripLike) -> str:
    """`wanted`, else `wanted.001`, ... (Blender's own renaming drops the suffix). The file's name
    was chosen free of strip names (sync_batch.unique_output): this is for a strip named since."""
    taken = {s.name for s in compat.all_strips(ed) if s != own}
    name, i = wanted, 1
    while name in taken:
        name = f"{wanted}.{i:03d}"
        i += 1
    return name


def _copy_look(src: StripLike, dst: StripLike) -> None:
    """Same placement as the source, so the synced clip covers it exactly."""
    try:
        for attr in ("offset_x", "offset_y", "scale_x", "scale_y", "rotation"):
            setattr(dst.transform, attr, getattr(src.transform, attr))
        dst.transform.origin = tuple(src.transform.origin)
        for attr in ("min_x", "max_x", "min_y", "max_y"):
            setattr(dst.crop, attr, getattr(src.crop, attr))
        dst.use_flip_x = src.use_flip_x
        dst.use_flip_y = src.use_flip_y
    except (AttributeError, TypeError):
        pass
