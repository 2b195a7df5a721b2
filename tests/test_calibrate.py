"""Calibration: streamed histograms, the four range methods, ranges.json, TensorRT's cache format,
determinism, refusal of another bundle's calibration, and bad calibration data."""
from __future__ import annotations

import json
import os
import struct
from collections import Counter

import numpy as np
import pytest

from edge_fpn.builder.cache import (format_cache, hex_to_scale, parse_cache, retarget, scale_to_hex,
                                  version_number)
from edge_fpn.builder.histogram import (AbsHistogram, amax_entropy, amax_mse, amax_percentile, compute_amax,
                                      entropy_divergences)
from edge_fpn.cli import main


# ------------------------------------------------------------------ histograms and methods

def test_histogram_grows_by_exact_merges():
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, s, 5000).astype(np.float32) for s in (0.5, 3.0, 0.1, 40.0)]
    hist = AbsHistogram(2048)
    for batch in batches:
        hist.update(batch)
    everything = np.abs(np.concatenate(batches))
    assert hist.count == everything.size
    assert hist.absmax == pytest.approx(float(everything.max()))
    assert hist.counts.sum() == everything.size
    # the range is the first max times a power of two, and the counts are exactly those of that range
    ratio = hist.upper / float(np.abs(batches[0]).max())
    assert ratio == 2 ** round(np.log2(ratio)) and hist.upper >= everything.max()
    reference = np.bincount(np.minimum((everything * np.float32(2048 / hist.upper)).astype(np.int64), 2047),
                            minlength=2048)
    # a value exactly on an edge may fall on either side of it when it was binned at a finer range
    assert np.abs(np.cumsum(reference) - np.cumsum(hist.counts)).max() <= 2


def test_histogram_zeros_and_non_finite():
    hist = AbsHistogram()
    hist.update(np.zeros(10, np.float32))
    assert hist.counts[0] == 10 and hist.upper == 0.0 and compute_amax(hist, "entropy") == 0.0
    hist.update(np.array([0.0, 2.0], np.float32))
    assert hist.counts[0] == 11 and hist.counts[-1] == 1
    from edge_fpn.errors import EdgeFpnError
    with pytest.raises(EdgeFpnError):
        hist.update(np.array([1.0, np.inf], np.float32))


def _reference_entropy(calib_hist, calib_bin_edges, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """A direct port of pytorch-quantization's _compute_amax_entropy (the loop TensorRT's method follows)."""
    def kl(p, q):
        p = p / p.sum()
        q = q / q.sum()
        total = 0.0
        for pi, qi in zip(p, q):
            if pi > 0:
                if qi <= 0:
                    return np.inf
                total += pi * np.log(pi / qi)
        return total

    bins = calib_hist[:].astype(np.float64).copy()
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1 + int(unsigned))
    divergences, arguments = [], []
    new_density_counts = np.zeros(nbins, dtype=np.float64)
    for i in range(start_bin, len(bins) + 1, stride):
        new_density_counts.fill(0)
        space = np.linspace(0, i, num=nbins + 1)
        digitized_space = np.digitize(range(i), space) - 1
        digitized_space[bins[:i] == 0] = -1
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density_counts[digitized] += bins[idx]
        counter = Counter(digitized_space)
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val
        new_density = np.zeros(i, dtype=np.float64)
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density[idx] = new_density_counts[digitized]
        reference_density = np.array(bins[:len(digitized_space)])
        reference_density[-1] += np.sum(bins[i:])
        divergences.append(kl(reference_density, new_density))
        arguments.append(i)
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return calib_bin_edges[last_argmin * stride + start_bin], divergences


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_matches_the_reference_loop(seed):
    rng = np.random.default_rng(seed)
    values = np.abs(np.concatenate([rng.laplace(0, 1, 20000), rng.normal(0, 6, 50)]))
    values[: 3000] = 0  # a ReLU-like spike at zero
    if seed == 2:
        values = values[values < 2.5]  # empty bins inside the range
    num_bins = 384  # small enough for the reference's Python loops
    counts, edges = np.histogram(values, bins=num_bins, range=(0, values.max()))
    expected, reference = _reference_entropy(counts, edges)
    ours = entropy_divergences(counts)
    finite = np.isfinite(reference)
    np.testing.assert_array_equal(np.isfinite(ours), finite)
    np.testing.assert_allclose(ours[finite], reference[finite], rtol=1e-9, atol=1e-12)
    assert amax_entropy(counts, float(edges[-1])) == pytest.approx(expected)


