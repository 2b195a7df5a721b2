"""benchmarks/gpu_speed.py and its profile helper (benchmarks/ort_profile.py), on the CPU.

A GPU session has minutes: what can be checked here is checked here, so that the one run there
measures instead of finding a broken call (the bench ratio printed "n/a" on the first GPU run,
because it still looked for a keyword that `bench` had moved into its options)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_speed  # noqa: E402
import ort_profile  # noqa: E402


def test_the_bench_ratio_is_a_figure(tiny_bundle):
    assert re.fullmatch(r"\d+\.\d{3} \(\d+/\d+ FPS\)", gpu_speed.bench_ratio(tiny_bundle, frames=4, device="cpu"))


def test_the_bench_ratio_says_why_not_in_its_cell(tiny_bundle):
    assert gpu_speed.bench_ratio(tiny_bundle, frames=1, device="cpu").startswith("n/a (EdgeFpnError: --frames must be")


def test_without_a_gpu_it_says_why_and_measures_nothing():
    if gpu_speed.gpu_missing() is None:
        pytest.skip("a GPU is here")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_speed.py"), "--models", "shapes"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("gpu_speed: nothing measured: "), done.stdout + done.stderr


def test_bad_arguments_are_refused():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_speed.py"), "--profile-runs", "-1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--profile-runs at least 0" in done.stderr


def _event(node, op, provider, microseconds, cat="Node", suffix="_kernel_time", ts=10):
    return {"cat": cat, "name": node + suffix, "dur": microseconds, "ts": ts,
            "args": {"op_name": op, "provider": provider}}


def test_the_summary_sums_kernels_per_op_and_provider_per_run():
    trace = [_event("conv1", "Conv", "CUDAExecutionProvider", 3000), _event("conv2", "Conv", "CUDAExecutionProvider", 1000),
             _event("nms", "NonMaxSuppression", "CPUExecutionProvider", 4000),
             _event("conv1", "Conv", "CUDAExecutionProvider", 3000),  # the second run of the same node
             _event("conv1", "Conv", "CUDAExecutionProvider", 999, suffix="_fence_before"),  # not a kernel
             {"cat": "Session", "name": "model_run", "dur": 99999, "ts": 1}]
    summary = ort_profile.summarize(trace, runs=2)
    assert summary["kernel_ms"] == pytest.approx(5.5)
    assert summary["ops"] == [{"op": "Conv", "ms": 3.5, "nodes": 2}, {"op": "NonMaxSuppression", "ms": 2.0, "nodes": 1}]
    assert summary["providers"] == {"CUDAExecutionProvider": {"nodes": 2, "ms": 3.5, "ops": ["Conv"]},
                                    "CPUExecutionProvider": {"nodes": 1, "ms": 2.0, "ops": ["NonMaxSuppression"]}}
    assert [(row["node"], row["ms"]) for row in summary["slowest_nodes"]] == [("conv1", 3.0), ("nms", 2.0), ("conv2", 0.5)]
    text = ort_profile.format_profile("x", summary)
    assert "slowest nodes: conv1 (Conv) 3.000 ms; nms (NonMaxSuppression) 2.000 ms" in text
    assert "CPUExecutionProvider: 1 nodes, 2.00 ms (NonMaxSuppression)" in text


def test_a_real_profile_of_the_engine_graph(tiny_bundle):
    from conftest import textured_image
    from edge_fpn import Detector

    with Detector(tiny_bundle) as detector:
        inputs, _ = detector.layout.preprocess(textured_image(3, 480, 640))
    path = os.path.join(tiny_bundle, "detector.onnx")
    one = ort_profile.profile_session(path, inputs, ["CPUExecutionProvider"], runs=1, warmup=2)
    three = ort_profile.profile_session(path, inputs, ["CPUExecutionProvider"], runs=3, warmup=0)
    assert list(one["providers"]) == ["CPUExecutionProvider"] and one["session_providers"] == ["CPUExecutionProvider"]
    ops = {row["op"]: row for row in one["ops"]}
    assert {"Conv", "RoiAlign", "NonMaxSuppression"} <= set(ops) and all(row["ms"] > 0 for row in one["ops"])
    # every node once, whatever the number of runs and warm-ups (warm-up runs are left out)
    assert sum(row["nodes"] for row in one["ops"]) == one["providers"]["CPUExecutionProvider"]["nodes"]
    assert {r["op"]: r["nodes"] for r in one["ops"]} == {r["op"]: r["nodes"] for r in three["ops"]}
    nodes = one["providers"]["CPUExecutionProvider"]["nodes"]
    assert one["kernel_events"] == nodes and three["kernel_events"] == 3 * nodes  # the warm-ups are left out


def test_one_array_feeds_a_graph_of_one_input(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = str(tmp_path / "relu.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    summary = ort_profile.profile_session(path, np.ones(4, np.float32), ["CPUExecutionProvider"], runs=2, warmup=1)
    assert [row["op"] for row in summary["ops"]] == ["Relu"] and summary["kernel_events"] == 2


@pytest.mark.filterwarnings("ignore:Duplicate provider")  # CPU standing in for CUDA is named twice
def test_the_profile_step_of_gpu_speed_on_the_cpu_provider(tiny_bundle, reference_models, tmp_path, monkeypatch):
    """profile_paths as gpu_speed calls it, with the CPU provider standing in for CUDA's."""
    from conftest import get_model, textured_image
    from edge_fpn import Detector
    from host_speed import naive_whole_model, to_tensor

    model = get_model(reference_models, "fasterrcnn_mobilenet_v3_large_320_fpn")
    frame = textured_image(5, 480, 640)
    naive_path = str(tmp_path / "whole.onnx")
    naive_whole_model(model, to_tensor(frame), naive_path)
    monkeypatch.setattr(gpu_speed, "CUDA", "CPUExecutionProvider")
    with Detector(tiny_bundle) as detector:
        profiles = gpu_speed.profile_paths({"engine": detector}, {"engine": tiny_bundle}, naive_path, frame, runs=1)
    assert set(profiles) == {"edge-fpn engine", "naive onnx"}
    for summary in profiles.values():
        assert summary["kernel_ms"] > 0 and "NonMaxSuppression" in {row["op"] for row in summary["ops"]}
