"""`edge-fpn detect` and `edge-fpn bench` through edge_fpn.cli.main: outputs, and bad input as one
line on stderr with exit status 2 (no traceback)."""
from __future__ import annotations

import json
import os
import socket

import cv2
import pytest

from edge_fpn.cli import main


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    from conftest import textured_image
    directory = tmp_path_factory.mktemp("images")
    for i in range(2):
        cv2.imwrite(str(directory / f"im{i}.png"), textured_image(20 + i, 240, 320))
    (directory / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return directory


def test_detect_images_into_jsonl_and_annotated_directory(tiny_bundle, image_dir, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    annotated = tmp_path / "annotated"
    code = main(["detect", tiny_bundle, str(image_dir), str(out), str(annotated), "--score-threshold", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [os.path.basename(line["source"]) for line in lines] == ["im0.png", "im1.png"]
    assert all(d["score"] >= 0.5 for line in lines for d in line["detections"])
    assert sorted(os.listdir(annotated)) == ["im0.png", "im1.png"]
    assert "1 unreadable image(s) skipped" in captured.err and "2 frames in" in captured.err


def test_detect_without_sinks_prints_a_line_a_frame(tiny_bundle, capsys):
    code = main(["detect", tiny_bundle, "test://?width=320&height=240&realtime=0", "--max-frames", "2",
                 "--classes", "alpha,beta"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in captured.out.splitlines() if line.startswith("frame ")]
    assert len(lines) == 2 and "detection" in lines[0]
    assert "gamma" not in captured.out


def test_detect_video_into_video(tiny_bundle, tmp_path, capsys):
    from edge_fpn.runtime.synthetic import SyntheticCamera
    camera = SyntheticCamera(320, 240, 10.0, 2)
    source = str(tmp_path / "in.avi")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(3):
        writer.write(camera.frame(i))
    writer.release()
    out = str(tmp_path / "out.avi")
    assert main(["detect", tiny_bundle, source, out, "--quiet"]) == 0
    capture = cv2.VideoCapture(out)
    # the source's 10 fps carried into the container (a rational there: 10 to rounding)
    assert abs(capture.get(cv2.CAP_PROP_FPS) - 10.0) < 0.01
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame.shape)
    capture.release()
    assert decoded == [(240, 320, 3)] * 3  # every frame written, decoded at the source's size
    assert capsys.readouterr().err == ""


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BAD = [
    (["foo://camera"], "unknown source scheme"),
    (["no/such/video.mp4"], "does not exist"),
    (["/dev/video93"], "camera /dev/video93 does not exist"),
    (["test://", "missing/dir/out.jsonl"], "does not exist; create it first"),
    (["test://", "out.weird"], "cannot tell what kind of sink"),
    (["test://", "display://0"], "display"),
    (["test://", "--max-frames", "0"], "--max-frames must be at least 1"),
    (["test://", "--score-threshold", "2"], "--score-threshold must be a number between 0 and 1"),
    (["test://", "--classes", "unicorn"], "unknown class name(s) unicorn"),
    (["test://", "--keep-tracks"], "--keep-tracks keeps the tracker's state across reconnects; it needs --track"),
    (["test://", "--track-option", "min_hits=1"], "--track-option sets the tracker; it needs --track"),
    (["test://", "--track", "--track-option", "lost_secs=2"], "no tracker option 'lost_secs'; did you mean lost_seconds?"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_is_one_line_exit_2(tiny_bundle, args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code = main(["detect", tiny_bundle] + args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("edge-fpn detect: error: ") and message in err
    assert "Traceback" not in err


def test_rtsp_that_refuses_is_one_line(tiny_bundle, capsys):
    code = main(["detect", tiny_bundle, f"rtsp://127.0.0.1:{_free_port()}/stream"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("edge-fpn detect: error: cannot open stream rtsp://127.0.0.1")
    assert not any(line.startswith("edge-fpn") for line in err[:-1])  # (FFmpeg may log its own lines before)


def test_port_in_use_is_one_line(tiny_bundle, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["detect", tiny_bundle, "test://", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"port {port} on 127.0.0.1 is already in use" in err


def test_bad_bundle_is_one_line(tmp_path, capsys):
    assert main(["detect", str(tmp_path), "test://"]) == 2
    assert "is not an edge-fpn bundle" in capsys.readouterr().err


def _scores(path):
    return [d["score"] for line in path.read_text().splitlines() for d in json.loads(line)["detections"]]


def test_detect_shows_from_0_5_by_default_and_score_threshold_brings_the_rest_back(tiny_bundle, image_dir, tmp_path):
    default, low = tmp_path / "default.jsonl", tmp_path / "low.jsonl"
    assert main(["detect", tiny_bundle, str(image_dir), str(default), "--quiet"]) == 0
    assert main(["detect", tiny_bundle, str(image_dir), str(low), "--quiet", "--score-threshold", "0.05"]) == 0
    shown, everything = _scores(default), _scores(low)
    assert shown and min(shown) >= 0.5
    assert min(everything) < 0.5 and sorted(s for s in everything if s >= 0.5) == sorted(shown)


def _unloadable_bundle(tiny_bundle, tmp_path):
    """A bundle whose manifest reads but whose engine files are not ONNX."""
    import shutil
    bundle = tmp_path / "broken-bundle"
    shutil.copytree(tiny_bundle, bundle)
    for name in os.listdir(bundle):
        if name.endswith((".onnx", ".engine")):
            (bundle / name).write_bytes(b"not an engine")
    return str(bundle)


@pytest.mark.parametrize("failure", ["bundle cannot load", "not a bundle", "missing source", "directory without images"])
def test_a_run_that_fails_to_start_leaves_no_output(failure, tiny_bundle, image_dir, tmp_path, capsys):
    bundle, source = tiny_bundle, str(image_dir)
    if failure == "bundle cannot load":
        bundle = _unloadable_bundle(tiny_bundle, tmp_path)
    elif failure == "not a bundle":
        bundle = str(tmp_path)
    elif failure == "missing source":
        source = str(tmp_path / "no-such-video.mp4")
    else:
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("no images here")
        source = str(tmp_path / "empty")
    out = tmp_path / "out"
    out.mkdir()
    sinks = [out / "out.jsonl", out / "out.avi", out / "annotated"]
    code = main(["detect", bundle, source] + [str(s) for s in sinks])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("edge-fpn detect: error: "), err
    assert os.listdir(out) == []


def test_images_that_cannot_be_read_are_an_error_that_leaves_no_output(tiny_bundle, tmp_path, capsys):
    # a folder whose only image is broken: exit 2 and nothing written, not exit 0 and empty files
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.png").write_bytes(b"not a png")
    out, annotated = tmp_path / "out.jsonl", tmp_path / "annotated"
    assert main(["detect", tiny_bundle, str(images), str(out), str(annotated), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-fpn detect: error: cannot read the image ") and len(err.splitlines()) == 1
    assert not out.exists() and not annotated.exists()


@pytest.mark.parametrize("count", ["-3", "0"])
def test_eval_needs_at_least_one_synthetic_image(tiny_bundle, count, capsys):
    code = main(["eval", tiny_bundle, "--synthetic", count])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"edge-fpn eval: error: --synthetic N must be at least 1, not {count}"


def test_bench_reports_the_ratio(tiny_bundle, capsys):
    code = main(["bench", tiny_bundle, "--frames", "4", "--warmup", "1", "--json",
                 "--source", "test://?width=320&height=240&realtime=0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["pipeline_fps"] > 0 and report["engine_only_fps"] > 0
    # the ratio of the two figures (each rounded to 3 decimals, the ratio to 4: equal within 1%)
    assert report["ratio"] == pytest.approx(report["pipeline_fps"] / report["engine_only_fps"], rel=1e-2)
    from edge_fpn.bundle import load_manifest
    engine_steps = {"engine"} if load_manifest(tiny_bundle).layout == "engine" else {"stage1", "stage2"}
    host_steps = {"preprocess", "postprocess"} | ({"proposals"} if "stage1" in engine_steps else set())
    assert set(report["pipeline_stages_ms"]) >= engine_steps | host_steps
    assert set(report["engine_only_ms"]) == engine_steps


def test_bench_text_and_bad_frames(tiny_bundle, capsys):
    assert main(["bench", tiny_bundle, "--frames", "2", "--warmup", "0",
                 "--source", "test://?width=160&height=120&realtime=0"]) == 0
    out = capsys.readouterr().out
    assert "pipeline FPS" in out and "engine-only FPS" in out and "ratio" in out
    assert main(["bench", tiny_bundle, "--frames", "1"]) == 2
    assert "--frames must be at least 2" in capsys.readouterr().err
