"""The README's main job, end to end (a short run): export, calibrate, build INT8, run live, report."""
from __future__ import annotations

import json

import cv2
import pytest

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
    # live: the fastest engine here; without TensorRT that is FP32 (ONNX Runtime fakes INT8 Q/DQ)
    assert report["live_precision"] == ("int8" if report["backend"] == "tensorrt" else "fp32"), report["live_choice"]
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
    # what is drawn and written live starts at the display threshold (the AP report uses all)
    assert report["score_threshold"] == 0.5
    scores = [d["score"] for line in lines for d in json.loads(line)["detections"]]
    assert scores and min(scores) >= 0.5
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


@pytest.mark.parametrize("threshold", [None, 0.05])
def test_demo_live_step_score_threshold(tiny_bundle, tmp_path, threshold):
    from edge_fpn.demo import run_live
    from edge_fpn.runtime import Detector
    with Detector(tiny_bundle) as detector:
        stats, shown_from = run_live(detector, str(tmp_path), 30.0, progress=False, score_threshold=threshold,
                                     source="test://?width=320&height=240&realtime=0&frames=3")
    assert stats["frames"] == 3 and shown_from == (0.5 if threshold is None else threshold)
    lines = (tmp_path / "detections.jsonl").read_text().splitlines()
    scores = [d["score"] for line in lines for d in json.loads(line)["detections"]]
    assert len(lines) == 3 and scores
    if threshold is None:
        assert min(scores) >= 0.5
    else:
        assert min(scores) < 0.5 and min(scores) >= 0.05


def test_demo_passes_score_threshold_on(monkeypatch):
    import edge_fpn.demo
    seen = {}
    monkeypatch.setattr(edge_fpn.demo, "run_demo", lambda *args, **kwargs: seen.update(kwargs))
    assert main(["demo", "--score-threshold", "0.05", "--quiet"]) == 0
    assert seen["score_threshold"] == 0.05
    assert main(["demo", "--quiet"]) == 0
    assert seen["score_threshold"] is None
