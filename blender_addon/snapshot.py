"""What the add-on reads from Blender's strips, as plain data (`StripInfo`), the one error a
selection that cannot be synced raises, and where strips sit on channels. No bpy here: capture.py
fills these from Blender; scene_time.py turns them into the engine's request (sync_request.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

MOVIE = "MOVIE"
IMAGE = "IMAGE"
SOUND = "SOUND"


class SnapshotError(Exception):
    """The strips cannot be synced as they are; the message says what to change."""


@dataclass(frozen=True)
class StripInfo:
    """What the job needs from one strip, read once from Blender."""

    name: str
    kind: str  # MOVIE, IMAGE or SOUND
    filepath: str  # absolute
    channel: int
    frame_start: float  # where the content's frame 0 sits in the scene
    final_start: int  # left handle (first used scene frame)
    final_end: int  # right handle (one past the last used scene frame)
    frame_duration: int  # content length in scene frames (for a movie: after playback-rate adjustment)
    animation_offset_start: int = 0  # media frames cut off the front (hard trim)
    animation_offset_end: int = 0
    sound_offset: float = 0.0  # seconds the sound is delayed within the strip (5.0+)
    media_fps: float = 0.0
    media_frames: Optional[int] = None  # the clip's frame count as Blender counts it (at media_fps), if known
    image_count: int = 1
    retiming_keys: int = 0
    speed_factor: float = 1.0
    reversed: bool = False
    strobe: float = 1.0
    speed_effects: Tuple[str, ...] = ()  # names of Speed Control strips fed by this strip
    in_meta: bool = False

    @property
    def used_frames(self) -> int:
        return self.final_end - self.final_start



def overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def first_free_channel(above: int, start: int, end: int, occupied: List[Tuple[int, int, int]],
                       max_channel: int = 128) -> int:
    """The lowest channel > `above` with no strip overlapping [start, end).
    occupied: (channel, final_start, final_end) of existing strips."""
    for ch in range(above + 1, max_channel + 1):
        if not any(c == ch and overlap(s, e, start, end) > 0 for c, s, e in occupied):
            return ch
    raise SnapshotError(f"no free channel above {above} for frames {start}-{end - 1}")
