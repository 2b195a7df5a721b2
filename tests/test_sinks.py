"""Sinks by string: JSON lines, annotated video and images, display, web viewer errors; annotation."""
from __future__ import annotations

import json
import os
import socket

import cv2
import numpy as np
import pytest

from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.detector import Detections
from edge_fpn.runtime.pipeline import Result
from edge_fpn.runtime.sinks import (DisplaySink, ImageDirSink, JsonlSink, VideoSink, annotate, check_sinks, label_color,
                                    open_sink, parse_http)


def _result(index=0, size=(120, 160), name="", boxes=((10, 20, 60, 80),)):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    detections = Detections(boxes=boxes, scores=np.full(len(boxes), 0.875, np.float32),
                            labels=np.ones(len(boxes), np.int64), names=["circle"] * len(boxes))
    frame = np.full(size + (3,), 40, np.uint8)
    return Result(frame, detections, index, 0.0, name or "test://", name, {}, 0.01, 0.01)


def test_annotate_draws_boxes_on_a_copy():
    result = _result()
    image = annotate(result.frame, result.detections)
    assert result.frame.max() == 40  # the frame itself is untouched
    edge = image[50, 9:12].astype(int)  # the box's left edge (anti-aliased)
    # one of the 3 edge pixels within 40 of the class colour (anti-aliasing blends the others with the gray)
    assert (np.abs(edge - np.array(label_color(1))).max(axis=1) < 40).any()
    assert tuple(image[100, 150]) == (40, 40, 40)  # outside
    assert result.annotated() is result.annotated()  # drawn once per result, shared by the sinks


def test_jsonl_format(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = open_sink(str(path))
    assert isinstance(sink, JsonlSink)
    sink.write(_result(0))
    sink.write(_result(5, name="images/a.png", boxes=()))
    sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"frame": 0, "source": "test://", "detections": [
        {"box": [10.0, 20.0, 60.0, 80.0], "score": 0.875, "label": 1, "name": "circle"}]}
    assert lines[1] == {"frame": 5, "source": "images/a.png", "detections": []}


def _decoded(path):
    """Every frame OpenCV decodes from a video file."""
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_video_sink_resizes_other_sizes(tmp_path):
    path = str(tmp_path / "out.avi")
    sink = open_sink(path, fps=10.0)
    assert isinstance(sink, VideoSink)
    for i, size in enumerate([(120, 160), (240, 320), (120, 160)]):
        sink.write(_result(i, size=size))
    sink.close()
    assert [frame.shape for frame in _decoded(path)] == [(120, 160, 3)] * 3


def test_mp4_sink(tmp_path):
    path = str(tmp_path / "out.mp4")
    sink = open_sink(path)
    for i in range(3):
        sink.write(_result(i))
    sink.close()
    frames = _decoded(path)
    assert [frame.shape for frame in frames] == [(120, 160, 3)] * 3
    # what was written is the annotated frame: where the box and label are drawn (6% of the pixels),
    # the decoded frame is near the drawing (mean |difference| 10 through the lossy codec), far
    # from the frame's flat gray 40 (109): half-way between the two tells them apart
    drawn = annotate(_result().frame, _result().detections).astype(int)
    on_drawing = (drawn != 40).any(axis=2)
    for frame in frames:
        to_drawing = np.abs(frame.astype(int) - drawn)[on_drawing].mean()
        to_plain = np.abs(frame.astype(int) - 40)[on_drawing].mean()
        assert to_drawing < 0.5 * to_plain, (to_drawing, to_plain)


def test_image_directory_sink_names(tmp_path):
    sink = open_sink(str(tmp_path / "annotated") + "/")
    assert isinstance(sink, ImageDirSink)
    sink.write(_result(3, name="/data/cat.png"))
    sink.write(_result(4, name="/other/cat.png"))
    sink.write(_result(7))
    sink.close()
    assert sorted(os.listdir(tmp_path / "annotated")) == ["cat.png", "cat_1.png", "frame_000007.jpg"]


