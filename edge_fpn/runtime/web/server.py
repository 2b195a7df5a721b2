"""The ``http://HOST:PORT`` sink: an MJPEG stream of annotated frames and live statistics.

Served by the standard library's ``http.server`` on a daemon thread, bound to 127.0.0.1 unless a
host is given (``http://0.0.0.0:8080`` serves the whole network: what a headless robot wants).

    /              the viewer page (index.html beside this file): every source of the pipeline,
                   with per-source FPS, frame age, drops
    /stream.mjpg   multipart/x-mixed-replace JPEG stream (``?source=N``: source N only; without
                   it, the newest frame of any source)
    /snapshot.jpg  the newest annotated frame (``?source=N`` as above)
    /stats.json    the pipeline's statistics (FPS, per-stage latency, drops, detections per class,
                   and per source under "sources"), and the active tracks: "active_tracks", the
                   confirmed tracks in the newest frame of each source, summed (per source in
                   each "sources" entry; null without a tracker)

With a tracker, the frames show each confirmed track's trail (``Result.annotated()`` draws the
trails the pipeline recorded).

JPEG encoding happens in the HTTP threads, at most once per frame and only while someone
watches, so an unwatched viewer costs the pipeline nothing but keeping a reference.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ...errors import EdgeFpnError
from ..sink_base import Sink

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.html")
BOUNDARY = "edgefpnframe"


def _confirmed_tracks(result: Any) -> Optional[int]:
    """The confirmed track IDs in a result (None: no tracker ran)."""
    track_ids = getattr(result.detections, "track_ids", None)
    return None if track_ids is None else int(np.count_nonzero(np.asarray(track_ids) >= 0))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a port in TIME_WAIT is free; one with a listener is not (Linux)


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebViewerSink(Sink):
    def __init__(self, host: str = "127.0.0.1", port: int = 8080, quality: int = 80,
                 stats: Optional[Callable[[], Dict[str, Any]]] = None):
        self.stats_provider = stats
        self.quality = int(quality)
        self._cond = threading.Condition()
        self._result: Any = None
        self._seq = 0
        self._jpeg: Tuple[int, bytes] = (0, b"")
        # per source index: the newest result with its sequence number; its JPEG
        self._by_source: Dict[int, Tuple[int, Any]] = {}
        self._jpeg_by_source: Dict[int, Tuple[int, bytes]] = {}
        self._closed = False
        self.clients = 0
        self.frames_sent = 0
        self.frames_written = 0
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, int(port)), _handler(self))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EdgeFpnError(f"port {port} on {host} is already in use; choose another port (e.g. http://{host}:{int(port) + 1}) or stop the program that uses it") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise EdgeFpnError(f"not allowed to listen on port {port} of {host} (ports below 1024 need root); choose a port above 1024") from None
            raise EdgeFpnError(f"cannot serve the web viewer on {host}:{port} ({exc.strerror or exc}); check the host address") from None
        self.host, self.port = self._server.server_address[0], int(self._server.server_address[1])
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        self.url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{self.port}/"
        self.name = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"edge-fpn web {self.port}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ sink side
    def write(self, result: Any) -> None:
        source = getattr(result, "source_index", None) or 0
        with self._cond:
            self._result = result
            self._seq += 1
            self._by_source[source] = (self._seq, result)
            self.frames_written += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)

    def describe(self) -> str:
        return f"{self.url} ({self.frames_sent} frames sent)"

    # ------------------------------------------------------------ HTTP side
    def _newest(self, source: Optional[int]) -> Tuple[int, Any]:
        if source is None:
            return self._seq, self._result
        return self._by_source.get(source, (0, None))

    def next_jpeg(self, after: int, timeout: float, source: Optional[int] = None) -> Optional[Tuple[int, bytes]]:
        """The JPEG of the newest frame (of `source`, or of any source) newer than `after`
        (waiting up to `timeout`), or None."""
        import cv2
        with self._cond:
            self._cond.wait_for(lambda: (self._newest(source)[0] > after and self._newest(source)[1] is not None)
                                or self._closed, timeout)
            seq, result = self._newest(source)
            if self._closed or seq <= after or result is None:
                return None
            cache = self._jpeg if source is None else self._jpeg_by_source.get(source, (0, b""))
            cached_seq, cached = cache
        if cached_seq == seq:
            return seq, cached
        ok, encoded = cv2.imencode(".jpg", result.annotated(), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return None
        data = encoded.tobytes()
        with self._cond:
            if source is None and seq > self._jpeg[0]:
                self._jpeg = (seq, data)
            elif source is not None and seq > self._jpeg_by_source.get(source, (0, b""))[0]:
                self._jpeg_by_source[source] = (seq, data)
        return seq, data

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> Dict[str, Any]:
        snap = dict(self.stats_provider()) if self.stats_provider else {}
        self._add_tracks(snap)
        snap["web"] = {"clients": self.clients, "frames_sent": self.frames_sent,
                       "frames_written": self.frames_written, "time": time.time()}
        return snap

    def _add_tracks(self, snap: Dict[str, Any]) -> None:
        """"active_tracks" in the statistics: confirmed tracks in each source's newest frame (0 for
        a source that ended or failed), per source and summed; null where no tracker ran. Counted
        here, when someone asks, not on the pipeline's sink thread at every frame."""
        with self._cond:
            newest = {source: result for source, (_, result) in self._by_source.items()}
        tracks = {source: _confirmed_tracks(result) for source, result in newest.items()}
        entries = {int(entry.get("index", 0)): entry for entry in snap.get("sources") or ()}
        for index, entry in entries.items():
            count = tracks.get(index)
            if count is not None and (entry.get("ended") or entry.get("error")):
                count = tracks[index] = 0
            entry["active_tracks"] = count
        counted = [count for count in tracks.values() if count is not None]
        snap["active_tracks"] = sum(counted) if counted else None

    def _client(self, delta: int) -> None:
        with self._cond:
            self.clients += delta


def _handler(sink: WebViewerSink) -> Any:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-fpn"
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the pipeline prints stats
            pass

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path, _, query = self.path.partition("?")
            source = _source_of(query)
            try:
                if path in ("/", "/index.html"):
                    with open(PAGE, "rb") as f:
                        self._send(200, f.read(), "text/html; charset=utf-8")
                elif path == "/stats.json":
                    self._send(200, json.dumps(sink.stats()).encode(), "application/json")
                elif path == "/snapshot.jpg":
                    frame = sink.next_jpeg(-1, 5.0, source)
                    if frame is None:
                        self._send(503, b"no frame yet\n", "text/plain")
                    else:
                        self._send(200, frame[1], "image/jpeg")
                elif path == "/stream.mjpg":
                    self._stream(source)
                else:
                    self._send(404, b"not found\n", "text/plain")
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                pass

        def _stream(self, source: Optional[int]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            sink._client(+1)
            try:
                seq = 0
                while not sink.closed:
                    frame = sink.next_jpeg(seq, 1.0, source)
                    if frame is None:
                        continue
                    seq, data = frame
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode())
                    self.wfile.write(data)
                    self.wfile.write(b"\r\n")
                    self.wfile.flush()
                    sink.frames_sent += 1
            finally:
                sink._client(-1)

    return Handler


def _source_of(query: str) -> Optional[int]:
    """``source=N`` in a query string -> N (None when absent or not a number)."""
    from urllib.parse import parse_qs
    values = parse_qs(query).get("source")
    return int(values[0]) if values and values[0].isdigit() else None
