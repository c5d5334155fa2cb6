"""Video (or sound) from a URL: `fetch(url)` downloads one video, or only a time range of it,
into a folder and says where it is, with a sidecar `<file>.source.json` to credit the source.

Owns: what a caller of a fetch sees (the FetchResult, its errors, progress in bytes and a
cancel callback), the fetch cache, the names of fetched files, their sidecars, and cleaning up:
a download is written inside a temp folder in the target folder and renamed into place only
when complete, so a failure, a cancel or a full disk leaves nothing behind. yt-dlp itself is
driven by fetch_ytdlp (the `url` extra).

The target folder, by default the user's cache folder, doubles as the cache: a file is named
`<title>-<key>.<ext>`, the key a hash of the URL, the range and the height limit, and a second
fetch with the same key finds the file and its sidecar without going online. Only http and
https URLs are accepted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from .fetch_ytdlp import Cancel, FetchError, Hooks, Log, Progress, download, extract, load_tools, options
from ..errors import Cancelled, reason

__all__ = ["Cancelled", "FetchError", "FetchResult", "fetch", "default_folder", "check_url", "is_url", "SIDECAR_SUFFIX"]

SIDECAR_SUFFIX = ".source.json"
# The fetch cache's folder; tests point it at a temp folder.
ENV_FETCH_CACHE = "WAV2LIP_FETCH_CACHE"
SCHEMES = ("http", "https")
MAX_HEIGHT_DEFAULT = 1080
# A range cut may come out this much shorter than asked (the last frame's length, rounding)
# before the range is called "outside the video".
RANGE_SLACK_S = 0.1
# A fetch downloads into `<folder>/.fetch-XXXX/`; one older than STALE_TEMP_S was left by a
# process that was killed (no fetch takes that long without writing into it).
TEMP_PREFIX = ".fetch-"
STALE_TEMP_S = 6 * 3600
_TITLE_CHARS = re.compile(r"[^\w.-]+")
# Any `scheme://`: an input given as an address (check_url then refuses all but http and https);
# a Windows path (`C:\clip.mp4`) has no `//` after its colon.
_ADDRESS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class FetchResult:
    path: Path  # the media file
    sidecar: Path  # <path>.source.json: where it came from
    url: str  # as asked
    title: str
    start: Optional[float]  # the range asked for, seconds (None: the start / the end)
    end: Optional[float]
    duration: float  # of the file, seconds
    size: int  # bytes
    cache_hit: bool  # found from an earlier fetch; nothing was downloaded
    seconds: float  # how long this fetch took
    uploader: Optional[str] = None
    license: Optional[str] = None


def default_folder() -> Path:
    env = os.environ.get(ENV_FETCH_CACHE)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("wav2lip-blender")) / "fetched"


def is_url(value: object) -> bool:
    """Whether an input (--face, --audio, a JOBS value) is given as an address, not a file."""
    return isinstance(value, str) and bool(_ADDRESS.match(value.strip()))


def check_url(url: str) -> str:
    """The URL, stripped, when it is an http(s) address with a host; FetchError otherwise (a
    file:// or any other scheme is never fetched)."""
    url = str(url).strip()
    parts = urlsplit(url)
    if not parts.scheme:
        raise FetchError(f"give the whole address, starting with https://, not {url[:120]}")
    if parts.scheme.lower() not in SCHEMES:
        raise FetchError(f"only http:// and https:// addresses can be fetched, not {parts.scheme}://: {url[:120]}")
    if not parts.hostname:
        raise FetchError(f"no host in the address {url[:120]}")
    return url


def check_range(start: Optional[float], end: Optional[float]) -> None:
    for name, value in (("from", start), ("to", end)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise FetchError(f"{name} {value}: give seconds from the video's start, 0 or more")
    if start is not None and end is not None and end <= start:
        raise FetchError(f"the range's end ({end:g} s) must come after its start ({start:g} s)")


def entry_key(url: str, start: Optional[float], end: Optional[float], max_height: int) -> str:
    """The cache key: what was asked for (the same URL, range and height give the same file)."""
    asked = json.dumps([url, start, end, int(max_height)])
    return hashlib.sha256(asked.encode("utf-8")).hexdigest()[:16]


def fetch(url: str, *, start: Optional[float] = None, end: Optional[float] = None,
          max_height: int = MAX_HEIGHT_DEFAULT, out_dir: Optional[os.PathLike | str] = None,
          progress: Optional[Progress] = None, cancel: Optional[Cancel] = None) -> FetchResult:
    """Download `url` (or its `start`-`end` seconds, cut exactly) into `out_dir` (default: the
    fetch cache), preferring H.264 and AAC at or under `max_height` pixels. `progress(done,
    total)` gets bytes (total None when not known, as during a range cut; then it is called from a
    helper thread); `cancel()` is polled while downloading, also from that thread, and stops the
    fetch with Cancelled. FetchError for anything else, one line; either way nothing is left."""
    t0 = time.perf_counter()
    url = check_url(url)
    start = None if start is None else float(start)
    end = None if end is None else float(end)
    check_range(start, end)
    if int(max_height) < 1:
        raise FetchError(f"max height {max_height}: give a height in pixels, 1 or more")
    folder = Path(out_dir) if out_dir is not None else default_folder()
    key = entry_key(url, start, end, max_height)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        hit = find_cached(folder, key)
    except OSError as e:
        raise _write_error(e, folder) from None
    if hit is not None:
        return _result(hit, url, start, end, cache_hit=True, seconds=time.perf_counter() - t0)
    tools = load_tools()
    hooks = Hooks(cancel, progress)
    hooks.check()
    remove_stale(folder)
    try:
        work = tempfile.mkdtemp(dir=folder, prefix=TEMP_PREFIX)
    except OSError as e:
        raise _write_error(e, folder) from None
    try:
        params = options(tools, work, "video", max_height, start, end, Log(), hooks)
        info = extract(tools, params, url, hooks)
        _check_known_duration(info, start, end)
        files = download(tools, params, url, info, hooks)
        hooks.check()
        if not files:
            raise FetchError(f"the site gave no file for {url[:120]}")
        duration = _measure(files[0], start, end, url)
        media = _place(folder, key, Path(files[0]), _sidecar(url, info, start, end, max_height, duration, key))
    except OSError as e:
        raise _write_error(e, folder) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _result(media, url, start, end, cache_hit=False, seconds=time.perf_counter() - t0)


def remove_stale(folder: Path, now: Optional[float] = None) -> None:
    """Delete temp folders that a killed fetch left in `folder` (a live fetch's is younger)."""
    now = time.time() if now is None else now
    for work in folder.glob(f"{TEMP_PREFIX}*"):
        try:
            # a download appends to its file without touching the folder: look at both
            touched = max([work.stat().st_mtime] + [e.stat().st_mtime for e in os.scandir(work)])
            if now - touched > STALE_TEMP_S:
                shutil.rmtree(work, ignore_errors=True)
        except OSError:
            pass  # not a folder, or just removed by its own fetch


def find_cached(folder: Path, key: str) -> Optional[Path]:
    """The media file of an earlier fetch with this key in `folder`, when both it and its sidecar
    (written last, so its presence means the file is whole) are there."""
    for sidecar in sorted(folder.glob(f"*-{key}.*{SIDECAR_SUFFIX}")):
        media = sidecar.with_name(sidecar.name[:-len(SIDECAR_SUFFIX)])
        if media.is_file():
            return media
    return None


def file_name(title: str, key: str, ext: str) -> str:
    """`<title>-<key><ext>`, the title reduced to letters, digits, dots and dashes."""
    stem = _TITLE_CHARS.sub("-", title or "").strip("-.")[:60].strip("-.") or "video"
    return f"{stem}-{key}{ext}"


def read_sidecar(media: Path) -> dict:
    """A fetched file's sidecar (empty when it cannot be read)."""
    try:
        with open(str(media) + SIDECAR_SUFFIX, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _result(media: Path, url: str, start, end, *, cache_hit: bool, seconds: float) -> FetchResult:
    info = read_sidecar(media)
    return FetchResult(path=media, sidecar=Path(str(media) + SIDECAR_SUFFIX), url=url,
                       title=str(info.get("title") or media.stem), start=start, end=end,
                       duration=float(info.get("duration") or 0.0), size=media.stat().st_size,
                       cache_hit=cache_hit, seconds=seconds, uploader=info.get("uploader"),
                       license=info.get("license"))


def _check_known_duration(info: dict, start: Optional[float], end: Optional[float]) -> None:
    """When the site says how long the video is, refuse a range outside it before downloading."""
    duration = info.get("duration")
    if not duration or (start is None and end is None):
        return
    if (start or 0.0) >= duration or (end is not None and end > duration + RANGE_SLACK_S):
        raise FetchError(f"the range {_range_text(start, end)} is outside the video (0-{duration:g} s)")


def _measure(path: str, start: Optional[float], end: Optional[float], url: str) -> float:
    """The downloaded file's length (s); FetchError when it holds no picture or sound, or less
    of the range than was asked (a site that does not say the video's length is found out here)."""
    import av

    try:
        with av.open(path) as container:
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            lengths = [float(s.duration * s.time_base) for s in streams if s.duration and s.time_base]
            if container.duration:
                lengths.append(container.duration / 1e6)
            # an empty cut can still have a header that claims a length: look for one real packet
            holds = bool(streams) and any(p.size for p in container.demux(*streams))
    except (av.error.FFmpegError, OSError) as e:
        raise FetchError(f"what {url[:120]} gave is not a video or sound file: {reason(e)}") from None
    duration = max(lengths, default=0.0)
    ranged = start is not None or end is not None
    if not holds or duration <= 0:
        if ranged:
            raise FetchError(f"the range {_range_text(start, end)} is outside the video")
        raise FetchError(f"what {url[:120]} gave holds no picture or sound")
    if ranged and end is not None and duration < end - (start or 0.0) - RANGE_SLACK_S:
        raise FetchError(f"the range {_range_text(start, end)} is outside the video "
                         f"(it ends {duration:.2f} s after {start or 0:g} s)")
    return duration


def _range_text(start: Optional[float], end: Optional[float]) -> str:
    return f"{start or 0:g}-{'end' if end is None else f'{end:g}'} s"


def _sidecar(url: str, info: dict, start, end, max_height: int, duration: float, key: str) -> dict:
    return {
        "url": url,
        "webpage_url": info.get("webpage_url") or url,
        "title": info.get("title"),
        "uploader": info.get("uploader") or info.get("channel") or info.get("creator"),
        "license": info.get("license"),
        "from": start,
        "to": end,
        "duration": round(duration, 3),
        "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "site": info.get("extractor_key") or info.get("extractor"),
        "id": info.get("id"),
        "format": info.get("format_id"),
        "width": info.get("width"),
        "height": info.get("height"),
        "max_height": int(max_height),
        "key": key,
    }


def _place(folder: Path, key: str, downloaded: Path, sidecar: dict) -> Path:
    """Move the finished download into `folder` under its final name, then its sidecar: the
    sidecar's presence is what marks a cache entry whole."""
    media = folder / file_name(str(sidecar.get("title") or ""), key, downloaded.suffix)
    side_tmp = downloaded.with_name(downloaded.name + SIDECAR_SUFFIX)
    side_tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(downloaded, media)
    try:
        os.replace(side_tmp, str(media) + SIDECAR_SUFFIX)
    except BaseException:
        media.unlink(missing_ok=True)
        raise
    return media


def _write_error(e: OSError, folder: Path) -> FetchError:
    if e.errno == errno.ENOSPC:
        return FetchError(f"disk full while writing into {folder}: free some space and fetch again")
    return FetchError(f"cannot write into {folder}: {reason(e)}")
