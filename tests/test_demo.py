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
    from edge_fpn.builder.tensorrt_builder import import_tensorrt
    # backend "auto": TensorRT where it imports, else ONNX Runtime
    assert report["precision"] == "int8"
    assert report["backend"] == ("tensorrt" if import_tensorrt()[0] is not None else "onnxruntime")
    # live: the fastest engine here; without TensorRT that is FP32 (ONNX Runtime fakes INT8 Q/DQ)
    assert report["live_precision"] == ("int8" if report["backend"] == "tensorrt" else "fp32"), report["live_choice"]
    import onnxruntime
    expected = (["TensorRT"] if report["backend"] == "tensorrt" else
                ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else
                ["CPUExecutionProvider"])
    assert report["live_runs_on"] == expected  # what a GPU user reads to know the GPU was used
    assert f"live FP32 on onnxruntime ({expected[0]}), " in captured.out or report["backend"] == "tensorrt"
    # 4 s of the live step deliver ~80 frames here: fewer than 2 is a stalled live step (a hang bound,
    # not a speed goal; the speed figures are benchmarks/); the figures are measured, not left at 0
    assert report["frames"] >= 2 and report["fps"] > 0
    assert report["latency_ms"]["median"] > 0 and report["latency_ms"]["p95"] > 0
    assert set(report["stages_ms"]) >= {"preprocess"}
    # the AP report on 6 held-out scenes (DEFAULT_EVAL_SEED), INT8 bundle against PyTorch FP32.
    # Measured: PyTorch 0.810, INT8 0.798 (ratio 0.985). 6 scenes cannot resolve the project's 99%
    # (test_qdq.py checks it on 100): with the base model (before 2026-12-03) over 31 other 6-scene
    # sets the ratio spanned 0.973-1.018, over calibrations of 8-64 scenes and both layouts
    # 0.988-1.003 on these 6, while INT8 with its ranges clipped to 60% scored 0.958. 0.97 passes
    # the first two and fails the third.
    assert report["ap"]["pytorch"]["AP"] >= 0.7  # the trained model (0.70-0.88 on any 6 scenes measured)
    assert report["ap"]["bundle"]["AP"] >= 0.97 * report["ap"]["pytorch"]["AP"], report["ap"]
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert len(lines) == report["frames"]
    first = json.loads(lines[0])
    assert set(first) >= {"frame", "source", "detections"}
    # what is drawn and written live starts at the display threshold (the AP report uses all)
    assert report["score_threshold"] == 0.5
    scores = [d["score"] for line in lines for d in json.loads(line)["detections"]]
    assert scores and min(scores) >= 0.5
    video, decoded = cv2.VideoCapture(str(out / "demo.mp4")), []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        decoded.append(frame.shape)
    video.release()
    assert decoded == [(480, 640, 3)] * report["frames"]  # every delivered frame, decoded at the camera's size
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
    monkeypatch.setattr(edge_fpn.demo, "run_demo", lambda output, options: seen.update(vars(options)))
    assert main(["demo", "--score-threshold", "0.05", "--quiet"]) == 0
    assert seen["score_threshold"] == 0.05
    assert main(["demo", "--quiet"]) == 0
    assert seen["score_threshold"] is None


def test_demo_passes_track_options_on(monkeypatch, capsys):
    import edge_fpn.demo
    from edge_fpn.runtime.tracking import TrackerConfig
    seen = {}
    monkeypatch.setattr(edge_fpn.demo, "run_demo", lambda output, options: seen.update(vars(options)))
    assert main(["demo", "--track", "--track-option", "min_hits=1", "--quiet"]) == 0
    assert seen["track"] == TrackerConfig(min_hits=1)
    assert main(["demo", "--track", "--quiet"]) == 0 and seen["track"] is True
    assert main(["demo", "--track-option", "min_hits=1", "--quiet"]) == 2  # without --track: one line
    assert "it needs --track" in capsys.readouterr().err


def test_demo_live_step_with_a_tracker_config(tiny_bundle, tmp_path):
    from edge_fpn.demo import run_live
    from edge_fpn.runtime import Detector
    from edge_fpn.runtime.tracking import TrackerConfig
    with Detector(tiny_bundle) as detector:
        run_live(detector, str(tmp_path), 30.0, progress=False, score_threshold=0.3,
                 source="test://?width=320&height=240&realtime=0&frames=2", track=TrackerConfig(min_hits=1))
    first = json.loads((tmp_path / "detections.jsonl").read_text().splitlines()[0])
    assert any(d["track_id"] >= 1 for d in first["detections"])  # min_hits=1: IDs at the first frame