@pytest.mark.parametrize("spec, message", [
    ("no/such/dir/out.jsonl", "does not exist; create it first"),
    ("no/such/dir/out.mp4", "does not exist; create it first"),
    ("no/such/dir/annotated/", "does not exist; create it first"),
    ("out.txt", "cannot tell what kind of sink"),
    ("ftp://host/x", "unknown sink scheme"),
    ("http://127.0.0.1:99999", "not 0..65535"),
    ("http://127.0.0.1:80/extra/path", "is not http://HOST:PORT"),
    ("display://x", "display://N"),
])
def test_bad_sinks_are_one_sentence(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgeFpnError, match=message) as info:
        open_sink(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec, message", [
    ("no/such/dir/out.jsonl", "does not exist; create it first"),
    ("out.txt", "cannot tell what kind of sink"),
    ("http://127.0.0.1:99999", "not 0..65535"),
])
def test_check_sinks_finds_the_same_errors_and_opens_nothing(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgeFpnError, match=message):
        check_sinks(["fine.jsonl", spec])
    with socket.socket() as busy:  # the port is bound only when the sink opens
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        check_sinks(["out.jsonl", "out.avi", "annotated/", f"http://127.0.0.1:{busy.getsockname()[1]}"])
    assert os.listdir(tmp_path) == []


def test_file_sinks_create_nothing_before_the_first_frame(tmp_path):
    specs = [tmp_path / "out.jsonl", tmp_path / "out.avi", tmp_path / "annotated"]
    sinks = [open_sink(str(spec)) for spec in specs]
    assert os.listdir(tmp_path) == []
    for sink in sinks:  # a failed run: nothing written, nothing left
        sink.abort()
        sink.close()  # closing after an abort changes nothing
    assert os.listdir(tmp_path) == []
    for sink in [open_sink(str(spec)) for spec in specs]:  # a run that went well but had no frame
        sink.close()
    assert (tmp_path / "out.jsonl").read_text() == "" and os.listdir(tmp_path / "annotated") == []
    assert not (tmp_path / "out.avi").exists()  # a video needs a frame for its size


def test_abort_keeps_what_was_written_and_what_existed(tmp_path):
    sinks = [open_sink(str(tmp_path / "out.jsonl")), open_sink(str(tmp_path / "out.avi"), fps=5.0),
             open_sink(str(tmp_path / "annotated"))]
    for sink in sinks:
        sink.write(_result(0))
        sink.abort()
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
    assert len(_decoded(str(tmp_path / "out.avi"))) == 1 and os.listdir(tmp_path / "annotated") == ["frame_000000.jpg"]
    existing = tmp_path / "existing"
    existing.mkdir()
    open_sink(str(existing)).abort()
    assert existing.is_dir()


def test_display_without_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(EdgeFpnError, match="no display here"):
        open_sink("display://0")


def test_display_without_gui_support(monkeypatch):
    import edge_fpn.runtime.sinks as sinks
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(sinks, "gui_available", lambda: False)
    with pytest.raises(EdgeFpnError, match="no GUI support"):
        DisplaySink(0)


def test_http_host_defaults():
    assert parse_http("http://:8080") == ("127.0.0.1", 8080)
    assert parse_http("http://0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_http("http://localhost") == ("localhost", 8080)
    assert parse_http("http://[::1]:81/") == ("::1", 81)


def test_web_viewer_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(EdgeFpnError, match=f"port {port} on 127.0.0.1 is already in use"):
            open_sink(f"http://127.0.0.1:{port}")


def test_web_viewer_binds_loopback_by_default():
    sink = open_sink("http://:0")
    try:
        assert sink.host == "127.0.0.1" and sink.port > 0 and sink.url == f"http://127.0.0.1:{sink.port}/"
    finally:
        sink.close()
