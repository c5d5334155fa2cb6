"""What the one-shot commands (cli, fetch_command, meter_command, faces_command) share on the
terminal: a JSON line on stdout, SIGTERM taken as Ctrl+C, a failure as one `error:` line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from .. import __version__, protocol as P
from ..errors import Wav2LipError

T = TypeVar("T")


def emit(line: str) -> None:
    """One line on stdout, flushed at once: the caller reads events as they come."""
    print(line, flush=True)


def interrupt_on_sigterm(signum, frame) -> None:
    """A SIGTERM handler: a caller stopping us (the add-on's Cancel) unwinds like Ctrl+C, so the
    writer deletes its temp file (a fetch its temp folder, and stops ffmpeg) instead of the
    process vanishing with half a file."""
    raise KeyboardInterrupt


def answer(work: Callable[[], T]) -> T | int:
    """work()'s result, or the exit code after its failure said as one `error:` line on stderr
    (2 for what the user can fix, 130 interrupted): the helper commands' (meter, faces) rule."""
    try:
        return work()
    except Wav2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def greet(caller_protocol: object, json_mode: bool) -> int | None:
    """A command's start: EXIT_PROTOCOL (after one `error:` line) for a caller of another
    protocol version; else, with JSON progress, the hello line, and None (go on)."""
    if caller_protocol is not None and caller_protocol != P.PROTOCOL_VERSION:
        from .request import caller_mismatch_message

        print(f"error: {caller_mismatch_message(caller_protocol)}", file=sys.stderr)
        return P.EXIT_PROTOCOL
    if json_mode:
        emit(P.Hello(version=__version__).to_json())
    return None
