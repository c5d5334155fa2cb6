"""URLs as inputs: a job's `--face` or `--audio` given as an http(s) address is fetched first
(media.fetch, the `url` extra, through its cache: a second job with the same address reads the
file without going online) and the job then runs on the file. The one-shot CLI, serve's jobs,
JOBS files (through serve) and Ray's workers all call `fetch_inputs` before building the request.

Progress: events of stage "fetch" counting bytes (total 0 while it is not known), before the
sync's own stages. Without the `url` extra a URL fails with one line naming the install command
(fetch_ytdlp.load_tools); only http and https are accepted (fetch.check_url).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from .. import protocol as P
from ..media.fetch import FetchError, FetchResult, fetch, is_url

# The inputs that may be addresses: (the parsed arguments' attribute, the option).
URL_INPUTS = (("face", P.OPT_FACE), ("audio", P.OPT_AUDIO))
# Byte progress at most this often (yt-dlp reports every block it writes).
REPORT_EVERY_S = 0.2

StageProgress = Callable[[str, int, int], None]  # (stage, done, total), as pipeline.run's


class ByteReport:
    """fetch's `progress(done, total)` as stage "fetch" progress, at most every `every_s`
    seconds (and the last block of a known total). Safe from any thread: during a range cut the
    bytes are reported from fetch's helper thread."""

    def __init__(self, progress: StageProgress, every_s: float = REPORT_EVERY_S):
        self._progress = progress
        self._every = every_s
        self._last = -1e9
        self._lock = threading.Lock()

    def __call__(self, done: int, total: Optional[int]) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._every and not (total and done >= total):
                return
            self._last = now
            self._progress(P.STAGE_FETCH, int(done), int(total or 0))


def has_url_inputs(args) -> bool:
    return any(is_url(getattr(args, attr, None)) for attr, _ in URL_INPUTS)


def fetch_inputs(args, progress: Optional[StageProgress] = None, cancel: Optional[Callable[[], bool]] = None,
                 note: Optional[Callable[[str], None]] = None) -> list[FetchResult]:
    """Fetch every input of the parsed arguments `args` given as an address and put the file's
    path in its place (one fetch when face and audio are the same address). Errors: FetchError
    naming the option, Cancelled (nothing is left of a cancelled download)."""
    fetched: dict[str, FetchResult] = {}
    for attr, opt in URL_INPUTS:
        value = getattr(args, attr, None)
        if not is_url(value):
            continue
        result = fetched.get(value)
        if result is None:
            try:
                result = fetch(value, progress=ByteReport(progress) if progress is not None else None, cancel=cancel)
            except FetchError as exc:
                raise FetchError(f"{opt}: {exc}") from None
            fetched[value] = result
            if note is not None:
                how = "from the fetch cache" if result.cache_hit else f"{result.size / 1e6:.1f} MB in {result.seconds:.1f} s"
                note(f"{opt} {value}: fetched {result.title!r} ({how}); source in {result.sidecar.name}")
        setattr(args, attr, str(result.path))
    return list(fetched.values())
