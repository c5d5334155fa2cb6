"""The one place that drives yt-dlp (the `url` extra), in this process through `yt_dlp.YoutubeDL`.

Owns: loading yt-dlp and its helpers with a one-line install hint when they are missing, the
options of a download (format preference, range cut, where ffmpeg and the JavaScript runtime
are), the hooks that report bytes and poll the caller's cancel, and turning yt-dlp's errors into
one line each. `fetch.py` owns what the caller sees (cache, names, sidecar, cleanup).

Nothing downloaded is ever run: yt-dlp writes media files only (no post-download commands, no
plugins), and the only programs started are imageio-ffmpeg's ffmpeg (for range cuts and for
joining separate video and audio streams) and deno from the deno package (YouTube's player
JavaScript, run by yt-dlp in deno's sandbox).
"""

from __future__ import annotations

import contextvars
import errno
import os
import re
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import urlsplit

from ..errors import Cancelled, Wav2LipError, reason

_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\])'\"]+)")
INSTALL_HINT = 'pip install "wav2lip-blender[url]"'
# How often the watcher looks at the cancel flag while ffmpeg runs (ffmpeg reports nothing).
POLL_S = 0.1
# A failed download with less free space than this where it was writing is called "disk full"
# (ffmpeg's own message is silenced, so its exit code alone does not say why).
LOW_SPACE_BYTES = 16 << 20

Progress = Callable[[int, Optional[int]], None]  # (bytes done, bytes in all or None)
Cancel = Callable[[], bool]


class FetchError(Wav2LipError):
    """A URL could not be fetched: one line saying why and what to do."""


@dataclass
class Tools:
    """yt-dlp's module and the programs it may start."""
    yt_dlp: object
    ffmpeg: str
    deno: Optional[str]


def load_tools() -> Tools:
    """yt-dlp, imageio-ffmpeg's ffmpeg and deno; FetchError with the install command when one is
    missing (the `url` extra is optional)."""
    try:
        import yt_dlp
        import imageio_ffmpeg
    except ImportError as e:
        raise FetchError(f"fetching a URL needs the url extra ({e.name} is missing): {INSTALL_HINT}") from None
    try:
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise FetchError(f"imageio-ffmpeg has no ffmpeg for this machine ({reason(e)}): {INSTALL_HINT}") from None
    try:
        import deno  # YouTube's player needs a JavaScript runtime; other sites run without one
        runtime = deno.find_deno_bin()
    except (ImportError, OSError, RuntimeError):
        runtime = None
    return Tools(yt_dlp, ffmpeg, runtime)


def format_choice(max_height: int) -> tuple[str, list[str]]:
    """yt-dlp's format selector and sort order: the best video at or under `max_height` with the
    best audio (or one file holding both), H.264 and AAC first among equals, then MP4/M4A; only
    when nothing is that small, the smallest there is. A file whose height is not known (a plain
    link to an MP4) is accepted."""
    h = int(max_height)
    selector = f"bv*[height<=?{h}]+ba/b[height<=?{h}]/wv*+ba/w"
    return selector, [f"res:{h}", "vcodec:h264", "acodec:aac", "ext:mp4:m4a"]


class Log:
    """yt-dlp's logger: keeps its messages off stdout (the engine's JSON lines live there) and
    remembers the last error and warning for the one-line message."""

    def __init__(self):
        self.error_text = ""

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass  # yt-dlp's advice (fallbacks, cookies, updates) is not the user's to act on here

    def error(self, msg: str) -> None:
        self.error_text = msg


@dataclass
class Hooks:
    cancel: Optional[Cancel]
    progress: Optional[Progress]
    cancelled: bool = False
    files: dict = field(default_factory=dict)  # file -> (done, total or None)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            self.cancelled = True
            raise Cancelled("fetch cancelled; nothing was kept")

    def hook(self, d: dict) -> None:
        """yt-dlp's progress hook, called for every block it writes: report the bytes of all
        files so far, and stop at the caller's cancel."""
        self.check()
        name = d.get("filename") or d.get("tmpfilename") or ""  # (a finished file has no tmpfilename)
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        done = d.get("downloaded_bytes") or 0
        with self.lock:
            self.files[name] = (int(done), int(total) if total else None)
            sizes = list(self.files.values())
        if self.progress is not None:
            totals = [t for _, t in sizes]
            self.progress(sum(b for b, _ in sizes), None if None in totals else sum(totals))


