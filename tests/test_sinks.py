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


# ------------------------------------------------------------------ trails of tracked objects

def _tracked(index, centres, track_ids, labels=None, source_index=None, size=(200, 300), half=6, name=""):
    """A Result with square boxes (side 2 * half) around `centres`, with these track IDs (None: no tracker)."""
    centres = np.asarray(centres, np.float32).reshape(-1, 2)
    boxes = np.concatenate([centres - half, centres + half], axis=1)
    labels = np.ones(len(centres), np.int64) if labels is None else np.asarray(labels, np.int64)
    ids = None if track_ids is None else np.asarray(track_ids, np.int64)
    detections = Detections(boxes=boxes, scores=np.full(len(boxes), 0.9, np.float32), labels=labels,
                            names=["circle"] * len(boxes), track_ids=ids)
    frame = np.full(size + (3,), 40, np.uint8)
    return Result(frame, detections, index, index / 30.0, name or "test://", name, {}, 0.01, 0.01,
                  source_index=source_index)


def _drawn_at(image, x, y, color, tolerance=40):
    """Whether a pixel within 1 of (x, y) is within `tolerance` of `color` (anti-aliased lines blend
    their ends with the background)."""
    patch = image[y - 1:y + 2, x - 1:x + 2].astype(int).reshape(-1, 3)
    return bool((np.abs(patch - np.array(color)).max(axis=1) < tolerance).any())


def _recorded(trails, result):
    """What the pipeline does on its sink thread, in frame order: record the frame's trails on the result."""
    result.trails = trails.update(result.detections, result.source_index or 0)
    return result


# a box moving 20 px to the right each frame: its earlier centres lie outside its last box
PATH = [(40 + 20 * i, 100) for i in range(6)]


def test_trails_record_centres_oldest_first_per_source():
    from edge_fpn.runtime.trails import Trails
    trails = Trails(length=4)
    assert len(trails.update(_tracked(0, [PATH[0]], [7]).detections)) == 0  # one centre: no line yet
    for i in range(1, 6):
        lines = trails.update(_tracked(i, [PATH[i], (150, 30 + 10 * i)], [7, -1]).detections)
    # track 7 only (-1 is not confirmed), its last 4 centres, oldest first
    assert lines.points.tolist() == [[list(p) for p in PATH[2:6]]] and lines.labels.tolist() == [1]
    # the same ID in another source is another track: two centres there, the oldest repeated
    other = trails.update(_tracked(0, [(10, 10)], [7]).detections, source=1)
    assert len(other) == 0
    other = trails.update(_tracked(1, [(10, 20)], [7]).detections, source=1)
    assert other.points.tolist() == [[[10, 10], [10, 10], [10, 10], [10, 20]]]


def test_image_sink_draws_the_trail_where_the_centres_were(tmp_path):
    from edge_fpn.runtime.trails import Trails
    trails = Trails()
    sink = open_sink(str(tmp_path / "annotated") + "/")
    for i, centre in enumerate(PATH):
        sink.write(_recorded(trails, _tracked(i, [centre], [7], name=f"f{i}.png")))
    sink.close()
    image = cv2.imread(str(tmp_path / "annotated" / "f5.png"))
    color = label_color(1)
    for x, y in PATH[:-1]:  # every earlier centre is on the line, in the track's (its class's) colour
        assert _drawn_at(image, x, y, color), (x, y, image[y - 1:y + 2, x - 1:x + 2])
    for x, y in PATH[:-1]:  # away from the line and the boxes: the frame's gray
        assert tuple(image[y + 20, x]) == (40, 40, 40)
    first = cv2.imread(str(tmp_path / "annotated" / "f0.png"))
    assert tuple(first[100, 60]) == (40, 40, 40)  # no trail on the first frame (nothing before it)


def test_trails_follow_each_source_with_several_sources(tmp_path):
    from edge_fpn.runtime.trails import Trails
    trails = Trails()
    for i, (x, y) in enumerate(PATH):  # track 3 in both sources, on different rows
        top = _recorded(trails, _tracked(i, [(x, y - 50)], [3], source_index=0)).annotated()
        bottom = _recorded(trails, _tracked(i, [(x, y + 50)], [3], source_index=1)).annotated()
    x = PATH[1][0]
    assert _drawn_at(top, x, 50, label_color(1)) and tuple(top[150, x]) == (40, 40, 40)
    assert _drawn_at(bottom, x, 150, label_color(1)) and tuple(bottom[50, x]) == (40, 40, 40)


def test_no_trail_without_confirmed_tracks():
    from edge_fpn.runtime.trails import Trails
    for ids in (None, [-1]):  # no tracker; a tracker that has not confirmed the track yet
        trails = Trails()
        for i, centre in enumerate(PATH):
            result = _recorded(trails, _tracked(i, [centre], ids))
            image = result.annotated()
        assert len(result.trails) == 0
        assert all(tuple(image[y, x]) == (40, 40, 40) for x, y in PATH[:-1])
        assert len(trails) == 0


def test_trail_memory_is_bounded_over_many_track_ids():
    from edge_fpn.runtime.trails import Trails
    trails = Trails(length=20, max_age=30, capacity=64)
    rng = np.random.default_rng(0)
    trails.update(_tracked(0, [(50, 50)], [0]).detections)
    held = trails.nbytes()
    for frame in range(1, 3000):  # 10 new IDs a frame, each seen for 5 frames: 30 000 IDs in all
        ids = np.arange(10 * frame - 40, 10 * frame + 10)
        ids = ids[ids >= 0]
        trails.update(_tracked(frame, rng.uniform(10, 190, (len(ids), 2)), ids).detections)
        assert len(trails) <= 64
    assert trails.nbytes() == held  # fixed arrays: no growth
    # tracks unseen for more than max_age frames are forgotten
    trails = Trails(max_age=30)
    trails.update(_tracked(0, [(50, 50), (60, 60)], [1, 2]).detections)
    for frame in range(1, 40):
        trails.update(_tracked(frame, [(60, 60)], [2]).detections)
    assert len(trails) == 1
    # 300 confirmed tracks in one frame, 64 held: trails for 64 of them, nothing breaks
    trails = Trails(capacity=64)
    for frame in range(3):
        lines = trails.update(_tracked(frame, rng.uniform(10, 190, (300, 2)), np.arange(300)).detections)
    assert len(lines) == 64 and len(trails) == 64


def test_trails_skip_bad_boxes_and_repeated_ids():
    from edge_fpn.runtime.trails import Trails
    trails = Trails()
    for frame in range(3):
        detections = _tracked(frame, [(20, 20), (30, 30), (40, 40)], [5, 5, 6]).detections
        detections.boxes[2] = np.nan  # track 6's box is not a number
        lines = trails.update(detections)
    assert lines.points[:, -1].tolist() == [[20, 20]] and len(trails) == 1
