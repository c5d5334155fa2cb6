"""A local web server for the URL tests: 127.0.0.1, in a thread of the test, answering Range
requests as real hosts do.

Python's http.server ignores Range, and ffmpeg (which yt-dlp runs for range cuts) seeks in an
MP4 with ranged requests: against a server that answers 200 with the whole body it fails with an
I/O error. This one answers a single `bytes=` range with 206 and Content-Range, an unsatisfiable
one with 416, HEAD like GET without the body, and counts every request so a test can tell that
a cached fetch never reached it.

Paths: /clip.mp4 (the clip, video/mp4), /page.html (an HTML page whose <video> plays it),
/novideo.html (a page with no video), /two.html (a page with two), /slow.mp4 (the clip,
throttled: for cancel tests); any other path is a 404.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html><head><title>Speaker test page</title>
<meta property="og:title" content="Speaker test page"></head>
<body><h1>A talking head</h1>
<video controls width="422"><source src="/clip.mp4" type="video/mp4"></video>
</body></html>
"""
NO_VIDEO_PAGE = """<!DOCTYPE html>
<html><head><title>Nothing to see</title></head>
<body><p>Only words here, no video.</p></body></html>
"""
TWO_VIDEOS_PAGE = """<!DOCTYPE html>
<html><head><title>Two speakers</title></head>
<body><video src="/clip.mp4"></video><video src="/slow.mp4"></video></body></html>
"""
# /slow.mp4: this many bytes, then a pause of SLOW_PAUSE_S (~200 KB/s: a 0.5 MB clip takes ~2.5 s).
SLOW_CHUNK = 8 << 10
SLOW_PAUSE_S = 0.04

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None


class RangeServer:
    """Start with `with RangeServer(clip) as server:`; `server.url("/clip.mp4")` is a full URL and
    `server.requests` the list of requests it received (method, path, Range header)."""

    def __init__(self, clip: str | Path):
        self.clip = Path(clip).read_bytes()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="range-server", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def body(self, path: str) -> tuple[bytes, str] | None:
        """(body, content type) for a path, or None for a 404."""
        if path in ("/clip.mp4", "/slow.mp4"):
            return self.clip, "video/mp4"
        if path == "/page.html":
            return PAGE.encode(), "text/html; charset=utf-8"
        if path == "/two.html":
            return TWO_VIDEOS_PAGE.encode(), "text/html; charset=utf-8"
        if path == "/novideo.html":
            return NO_VIDEO_PAGE.encode(), "text/html; charset=utf-8"
        return None

    def __enter__(self) -> "RangeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # Clients hanging up (ffmpeg after its seeks, a cancelled download) are normal here; a
        # real fault in the handler still shows.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a single `bytes=` range; None when it cannot be served
    (416). Several ranges in one header are not served either: no client here asks for them."""
    m = _RANGE.match(header.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    if m.group(1):
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else size - 1
    else:  # a suffix: the last N bytes
        n = int(m.group(2))
        if n == 0:
            return None
        first, last = max(0, size - n), size - 1
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


def _handler(server: RangeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as ffmpeg's HTTP client expects of a host

        def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            header = self.headers.get("Range")
            server.record(Request(self.command, path, header))
            found = server.body(path)
            if found is None:
                self._plain(404, b"not found\n")
                return
            data, kind = found
            size = len(data)
            status, first, last = 200, 0, size - 1
            if header is not None:
                span = parse_range(header, size)
                if span is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, (first, last) = 206, span
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if not body:
                return
            chunk = data[first:last + 1]
            try:
                if path == "/slow.mp4":
                    for k in range(0, len(chunk), SLOW_CHUNK):
                        self.wfile.write(chunk[k:k + SLOW_CHUNK])
                        self.wfile.flush()
                        time.sleep(SLOW_PAUSE_S)
                else:
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                # A client that seeks or is cancelled hangs up mid-body: normal for video.
                self.close_connection = True

        def _plain(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(text)

    return Handler