def options(tools: Tools, folder: str, stem: str, max_height: int, start: Optional[float],
            end: Optional[float], log: Log, state: Hooks) -> dict:
    """YoutubeDL's parameters for one video into `folder` as `stem.<ext>`."""
    selector, order = format_choice(max_height)
    params = {
        "logger": log, "quiet": True, "no_warnings": False, "noprogress": True, "color": "no_color",
        "format": selector, "format_sort": order, "merge_output_format": "mp4",
        "outtmpl": {"default": os.path.join(folder, stem + ".%(ext)s")},
        "paths": {"home": folder, "temp": folder},
        # a watch URL inside a playlist means its video; a playlist itself is refused (two
        # entries are enough to tell, without listing hundreds)
        "noplaylist": True, "playlist_items": "1:2",
        "ffmpeg_location": tools.ffmpeg,
        "progress_hooks": [state.hook], "postprocessor_hooks": [lambda d: state.check()],
        "retries": 2, "fragment_retries": 2, "extractor_retries": 1, "socket_timeout": 20,
        "overwrites": True, "continuedl": False, "updatetime": False,
        "writesubtitles": False, "writethumbnail": False, "writeinfojson": False,
        "js_runtimes": {"deno": {"path": tools.deno}} if tools.deno else {},
    }
    if start is not None or end is not None:
        section = {"start_time": float(start or 0.0), "end_time": float("inf") if end is None else float(end)}
        params["download_ranges"] = lambda info, ydl: [section]
        params["force_keyframes_at_cuts"] = True  # re-encode at the cut: the first frame is the one asked for
    return params


def extract(tools: Tools, params: dict, url: str, state: Hooks) -> dict:
    """The video's information without downloading it (a page holding one video gives that
    video; a playlist is refused)."""
    with tools.yt_dlp.YoutubeDL(params) as ydl:
        info = _guarded(tools, params, url, state, lambda: ydl.extract_info(url, download=False))
    if info.get("_type") == "playlist" or "entries" in info:
        entries = [e for e in (info.get("entries") or []) if e]
        if len(entries) != 1:
            many = "several videos" if entries else "no video"
            raise FetchError(f"{url[:120]} holds {many}; give the address of one video's page")
        entry = dict(entries[0])
        for key in ("webpage_url", "uploader", "license"):
            entry.setdefault(key, info.get(key))
        info = entry
    return info


def download(tools: Tools, params: dict, url: str, info: dict, state: Hooks) -> list[str]:
    """Download what `info` describes with `params`; the files written (normally one)."""
    with tools.yt_dlp.YoutubeDL(params) as ydl:
        done = _guarded(tools, params, url, state, lambda: ydl.process_ie_result(info, download=True))
    files = [d.get("filepath") for d in (done or {}).get("requested_downloads") or []]
    return [f for f in files if f and os.path.isfile(f)]


def _guarded(tools: Tools, params: dict, url: str, state: Hooks, call: Callable[[], dict]) -> dict:
    """Run one yt-dlp call with the cancel watcher beside it, in a context where yt-dlp's
    ffmpeg is ours, and turn whatever it raises into our one-line errors."""
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(tools, state, params["paths"]["home"], stop),
                               name="fetch-watch", daemon=True)
    watcher.start()
    try:
        return contextvars.copy_context().run(_with_ffmpeg, tools.ffmpeg, call)
    except Cancelled:
        raise
    except OSError as e:
        raise _os_error(e, params) from None
    except tools.yt_dlp.utils.YoutubeDLError as e:  # DownloadError, UnavailableVideoError, ...
        if state.cancelled:
            raise Cancelled("fetch cancelled; nothing was kept") from None
        raise FetchError(explain(e, url, params, params["logger"])) from None
    finally:
        stop.set()
        watcher.join()


def _with_ffmpeg(ffmpeg: str, call: Callable[[], dict]) -> dict:
    # yt-dlp decides whether ffmpeg can cut a range before it reads `ffmpeg_location` (its
    # FFmpegFD.available() looks only at this context variable, which yt-dlp's own command line
    # sets from --ffmpeg-location). Set it here, in a copied context, so imageio-ffmpeg's binary
    # is the one used and a system ffmpeg never is.
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    FFmpegPostProcessor._ffmpeg_location.set(ffmpeg)
    return call()


