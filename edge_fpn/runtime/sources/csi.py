"""``csi://N``: a Jetson CSI camera (nvarguscamerasrc), through OpenCV's GStreamer or gst-launch."""
from __future__ import annotations

from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from ...errors import EdgeFpnError
from .base import Source
from .gst_launch import GstLaunchGrabber
from .gstreamer import APPSINK, choose_gstreamer_backend, fraction, to_bgr
from .live import Grabber, LiveSource, OpenCVGrabber
from .uri import parse_bool, query_options


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: float = 30,
                 flip: int = 0, sink: Optional[str] = APPSINK) -> str:
    """The GStreamer pipeline of a Jetson CSI camera, ending in BGR frames (and ``sink`` if given).

    nvarguscamerasrc gives NV12 in NVMM (device) memory; nvvidconv flips and converts it to BGRx in
    system memory (it cannot output BGR), videoconvert drops the x.
    """
    rate = fraction(fps)
    parts = [
        f"nvarguscamerasrc sensor-id={int(sensor_id)}",
        f"video/x-raw(memory:NVMM), width=(int){int(width)}, height=(int){int(height)}, framerate=(fraction){rate}, format=(string)NV12",
        f"nvvidconv flip-method={int(flip)}",
        f"video/x-raw, width=(int){int(width)}, height=(int){int(height)}, format=(string)BGRx",
    ]
    return to_bgr(parts, sink)



def open_csi(uri: str, options: Dict[str, Any]) -> Source:
    values = query_options(uri, {"width": int, "height": int, "fps": float, "flip": int, "backend": str, "reconnect": parse_bool}, options)
    sensor = urlsplit(uri).netloc or "0"
    if not sensor.isdigit():
        raise EdgeFpnError(f"CSI source {uri!r} must name a sensor number, like csi://0")
    width, height, fps = values.get("width", 1280), values.get("height", 720), values.get("fps", 30.0)
    flip = values.get("flip", 0)
    if not 0 <= flip <= 7:
        raise EdgeFpnError(f"csi:// flip must be 0..7 (nvvidconv flip-method), not {flip}")
    failure = (f"cannot open CSI camera {sensor} (nvarguscamerasrc sensor-id={sensor}); check that it is connected "
               f"and that nvargus-daemon runs (`sudo systemctl restart nvargus-daemon`)")
    backend = choose_gstreamer_backend(values.get("backend", "auto"), uri)
    if backend == "gstreamer":
        import cv2
        grabber: Grabber = OpenCVGrabber(csi_pipeline(int(sensor), width, height, fps, flip), cv2.CAP_GSTREAMER,
                                         f"csi://{sensor}", failure)
    else:
        grabber = GstLaunchGrabber(csi_pipeline(int(sensor), width, height, fps, flip, sink=None), f"csi://{sensor}",
                                   failure, width=width, height=height, fps=fps)
    return LiveSource(uri, grabber, reconnect=values.get("reconnect", True))