def test_methods_order_and_bounds():
    rng = np.random.default_rng(3)
    hist = AbsHistogram()
    for _ in range(4):
        hist.update(rng.laplace(0, 1, 50000).astype(np.float32))
    minmax = compute_amax(hist, "minmax")
    entropy = compute_amax(hist, "entropy")
    percentile = compute_amax(hist, "percentile", 99.99)
    mse = compute_amax(hist, "mse")
    assert minmax == pytest.approx(hist.absmax)
    for value in (entropy, percentile, mse):
        assert 0 < value <= minmax
    assert compute_amax(hist, "percentile", 99.0) < percentile
    # a Laplace's 99.99th percentile of |x| is ln(1e4) = 9.2; 20 of the 200,000 samples lie beyond it, so
    # the estimate spreads ~2.5%: 8% is three times that, a wrong percentile (99.9: 6.9) is far outside
    assert percentile == pytest.approx(np.log(1e4), rel=0.08)
    assert amax_percentile(hist.counts, hist.upper, 100.0) >= hist.absmax * 0.999
    assert amax_mse(hist.counts, hist.upper) == pytest.approx(mse)


# ------------------------------------------------------------------ TensorRT's cache format

def test_cache_format_is_tensorrts_and_round_trips():
    amax = {"images": 2.64, "/backbone/conv1/Conv_output_0": 127.0, "features_0": 0.0, "tiny": 1e-30}
    text = format_cache(amax, "8.6.1", "entropy")
    lines = text.split("\n")
    assert lines[0] == "TRT-8601-EntropyCalibration2" and text.endswith("\n")
    assert lines[2] == "/backbone/conv1/Conv_output_0: 3f800000"  # 127 / 127 = 1.0
    # each line: the name, then the scale amax / 127 (1 / 127 where amax is 0) as the 8 lowercase hex
    # digits of its big-endian IEEE float32, in the order given
    assert [line.rpartition(": ")[0] for line in lines[1:-1]] == list(amax)
    for line, (name, value) in zip(lines[1:-1], amax.items()):
        scale = np.float32((value if value > 0 else 1.0) / 127.0)
        assert line == f"{name}: {struct.pack('>f', scale).hex()}", line
    header, scales = parse_cache(text)
    assert header == "TRT-8601-EntropyCalibration2" and list(scales) == list(amax)
    for name, value in amax.items():
        expected = np.float32((value if value > 0 else 1.0) / 127.0)
        assert np.float32(scales[name]) == expected
    assert format_cache(amax, "10.3.0.26", "minmax").startswith("TRT-100300-MinMaxCalibration\n")
    assert version_number("8.5.2") == 8502 and version_number("10.13.0") == 101300 and version_number("11.0") == 110000
    assert retarget(text, "10.3.0").startswith("TRT-100300-EntropyCalibration2\nimages: ")
    assert hex_to_scale(scale_to_hex(0.0123)) == pytest.approx(0.0123, rel=1e-7)


def test_cache_parser_rejects_other_files():
    from edge_fpn.errors import EdgeFpnError
    for text in ("", "hello\n", "TRT-8601-EntropyCalibration2\nname 3f800000\n"):
        with pytest.raises(EdgeFpnError):
            parse_cache(text)


# ------------------------------------------------------------------ calibrating a bundle

@pytest.fixture(scope="module")
def calibration(tiny_bundle, tmp_path_factory):
    """Calibrated with --output left out, in an empty working directory: calibration/<bundle name>."""
    import contextlib
    import io
    cwd, printed = tmp_path_factory.mktemp("cal"), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.chdir(cwd)
        assert main(["calibrate", tiny_bundle, "--data", "synthetic:3", "--quiet"]) == 0
    out = os.path.join("calibration", os.path.basename(tiny_bundle))
    assert f"wrote {os.path.join(out, 'ranges.json')} and calibration.cache" in printed.getvalue()
    assert os.listdir(cwd) == ["calibration"]
    return str(cwd / out)


