"""Where the Lip Sync sidebar tab was drawn, and whether an Esc press is aimed at it.

Below both the panel (which notes each draw here) and the operators (whose modal handler asks
whether an Esc means Cancel): what they share, so neither imports the other.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from bpy.types import Context, Event

from . import compat

CATEGORY = "Lip Sync"  # the sidebar tab (the panel's bl_category)

# Sidebar regions (by pointer) in which the panel's body was drawn, and when. While a job runs
# the operator redraws every Sequencer four times a second, so a region whose entry is older
# than DRAWN_RECENTLY no longer shows the panel (another tab, collapsed, or closed).
_drawn_in: Dict[int, float] = {}
DRAWN_RECENTLY = 1.5


def note_drawn(region: Any) -> None:
    """The panel's body was drawn in `region` just now."""
    if region is not None:
        _drawn_in[region.as_pointer()] = time.monotonic()


def forget_drawn() -> None:
    _drawn_in.clear()


def esc_targets_job(context: Context, event: Event) -> bool:
    """Whether an Esc press is meant for the running job: the mouse is over a Sequencer sidebar
    that shows this panel and nothing is playing. Anywhere else Esc keeps its usual meaning
    (stop playback, leave a tool, ...) and the job goes on; the Cancel button always cancels."""
    if compat.animation_playing(context):
        return False
    window = getattr(context, "window", None)
    if window is None or window.screen is None:
        return False
    x, y = event.mouse_x, event.mouse_y
    now = time.monotonic()
    for area in window.screen.areas:
        if area.type != "SEQUENCE_EDITOR":
            continue
        for region in area.regions:
            if region.type != "UI" or region.width <= 1:
                continue
            if not (region.x <= x < region.x + region.width and region.y <= y < region.y + region.height):
                continue
            category = compat.sidebar_category(region)
            if category is not None and category != CATEGORY:
                return False
            return now - _drawn_in.get(region.as_pointer(), -1e9) <= DRAWN_RECENTLY
    return False


def redraw_sequencers(wm: Any) -> None:
    """Redraw every Sequencer area (the panel lives in their sidebars): after a change made
    outside a draw, e.g. a background job's progress."""
    for window in (wm.windows if wm is not None else []):
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()
