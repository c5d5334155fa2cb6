"""What the one-shot commands (cli, fetch_command) share on the terminal: a JSON line on stdout,
and SIGTERM taken as Ctrl+C."""

from __future__ import annotations


def emit(line: str) -> None:
    """One line on stdout, flushed at once: the caller reads events as they come."""
    print(line, flush=True)


def interrupt_on_sigterm(signum, frame) -> None:
    """A SIGTERM handler: a caller stopping us (the add-on's Cancel) unwinds like Ctrl+C, so the
    writer deletes its temp file (a fetch its temp folder, and stops ffmpeg) instead of the
    process vanishing with half a file."""
    raise KeyboardInterrupt