def _network_names(bundle, stage_file):
    """Each node output of a stage graph -> (its producer's name, whether it is a float tensor)."""
    import onnx
    from edge_fpn.builder.qdq import _float_tensors, ensure_node_names
    model = onnx.load(os.path.join(bundle, stage_file))
    ensure_node_names(model)
    floats = _float_tensors(model)
    return {o: (n.name, o in floats) for n in model.graph.node for o in n.output}


def test_calibration_outputs(calibration, tiny_bundle):
    """The engine layout: one "detector" stage, measured through the runtime, network tensors only."""
    from edge_fpn.bundle import bundle_hash
    from edge_fpn.graph_names import is_postprocess_node
    with open(os.path.join(calibration, "ranges.json")) as f:
        ranges = json.load(f)
    assert ranges["bundle_hash"] == bundle_hash(tiny_bundle)
    assert ranges["method"] == "entropy" and ranges["data"]["images"] == 3 and ranges["data"]["skipped"] == 0
    assert len(ranges["data"]["hash"]) == 64
    assert ranges["layout"] == "engine" and list(ranges["stages"]) == ["detector"]
    # the detections counted are the runtime's on the same scenes (the calibration seed, engine size)
    from edge_fpn import Detector
    from edge_fpn.builder.data import CALIBRATION_SEED
    from edge_fpn.runtime.synthetic import make_scene
    with Detector(tiny_bundle) as detector:
        counts = [len(detector(make_scene(CALIBRATION_SEED, i, 320, 320)[0])) for i in range(3)]
    assert ranges["mean_detections"] == pytest.approx(np.mean(counts), abs=0.05), counts
    detector = ranges["stages"]["detector"]
    assert all(r["qdq"] for r in detector.values())  # by default only the Q/DQ inputs
    assert len(detector) >= 70  # 75 here: every Q/DQ input of the network, not a handful
    assert all(0 < r["amax"] <= r["absmax"] + 1e-6 for r in detector.values() if r["absmax"] > 0)
    # the first convolution's input: the normalized image the graph computes from the uint8 frame
    import onnx
    graph = onnx.load(os.path.join(tiny_bundle, "detector.onnx"), load_external_data=False).graph
    first_conv_input = next(n for n in graph.node if n.op_type == "Conv").input[0]
    # ImageNet mean/std bound it by (1 - 0.406) / 0.225 = 2.64 and reach (0 - 0.485) / 0.229 = -2.12:
    # measured after normalization, not on 0..255 or 0..1 pixels
    assert detector[first_conv_input]["qdq"] and 2.0 < detector[first_conv_input]["amax"] < 2.7
    # network tensors only: float outputs of backbone / FPN / RPN head / box head nodes
    produced = _network_names(tiny_bundle, "detector.onnx")
    for name in detector:
        node, is_float = produced[name]
        assert is_float and not is_postprocess_node(node), (name, node)
        assert node.startswith(("/backbone/", "/rpn_head/", "/box_head/", "/box_predictor/")) or name == first_conv_input
    with open(os.path.join(calibration, "calibration.cache")) as f:
        header, scales = parse_cache(f.read())
    assert header.startswith("TRT-") and header.endswith("-EntropyCalibration2") and set(scales) == set(detector)
    for name, r in detector.items():
        assert np.float32(scales[name]) == np.float32(r["amax"] / 127.0) or r["absmax"] == 0


