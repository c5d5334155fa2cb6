"""What a preview syncs: a few seconds of a strip, timed exactly as the full sync. No bpy here."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from .snapshot import SnapshotError, StripInfo, SyncRequest, plan

PREVIEW_SECONDS = 3.0  # a preview without the scene's preview range: this long, around the playhead


def preview_range(video: StripInfo, scene_fps: float, playhead: int,
                  preview: Optional[Tuple[int, int]] = None, seconds: float = PREVIEW_SECONDS) -> Tuple[int, int]:
    """Scene frames [f0, f1) a preview syncs: the scene's preview range (`preview`: its first and
    last frame, when the scene uses one) within the strip's used frames; else `seconds` centred
    on the playhead, moved inside the strip when the playhead is near or past its ends (the
    whole strip when it is shorter)."""
    v0, v1 = video.final_start, video.final_end
    if preview is not None:
        f0, f1 = max(v0, int(preview[0])), min(v1, int(preview[1]) + 1)
        if f1 <= f0:
            raise SnapshotError(f"the scene's preview range (frames {preview[0]}-{preview[1]}) does not cover "
                                f"'{video.name}' (frames {v0}-{v1 - 1}); move it, or turn it off to preview "
                                "around the playhead")
        return f0, f1
    n = max(1, int(round(seconds * scene_fps)))
    if n >= v1 - v0:
        return v0, v1
    f0 = min(max(int(playhead) - n // 2, v0), v1 - n)
    return f0, f0 + n


def plan_preview(video: StripInfo, sound: StripInfo, scene_fps: float, playhead: int,
                 preview: Optional[Tuple[int, int]] = None, *, rounds: bool = True) -> SyncRequest:
    """The full sync's request (plan) cut to preview_range: the same timing rule, fewer frames."""
    f0, f1 = preview_range(video, scene_fps, playhead, preview)
    return plan(dataclasses.replace(video, final_start=f0, final_end=f1), sound, scene_fps, rounds=rounds)
