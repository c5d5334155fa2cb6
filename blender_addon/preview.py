"""What a preview syncs: a few seconds of a strip, timed exactly as the full sync. No bpy here."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from .scene_time import plan
from .snapshot import SnapshotError, StripInfo
from .sync_request import SyncRequest

PREVIEW_SECONDS = 3.0  # a preview without the scene's preview range: this long, around the playhead


def _frames(f0: int, f1: int) -> str:
    return f"frames {f0}-{f1 - 1}"


def preview_range(video: StripInfo, scene_fps: float, playhead: int,
                  preview: Optional[Tuple[int, int]] = None, seconds: float = PREVIEW_SECONDS,
                  sound: Optional[StripInfo] = None) -> Tuple[int, int]:
    """Scene frames [f0, f1) a preview syncs: the scene's preview range (`preview`: its first and
    last frame, when the scene uses one) within the strip's used frames; else `seconds` centred
    on the playhead, kept inside the frames where the strip and `sound` both play (moved there
    when the playhead is near or past their ends: a preview of silence shows nothing; all of
    them when they are shorter)."""
    v0, v1 = video.final_start, video.final_end
    lo, hi = v0, v1
    if sound is not None:
        lo, hi = max(v0, sound.final_start), min(v1, sound.final_end)
        if hi <= lo:
            raise SnapshotError(f"sound strip '{sound.name}' ({_frames(sound.final_start, sound.final_end)}) "
                                f"does not play under '{video.name}' ({_frames(v0, v1)})")
    if preview is not None:
        f0, f1 = max(v0, int(preview[0])), min(v1, int(preview[1]) + 1)
        if f1 <= f0:
            raise SnapshotError(f"the scene's preview range ({_frames(int(preview[0]), int(preview[1]) + 1)}) does "
                                f"not cover '{video.name}' ({_frames(v0, v1)}); move it, or turn it off to preview "
                                "around the playhead")
        if min(f1, hi) <= max(f0, lo):
            raise SnapshotError(f"no sound plays in the scene's preview range ({_frames(f0, f1)}): "
                                f"'{sound.name if sound else ''}' plays under '{video.name}' at {_frames(lo, hi)}; "
                                "move the preview range there, or turn it off to preview around the playhead")
        return f0, f1
    n = max(1, int(round(seconds * scene_fps)))
    if n >= hi - lo:
        return lo, hi
    f0 = min(max(int(playhead) - n // 2, lo), hi - n)
    return f0, f0 + n


def plan_preview(video: StripInfo, sound: StripInfo, scene_fps: float, playhead: int,
                 preview: Optional[Tuple[int, int]] = None, *, rounds: bool = True) -> SyncRequest:
    """The full sync's request (plan) cut to preview_range: the same timing rule, fewer frames."""
    f0, f1 = preview_range(video, scene_fps, playhead, preview, sound=sound)
    return plan(dataclasses.replace(video, final_start=f0, final_end=f1), sound, scene_fps, rounds=rounds)