def test_host_layout_calibration(tiny_host_bundle, tmp_path):
    """The host layout: stage 1 on the runtime's tensor, stage 2 on the proposals stage 1 really gave."""
    out = str(tmp_path / "cal")
    assert main(["calibrate", tiny_host_bundle, "--data", "synthetic:2", "--output", out, "--quiet"]) == 0
    with open(os.path.join(out, "ranges.json")) as f:
        ranges = json.load(f)
    assert ranges["layout"] == "host" and ranges["mean_proposals"] > 0
    stage1, stage2 = ranges["stages"]["stage1"], ranges["stages"]["stage2"]
    assert stage1["images"]["qdq"] and stage1["images"]["amax"] > 0
    assert all(r["qdq"] for t in (stage1, stage2) for r in t.values())
    assert len(stage1) >= 60 and len(stage2) == 3  # stage 1: its 75 convolutions' inputs, not a handful
    # stage 2's box arithmetic (computed from the proposals alone) is never measured
    assert "proposals" not in stage2 and all("Gather" not in name for name in stage2)
    with open(os.path.join(out, "calibration.cache")) as f:
        _, scales = parse_cache(f.read())
    assert set(scales) == set(stage1) | set(stage2)


def test_all_tensors_calibration_adds_every_activation(calibration, tiny_bundle, tmp_path):
    from edge_fpn.graph_names import is_postprocess_node
    out = str(tmp_path / "all")
    assert main(["calibrate", tiny_bundle, "--data", "synthetic:3", "--tensors", "all", "--output", out, "--quiet"]) == 0
    with open(os.path.join(out, "ranges.json")) as f:
        full = json.load(f)
    with open(os.path.join(calibration, "ranges.json")) as f:
        only = json.load(f)
    assert only["tensors"] == "qdq" and full["tensors"] == "all"
    # 163 against 75 here: --tensors all measured every network activation, not only the Q/DQ inputs
    assert len(full["stages"]["detector"]) > 2 * len(only["stages"]["detector"])
    for stage, tensors in only["stages"].items():
        assert {n for n, r in full["stages"][stage].items() if r["qdq"]} == set(tensors)
        assert all(tensors[n] == full["stages"][stage][n] for n in tensors)  # the same numbers either way
    # every activation of the network, and nothing of the postprocessing or the preprocessing
    produced = _network_names(tiny_bundle, "detector.onnx")
    measured = full["stages"]["detector"]
    assert all(produced[n][1] and not is_postprocess_node(produced[n][0]) for n in measured)
    assert "/box_predictor/cls_score/Gemm_output_0" in measured and "/rpn_head/cls_logits/Conv_output_0" in measured
    assert not [n for n in measured if n.startswith(("/Cast", "/Div", "/Sub"))]  # uint8 -> float steps


def test_calibrating_twice_gives_the_same_ranges(calibration, tiny_bundle, tmp_path):
    again = str(tmp_path / "again")
    assert main(["calibrate", tiny_bundle, "--data", "synthetic:3", "--output", again, "--quiet"]) == 0
    with open(os.path.join(calibration, "ranges.json")) as f:
        first = json.load(f)
    with open(os.path.join(again, "ranges.json")) as f:
        second = json.load(f)
    assert first["stages"] == second["stages"] and first["data"]["hash"] == second["data"]["hash"]
    with open(os.path.join(calibration, "calibration.cache")) as a, open(os.path.join(again, "calibration.cache")) as b:
        assert a.read() == b.read()


def test_calibration_for_another_bundle_is_refused(calibration, tiny_bundle, tmp_path, capsys):
    import shutil
    other = str(tmp_path / "other")
    shutil.copytree(tiny_bundle, other)
    import onnx
    graph = onnx.load(os.path.join(other, "detector.onnx"))
    graph.doc_string = "another bundle"  # any change of a stage file changes the bundle hash
    onnx.save(graph, os.path.join(other, "detector.onnx"))
    out = str(tmp_path / "engine")
    assert main(["build", other, "--precision", "int8", "--calibration", calibration, "--backend", "onnxruntime",
                 "--output", out, "--eval-data", "none"]) == 2
    err = capsys.readouterr().err
    assert "was made for another bundle" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)
    from edge_fpn.builder.calibrate import load_ranges
    from edge_fpn.errors import EdgeFpnError
    with pytest.raises(EdgeFpnError, match="another bundle"):
        load_ranges(calibration, other)


# ------------------------------------------------------------------ bad calibration data

