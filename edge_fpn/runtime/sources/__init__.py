"""Frame sources chosen by URI, one interface: ``read(timeout) -> FrameRead(status, frame, timestamp, index)``.

Like jetson-inference's ``videoSource``: normal events are status values, not exceptions.

==========================================  ======================================================
URI                                         source
==========================================  ======================================================
``image.jpg``, ``dir/``, ``"dir/*.png"``    image files, a directory or a glob, in sorted order
``video.mp4`` (``file://...``)              a video file (OpenCV)
``test://?width=640&height=480&fps=30``     the synthetic moving scene (``&seed=1&realtime=1&frames=N``;
                                            ``&motion=cross|occlude|exit|fast|hard``: tracker tests)
``/dev/video0``, ``v4l2:///dev/video0``     a USB/V4L2 camera (``?width=&height=&fps=&format=MJPG``)
``csi://0``                                 a Jetson CSI camera (``?width=&height=&fps=&flip=``)
``rtsp://host:port/path``                   an RTSP stream over TCP (OpenCV FFmpeg, or GStreamer)
==========================================  ======================================================

Statuses: ``OK`` (a frame), ``TIMEOUT`` (no frame within the timeout: a live source that is slow
or reconnecting), ``END`` (a file source is exhausted, or the source was closed). Live sources
(cameras, RTSP, realtime ``test://``) grab on their own thread and keep only the newest frame;
when their stream drops they reconnect with back-off and say so once. File sources never drop.

Where OpenCV was built without GStreamer (pip wheels), a GStreamer pipeline (CSI cameras, or
RTSP with ``backend="gst-launch"``) runs as a ``gst-launch-1.0`` subprocess writing raw BGR
frames into a pipe, which is read with ``readinto`` into each frame's array: one copy, no more.

One module per kind of source, as jetson-inference keeps one file per source kind:

==================  ===================================================================
``base.py``         statuses, ``FrameRead``, ``Source``
``files.py``        image files, directories, globs; the path dispatch (``open_path``)
``video.py``        video files
``synthetic.py``    ``test://``
``live.py``         the live-source base (``Grabber``, ``LiveSource``) and ``OpenCVGrabber``
``v4l2.py``         USB/V4L2 cameras
``csi.py``          Jetson CSI cameras (``csi_pipeline``)
``streams.py``      RTSP and other network streams (``rtsp_pipeline``)
``gst_launch.py``   the GStreamer subprocess grabber (``GstLaunchGrabber``)
``gstreamer.py``    which GStreamer is available, and the choice between them
``uri.py``          URI query options
==================  ===================================================================
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ...errors import EdgeFpnError
from .base import END, OK, TIMEOUT, FrameRead, Source
from .csi import csi_pipeline, open_csi
from .files import IMAGE_EXTENSIONS, ImageSource, open_path
from .gst_launch import GstLaunchGrabber, gst_launch_available
from .gstreamer import APPSINK, opencv_video_backends
from .live import Grabber, LiveSource, OpenCVGrabber
from .streams import open_stream, rtsp_pipeline
from .synthetic import SyntheticSource
from .uri import SCHEME, parse_bool, query_options
from .v4l2 import open_v4l2
from .video import VIDEO_EXTENSIONS, VideoFileSource

__all__ = ["OK", "TIMEOUT", "END", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "APPSINK", "FrameRead", "Source",
           "ImageSource", "VideoFileSource", "SyntheticSource", "Grabber", "LiveSource", "OpenCVGrabber",
           "GstLaunchGrabber", "csi_pipeline", "rtsp_pipeline", "opencv_video_backends", "gst_launch_available",
           "open_source"]


def open_source(uri: Any, **options: Any) -> Source:
    """Open a source by URI (or return a Source as is). Bad URIs and missing devices raise EdgeFpnError."""
    if isinstance(uri, Source):
        return uri
    if not isinstance(uri, str) or not uri:
        raise EdgeFpnError(f"source {uri!r} is not a URI or path; give an image, directory, glob, video file, test://, /dev/videoN, csi://N or rtsp://...")
    match = SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    if scheme == "test":
        values = query_options(uri, {"width": int, "height": int, "fps": float, "seed": int, "realtime": parse_bool, "frames": int,
                                     "motion": str}, options)
        return SyntheticSource(uri, **values)
    if scheme == "v4l2" or (not scheme and uri.startswith("/dev/video")):
        return open_v4l2(uri, options)
    if scheme == "csi":
        return open_csi(uri, options)
    if scheme in ("rtsp", "rtsps", "http", "https", "rtmp"):
        return open_stream(uri, options)
    if scheme == "file":
        return open_path(urlsplit(uri).path, uri, options)
    if scheme:
        raise EdgeFpnError(f"unknown source scheme {scheme + '://'!r} in {uri!r}; use test://, csi://N, v4l2:///dev/videoN, rtsp://, file:// or a path")
    return open_path(uri, uri, options)
