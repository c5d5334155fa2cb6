"""Our exception types. Every message is one line a user can act on: what is wrong, with which
file, and what to do. The CLI prints `error: <message>` and never a traceback for these."""

from __future__ import annotations


def reason(exc: BaseException, limit: int = 120) -> str:
    """An exception's text as a short single line, to quote inside one of our messages."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:limit] or type(exc).__name__


class Wav2LipError(Exception):
    """Base class: anything the user can fix (bad input, missing file, wrong settings)."""


class CheckpointError(Wav2LipError):
    """The Wav2Lip checkpoint cannot be used."""


class AudioError(Wav2LipError):
    """The audio cannot be read or is too short."""


class MediaError(Wav2LipError):
    """A video or image cannot be read or written."""


class DetectorError(Wav2LipError):
    """The face detector cannot run (weights missing, no face anywhere)."""


class Cancelled(Wav2LipError):
    """The run was cancelled by the caller; nothing was written."""
