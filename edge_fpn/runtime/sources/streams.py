"""``rtsp://`` (and http(s)/rtmp video streams): OpenCV's FFmpeg over TCP, OpenCV's GStreamer, or
gst-launch, with open and read timeouts."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

from ...errors import EdgeFpnError
from .base import Source
from .gst_launch import GstLaunchGrabber, gst_launch_available
from .gstreamer import APPSINK, opencv_video_backends, to_bgr
from .live import Grabber, LiveSource, OpenCVGrabber


def rtsp_pipeline(url: str, latency_ms: int = 200, sink: Optional[str] = APPSINK) -> str:
    """The GStreamer pipeline of an RTSP stream over TCP, decoded by whatever decodebin finds
    (nvv4l2decoder on a Jetson), ending in BGR frames (and ``sink`` if given)."""
    return to_bgr([f'rtspsrc location="{url}" protocols=tcp latency={int(latency_ms)}', "decodebin"], sink)


def open_stream(uri: str, options: Dict[str, Any]) -> Source:
    """rtsp:// (and http(s):// video streams): OpenCV FFmpeg over TCP, or GStreamer."""
    # options come only as keyword arguments: the URL's own query belongs to the server
    allowed = {"backend", "open_timeout", "read_timeout", "latency", "reconnect", "backoff"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise EdgeFpnError(f"source {uri!r} has no option {unknown[0]!r}; known options: {', '.join(sorted(allowed))}")
    backend = options.get("backend") or "auto"
    open_timeout = float(options.get("open_timeout") or 10.0)
    read_timeout = float(options.get("read_timeout") or 5.0)
    reconnect = options.get("reconnect", True)
    backoff = options.get("backoff") or (0.25, 5.0)
    shown = _hide_password(uri)
    failure = (f"cannot open stream {shown} within {open_timeout:g} s; check the URL, that the server runs and "
               f"that this machine can reach it")
    rtsp = uri.lower().startswith("rtsp")
    available = opencv_video_backends()
    if backend == "auto":
        if available["ffmpeg"]:
            backend = "ffmpeg"
        elif available["gstreamer"] and rtsp:
            backend = "gstreamer"
        elif gst_launch_available() and rtsp:
            backend = "gst-launch"
        else:
            raise EdgeFpnError(f"cannot read {shown}: this OpenCV has neither FFmpeg nor GStreamer, and gst-launch-1.0 is not installed")
    if backend == "ffmpeg":
        import cv2
        env: Dict[str, str] = {}
        params: List[int] = []
        if rtsp:
            ffmpeg_options = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS") or "rtsp_transport;tcp"
            if not hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):  # OpenCV < 4.6: FFmpeg's own socket timeout
                ffmpeg_options += f"|stimeout;{int(open_timeout * 1e6)}"
            env["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = ffmpeg_options
        if hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000)]
        grabber: Grabber = OpenCVGrabber(uri, cv2.CAP_FFMPEG, shown, failure, params=params, env=env)
    elif backend == "gstreamer":
        import cv2
        if not available["gstreamer"]:
            raise EdgeFpnError(f"backend 'gstreamer' for {shown}: this OpenCV was built without GStreamer; use backend='gst-launch' or 'ffmpeg'")
        grabber = OpenCVGrabber(rtsp_pipeline(uri, int(options.get("latency") or 200)), cv2.CAP_GSTREAMER, shown, failure)
    elif backend == "gst-launch":
        if not gst_launch_available():
            raise EdgeFpnError(f"backend 'gst-launch' for {shown}: gst-launch-1.0 is not installed (apt-get install gstreamer1.0-tools)")
        grabber = GstLaunchGrabber(rtsp_pipeline(uri, int(options.get("latency") or 200), sink=None), shown, failure,
                                   open_timeout=open_timeout)
    else:
        raise EdgeFpnError(f"source {shown}: backend must be auto, ffmpeg, gstreamer or gst-launch, not {backend!r}")
    return LiveSource(uri, grabber, reconnect=bool(reconnect), backoff=tuple(backoff))  # type: ignore[arg-type]


def _hide_password(uri: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)
