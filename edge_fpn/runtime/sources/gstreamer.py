"""GStreamer: which GStreamer this machine has (OpenCV's backend, or ``gst-launch-1.0``), and the
choice between them for a pipeline source."""
from __future__ import annotations

import functools
import re
from typing import Dict, List, Optional

from ...errors import EdgeFpnError
from .gst_launch import gst_launch_available

APPSINK = "appsink drop=true max-buffers=1"


def to_bgr(parts: List[str], sink: Optional[str]) -> str:
    """`parts` joined into one pipeline that ends in BGR frames (videoconvert: decoders and nvvidconv
    give NV12/BGRx, OpenCV and the gst-launch grabber read BGR), then `sink` if given."""
    tail = ["videoconvert", "video/x-raw, format=(string)BGR"] + ([sink] if sink else [])
    return " ! ".join(list(parts) + tail)


def fraction(fps: float) -> str:
    if float(fps).is_integer():
        return f"{int(fps)}/1"
    return f"{int(round(float(fps) * 1000))}/1000"


@functools.lru_cache(maxsize=None)
def opencv_video_backends() -> Dict[str, bool]:
    """Which video I/O backends this cv2 was built with (JetPack's has GStreamer, pip wheels do not)."""
    import cv2
    info = cv2.getBuildInformation()

    def has(name: str) -> bool:
        match = re.search(r"^\s*" + name + r":\s*(\S+)", info, re.MULTILINE | re.IGNORECASE)
        return bool(match) and match.group(1).upper().startswith("YES")
    return {"gstreamer": has("GStreamer"), "ffmpeg": has("FFMPEG"), "v4l2": has("v4l/v4l2") or has("V4L/V4L2")}



def choose_gstreamer_backend(requested: str, uri: str) -> str:
    if requested not in ("auto", "gstreamer", "gst-launch"):
        raise EdgeFpnError(f"source {uri!r}: backend must be auto, gstreamer or gst-launch, not {requested!r}")
    if requested in ("auto", "gstreamer") and opencv_video_backends()["gstreamer"]:
        return "gstreamer"
    if requested == "gstreamer":
        raise EdgeFpnError(f"source {uri!r} asks for OpenCV's GStreamer backend but this OpenCV was built without it; use JetPack's OpenCV or backend=gst-launch")
    if gst_launch_available():
        return "gst-launch"
    raise EdgeFpnError(f"source {uri!r} needs GStreamer: this OpenCV has no GStreamer support and gst-launch-1.0 is not installed (apt-get install gstreamer1.0-tools)")
