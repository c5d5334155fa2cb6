"""`wav2lip fetch URL [--from SEC] [--to SEC] [--max-height 1080] [--out DIR] [--progress json]`:
download a video, or a range of it, from a web page or a direct link (media.fetch, the `url`
extra) and print the file's path as the last line of stdout.

With `--progress json` stdout carries the engine's JSON lines instead (protocol.py): hello,
progress events of stage "fetch" counting bytes (total 0 while it is not known, as during a
range cut), and a done event whose "out" is the file, with its sidecar, title, duration, size
and whether it came from the cache. Errors are one `error:` line on stderr, exit codes as the
one-shot CLI's (1 error, 2 bad arguments, 130 cancelled by Ctrl+C or SIGTERM).

Runs on its own as `python -m wav2lip_core.jobs.fetch_command URL ...`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .. import protocol as P
from .console import emit, greet, interrupt_on_sigterm
from ..errors import Cancelled, Wav2LipError
from .request import parse_strict

# Progress lines at most this often (yt-dlp reports every block it writes).
JSON_PROGRESS_EVERY_S = 0.2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"wav2lip {P.FETCH_COMMAND}",
        description="Download a video (or only a time range of it) from a web page or a link, with yt-dlp "
                    "(the url extra: pip install \"wav2lip-blender[url]\"). Prints the file's path last.",
        epilog="A second fetch of the same URL, range and height finds the file without going online. "
               "Beside the file, <file>.source.json says where it came from (URL, title, uploader, licence, range, date).")
    p.add_argument("url", help="an http:// or https:// address: a page playing one video, or the video file")
    p.add_argument("--from", dest="start", type=float, metavar="SEC", help="start of the range, seconds (default: the start)")
    p.add_argument("--to", dest="end", type=float, metavar="SEC", help="end of the range, seconds (default: the end)")
    p.add_argument("--max-height", type=int, default=1080, metavar="PIXELS",
                   help="the tallest picture wanted (default 1080); H.264 and AAC are preferred")
    p.add_argument(P.OPT_OUT, metavar="DIR", help="folder for the file (default: the fetch cache in the user cache folder)")
    p.add_argument(P.OPT_PROGRESS, choices=("bar", P.PROGRESS_JSON, "none"), default="bar",
                   help="a byte count on stderr (default), JSON lines on stdout, or nothing")
    p.add_argument(P.OPT_PROTOCOL, type=int, help=argparse.SUPPRESS)  # what the caller speaks (the add-on)
    return p


def parse_fetch_job(args: list[str], protocol: object = None):
    """serve's fetch request: its arguments through this command's parser (BadJob instead of exiting)."""
    return parse_strict(build_parser(), list(args), protocol)


def done_event(result) -> P.Done:
    """The done event for a FetchResult: `out`, `seconds`, `cache_hit`, and what the add-on shows
    or credits (sidecar, title, duration, bytes) beside them."""
    return P.Done(out=str(result.path), seconds=round(result.seconds, 3), cache_hit=result.cache_hit,
                  extra={"sidecar": str(result.sidecar), "title": result.title,
                         "duration": round(result.duration, 3), "bytes": result.size})


class _JsonProgress:
    """Progress events on stdout, no more often than JSON_PROGRESS_EVERY_S apart."""

    def __init__(self):
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last >= JSON_PROGRESS_EVERY_S or (total and done >= total):
            self._last = now
            emit(P.Progress(stage=P.STAGE_FETCH, done=int(done), total=int(total or 0)).to_json())


class _ByteBar:
    """A tqdm byte counter on stderr, opened at the first bytes (an error before any prints alone)."""

    def __init__(self):
        self._bar = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(desc="fetch", unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr)
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None




def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    json_mode = args.progress == P.PROGRESS_JSON
    refused = greet(args.protocol, json_mode)
    if refused is not None:
        return refused
    bar = _ByteBar() if args.progress == "bar" else None
    progress = _JsonProgress() if json_mode else bar
    # Signal handlers belong to the main thread; called from another (a test, a warm engine's
    # worker) the caller's own cancel applies instead.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt_on_sigterm) if main_thread else None
    failed = None
    try:
        from ..media.fetch import fetch

        result = fetch(args.url, start=args.start, end=args.end, max_height=args.max_height,
                       out_dir=args.out, progress=progress)
    except (KeyboardInterrupt, Cancelled):
        failed = ("cancelled; nothing was kept", P.EXIT_CANCELLED)
    except Wav2LipError as e:
        failed = (" ".join(str(e).split()), P.EXIT_ERROR)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if bar is not None:
            bar.close()  # before the last lines, so they do not land on the bar's line
    if failed is not None:
        print(f"error: {failed[0]}", file=sys.stderr)
        return failed[1]
    if json_mode:
        emit(done_event(result).to_json())
    else:
        if args.progress == "bar":
            how = "from the cache" if result.cache_hit else f"{result.size / 1e6:.1f} MB in {result.seconds:.1f} s"
            print(f"fetched {result.title!r}, {result.duration:.2f} s ({how}); source in {result.sidecar.name}",
                  file=sys.stderr)
        print(result.path, flush=True)
    return P.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
