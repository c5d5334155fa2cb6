"""--sync-offset auto: sync a probe stretch, measure it with the sync meter, and choose the offset
for the whole job.

The probe is PROBE_S seconds from the middle of the output (the whole output when it is not
much longer): the same decode+crop, model and blend stages as the real pass (stages.sync_stages)
on that stretch of the plan, its frames measured as they are finished (quality.meter_live) and
then dropped: nothing is encoded. The probe runs with offset 0.

Sign: the meter reads L > 0 when the mouth comes L frames after its sound; --sync-offset F
drives frame k with the sound of frame k - F, so the mouth moves F frames later and the reading
by +F. The correction is therefore -L, clamped to ±AUTO_MAX frames (a larger reading is more
likely a wrong peak than a model that far off), and applied only when the meter's confidence
reaches meter.MIN_CONFIDENCE; otherwise the job runs with offset 0 and a note says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from .. import protocol
from ..quality import meter
from ..quality.meter_live import MouthRecorder, measure_recorded
from .plan import Plan
from .stages import BatchLimit, Stopwatch, sync_stages

# The probe's length (s). The meter wants several syllables and its 1 s circular shifts
# (meter.NULL_MIN_SHIFT_S) inside it: 4 s stretches of vretalk_face1 (own sound, a real mouth)
# read confidence 0.46-0.50, right at the threshold; the whole 6.1 s clip 0.66-0.70.
PROBE_S = 6.0
# A job shorter than this many probes is probed whole.
WHOLE_BELOW = 1.5
# The largest correction applied (frames).
AUTO_MAX = protocol.SYNC_OFFSET_AUTO_MAX


@dataclass(frozen=True)
class AutoOffset:
    """What the probe found and what the job uses."""

    offset: float  # the --sync-offset the job runs with (0 when not applied)
    applied: bool
    measure: meter.SyncMeasure
    first: int  # the probe's output frames [first, last)
    last: int
    note: str  # one line for the user


def probe_range(n_out: int, fps: float) -> tuple[int, int]:
    """The probe's output frames: PROBE_S seconds around the middle, or all of them."""
    want = int(round(PROBE_S * fps))
    if n_out <= WHOLE_BELOW * want:
        return 0, n_out
    first = (n_out - want) // 2
    return first, first + want


def probe_plan(plan: Plan, first: int, last: int) -> Plan:
    """The plan's output frames [first, last) as a plan of their own (times keep their output
    time, so the sound envelope lines up)."""
    cut = slice(first, last)
    return dataclasses.replace(
        plan, sources=plan.sources[cut], times=plan.times[cut], mel_starts=plan.mel_starts[cut],
        mel_fracs=plan.mel_fracs[cut] if plan.mel_fracs is not None else None,
        weights=plan.weights[cut] if plan.weights is not None else None,
        duration=(last - first) / plan.fps, notes=[])


def decide(measure: meter.SyncMeasure, seconds: float) -> tuple[float, bool, str]:
    """(offset, applied, note) for a probe's measure over `seconds` of output."""
    where = f"on a {seconds:.1f} s probe"
    if measure.offset_frames is None or measure.confidence < meter.MIN_CONFIDENCE:
        return 0.0, False, (f"sync offset auto: not applied, {measure.verdict} {where} "
                            f"(confidence {measure.confidence:.2f}); using 0")
    lag = float(measure.offset_frames)
    offset = max(-AUTO_MAX, min(AUTO_MAX, -lag))
    clamped = f", clamped to ±{AUTO_MAX:g}" if abs(lag) > AUTO_MAX else ""
    offset = round(offset, 2)
    return offset, True, (f"sync offset auto: mouth measured {lag:+.2f} frames {where} (confidence "
                          f"{measure.confidence:.2f}); using --sync-offset {offset:+.2f}{clamped}")


def auto_offset(plan: Plan, track, executor, limit: BatchLimit, poll: Callable[[], None], *, predictor=None,
                blend: str = "feather", align: str = "off", restorer=None,
                watch: Stopwatch | None = None) -> AutoOffset:
    """Sync the probe stretch of `plan` (made with offset 0 and its sound envelope), measure it
    and decide. `poll` raises Cancelled to stop."""
    if plan.sound is None:
        raise ValueError("auto_offset needs a plan made with sound=True")
    first, last = probe_range(len(plan.sources), plan.fps)
    probe = probe_plan(plan, first, last)
    recorder = MouthRecorder(probe.times, plan.fps)
    with sync_stages(probe, track, executor, limit, watch or Stopwatch(), poll, predictor=predictor, blend=blend,
                     align=align, restorer=restorer, recorders=[recorder]) as stages:
        for _ in stages:
            poll()
    measure = measure_recorded(recorder, plan.sound)
    offset, applied, note = decide(measure, (last - first) / plan.fps)
    return AutoOffset(offset, applied, measure, first, last, note)
