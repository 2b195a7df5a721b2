"""``/dev/videoN`` and ``v4l2:///dev/videoN``: a USB/V4L2 camera through OpenCV's V4L2 backend."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Tuple
from urllib.parse import urlsplit

from ...errors import EdgeFpnError
from .base import Source
from .live import LiveSource, OpenCVGrabber
from .uri import parse_bool, parse_fourcc, query_options


def open_v4l2(uri: str, options: Dict[str, Any]) -> Source:
    import cv2
    values = query_options(uri, {"width": int, "height": int, "fps": float, "format": parse_fourcc, "reconnect": parse_bool}, options)
    device = urlsplit(uri).path if uri.startswith("v4l2://") else uri.split("?", 1)[0]
    if not re.match(r"^/dev/video\d+$", device):
        raise EdgeFpnError(f"V4L2 source {uri!r} does not name a device like /dev/video0")
    if not os.path.exists(device):
        raise EdgeFpnError(f"camera {device} does not exist; plug it in, or list cameras with `v4l2-ctl --list-devices`")
    properties: List[Tuple[int, float]] = []
    if "format" in values:
        properties.append((cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter_fourcc(*values["format"]))))
    if "width" in values:
        properties.append((cv2.CAP_PROP_FRAME_WIDTH, float(values["width"])))
    if "height" in values:
        properties.append((cv2.CAP_PROP_FRAME_HEIGHT, float(values["height"])))
    if "fps" in values:
        properties.append((cv2.CAP_PROP_FPS, float(values["fps"])))
    index = int(device[len("/dev/video"):])
    grabber = OpenCVGrabber(index, cv2.CAP_V4L2, device,
                            f"cannot open camera {device} with V4L2; check that no other program uses it and that you may read it (group 'video')",
                            properties=properties)
    return LiveSource(uri, grabber, reconnect=values.get("reconnect", True))
