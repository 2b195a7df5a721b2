"""The README's main job, end to end (a short run): export, calibrate, build INT8, run live, report."""
from __future__ import annotations

import json

import cv2

from edge_fpn.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--output", str(out), "--seconds", "4", "--eval-images", "6",
                 "--calibration-images", "8", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    for key in ("backend", "precision", "frames", "fps", "latency_ms", "stages_ms", "ap"):
        assert key in report
    assert report["precision"] == "int8" and report["backend"] in ("onnxruntime", "tensorrt")
    assert report["frames"] >= 2 and report["fps"] > 0
    assert report["latency_ms"]["median"] > 0 and report["latency_ms"]["p95"] >= report["latency_ms"]["median"]
    assert set(report["stages_ms"]) >= {"preprocess"}
    for which in ("bundle", "pytorch"):
        assert 0.0 <= report["ap"][which]["AP"] <= 1.0
    # the INT8 bundle is a trained detector: it finds the shapes, and close to PyTorch
    assert report["ap"]["pytorch"]["AP"] > 0.2
    assert abs(report["ap"]["bundle"]["AP"] - report["ap"]["pytorch"]["AP"]) < 0.1
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert len(lines) == report["frames"]
    first = json.loads(lines[0])
    assert set(first) >= {"frame", "source", "detections"}
    video = cv2.VideoCapture(str(out / "demo.mp4"))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) >= 2
    video.release()
    assert "FPS" in captured.out


def test_demo_refuses_a_non_empty_output(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("keep")
    code = main(["demo", "--output", str(tmp_path), "--seconds", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "x.txt").read_text() == "keep"