def _watch(tools: Tools, state: Hooks, folder: str, stop: threading.Event) -> None:
    """While yt-dlp works: poll cancel, and on cancel stop our ffmpeg and deno (once each; a
    range cut reports no progress, so the hooks cannot stop it), after which yt-dlp fails and
    the caller sees Cancelled. Until the hooks report bytes, report what is written in `folder`
    (a range cut's output, total unknown)."""
    stopped: set[int] = set()
    written = 0
    while not stop.wait(POLL_S):
        if state.cancel is not None and state.cancel():
            state.cancelled = True
            for pid in children_running([p for p in (tools.ffmpeg, tools.deno) if p]):
                if pid not in stopped:
                    stopped.add(pid)
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except OSError:
                        pass  # already gone
        elif state.progress is not None and not state.files:
            size = _folder_bytes(folder)
            if size != written:
                written = size
                try:
                    state.progress(size, None)
                except Exception:
                    pass  # a progress report is informational; the download's own errors decide


def _folder_bytes(folder: str) -> int:
    try:
        return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())
    except OSError:
        return 0


def children_running(programs: list[str]) -> list[int]:
    """Process ids of this process's own children running one of `programs` (paths). psutil
    when installed, else Linux's /proc; elsewhere none are found and a cancel takes effect
    when the running step ends."""
    me, wanted = os.getpid(), {os.path.realpath(p) for p in programs}
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        found = []
        for child in psutil.Process(me).children():
            try:
                if os.path.realpath(child.exe()) in wanted:
                    found.append(child.pid)
            except psutil.Error:
                pass
        return found
    found = []
    if not os.path.isdir("/proc"):
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == me and os.path.realpath(f"/proc/{entry.name}/exe") in wanted:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def _os_error(e: OSError, params: dict) -> FetchError:
    if e.errno == errno.ENOSPC:
        return FetchError(f"disk full while writing into {params['paths']['home']}: free some space and fetch again")
    return FetchError(f"cannot write the download into {params['paths']['home']}: {reason(e)}")


def explain(e: Exception, url: str, params: dict, log: Log) -> str:
    """One line for a failed yt-dlp call: which of the usual reasons, with yt-dlp's own words
    (shortened) when it gives them."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import ExtractorError, GeoRestrictedError, UnsupportedError

    chain, link = [], (getattr(e, "exc_info", None) or (None, None))[1] or e
    while isinstance(link, BaseException) and link not in chain and len(chain) < 4:
        chain.append(link)
        link = getattr(link, "cause", None) or link.__cause__ or link.__context__

    def first(kind):
        return next((x for x in chain if isinstance(x, kind)), None)

    text = _short(getattr(chain[0], "orig_msg", None) or log.error_text or str(e))
    host = urlsplit(url).netloc
    if first(UnsupportedError):
        return f"no video found at {url[:120]}: give the address of a page that plays one, or of the video file"
    http = first(HTTPError)
    if http is not None:
        if http.status == 404:
            return f"not found (HTTP 404): {http.response.url[:160]}: check the address"
        return f"{host} refused the request (HTTP {http.status} {_short(http.reason or '')}): {text}"
    net = first(TransportError)
    if net is not None:
        return f"cannot reach {host}: {_network_reason(str(net))}: check the address and the network"
    if first(GeoRestrictedError):
        return f"not available from this country: {text}"
    written = first(OSError)
    if (written is not None and written.errno == errno.ENOSPC) or "No space left" in text or "Errno 28" in text \
            or _low_space(params["paths"]["home"]):
        return f"disk full while writing into {params['paths']['home']}: free some space and fetch again"
    if first(ExtractorError):
        return f"{host} would not give the video: {text}"
    return f"download from {host} failed: {text}"


def _network_reason(text: str) -> str:
    """`[Errno 111] Connection refused` out of urllib3's long sentence, else the sentence."""
    found = _ERRNO.findall(text)
    return found[-1].strip().rstrip(")").lower() if found else _short(text, 100)


def _low_space(folder: str) -> bool:
    try:
        import shutil

        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def _short(text: str, limit: int = 160) -> str:
    """yt-dlp's message on one line, without its `ERROR: [site] id:` prefix and its advice to
    update yt-dlp or report a bug."""
    text = " ".join(str(text).split())
    for prefix in ("ERROR:",):
        text = text.removeprefix(prefix).strip()
    while text.startswith("["):
        head, _, rest = text.partition("] ")
        text = rest if rest else text[len(head) + 1:]
    for tail in ("; please report this issue", " Confirm you are on the latest version", "Use --cookies"):
        cut = text.find(tail)
        if cut > 0:
            text = text[:cut].rstrip(" .;,") + "."
    return text[:limit].rstrip() or "unknown error"