def _write_images(directory, count, unreadable):
    import cv2
    from conftest import textured_image
    os.makedirs(directory, exist_ok=True)
    for i in range(count):
        cv2.imwrite(os.path.join(directory, f"img{i:02d}.png"), textured_image(100 + i, 120, 160))
    for i in range(unreadable):
        with open(os.path.join(directory, f"broken{i:02d}.jpg"), "wb") as f:
            f.write(b"not an image at all")


def _exit_and_error(args, capsys):
    status = main(args)
    err = capsys.readouterr().err.strip()
    return status, err


def test_no_readable_image_is_an_error(tiny_bundle, tmp_path, capsys):
    data = str(tmp_path / "broken")
    _write_images(data, 0, 3)
    out = str(tmp_path / "cal")
    status, err = _exit_and_error(["calibrate", tiny_bundle, "--data", data, "--output", out, "--quiet"], capsys)
    assert status == 2 and "none of the 3 entries" in err and len(err.splitlines()) == 1
    assert not os.path.exists(out)
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    status, err = _exit_and_error(["calibrate", tiny_bundle, "--data", empty, "--output", out, "--quiet"], capsys)
    assert status == 2 and "no image files" in err
    status, err = _exit_and_error(["calibrate", tiny_bundle, "--data", str(tmp_path / "nope" / "*.png"),
                                   "--output", out, "--quiet"], capsys)
    assert status == 2 and "matches no file" in err
    assert not os.path.exists(out) and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    # without --output: the calibration/ folder made for it does not stay behind
    work = tmp_path / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        status, err = _exit_and_error(["calibrate", tiny_bundle, "--data", data, "--quiet"], capsys)
    assert status == 2 and "none of the 3 entries" in err and os.listdir(work) == []


def test_unreadable_images_are_skipped_and_counted(tiny_bundle, tmp_path, capsys):
    data = str(tmp_path / "mixed")
    _write_images(data, 2, 1)
    out = str(tmp_path / "cal")
    assert main(["calibrate", tiny_bundle, "--data", data, "--output", out, "--quiet"]) == 0
    assert "1 unreadable skipped" in capsys.readouterr().out
    with open(os.path.join(out, "ranges.json")) as f:
        ranges = json.load(f)
    assert ranges["data"]["images"] == 2 and ranges["data"]["skipped"] == 1
    # asking for many more images than are readable: fewer than half is an error, nothing written
    out2 = str(tmp_path / "cal2")
    status, err = _exit_and_error(["calibrate", tiny_bundle, "--data", data, "--num", "3", "--output", out2,
                                   "--quiet"], capsys)
    assert status == 0  # 2 readable of 3 asked: enough
    status, err = _exit_and_error(["calibrate", tiny_bundle, "--data", str(tmp_path / "mixed" / "*"), "--num", "7",
                                   "--output", str(tmp_path / "cal3"), "--quiet"], capsys)
    assert status == 2 and "fewer than half" in err and not os.path.exists(str(tmp_path / "cal3"))


def test_bad_arguments(tiny_bundle, tmp_path, capsys):
    out = str(tmp_path / "cal")
    for args, words in ((["--data", "synthetic:0"], "at least 1"),
                        (["--data", "synthetic:x"], "synthetic:N"),
                        (["--data", str(tmp_path / "missing")], "does not exist"),
                        (["--data", "synthetic:2", "--method", "percentile", "--percentile", "0"], "percentile")):
        status, err = _exit_and_error(["calibrate", tiny_bundle, *args, "--output", out, "--quiet"], capsys)
        assert status == 2 and words in err, (args, err)
    status, err = _exit_and_error(["calibrate", str(tmp_path), "--data", "synthetic:2", "--output", out], capsys)
    assert status == 2 and "manifest.json" in err
    assert not os.path.exists(out)


def test_video_source(tmp_path):
    import cv2
    from conftest import textured_image
    from edge_fpn.builder.data import open_source
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(9):
        writer.write(textured_image(i, 120, 160))
    writer.release()
    source = open_source(path, (320, 320), num=3)
    frames = list(source)
    assert len(frames) == 3 and all(f is not None and f.shape == (120, 160, 3) for _, f in frames)
    assert [name for name, _ in frames] == ["clip.avi#0", "clip.avi#3", "clip.avi#6"]
