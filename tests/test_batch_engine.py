"""Batch-N engine graphs (`export --batch N`): every image of a batch equals the batch-1 graph's
result on it, detection for detection (and so torchvision's); padding slots give nothing; the graph
keeps Cast as the image's only consumer and one RPN NMS; the pipeline runs the newest frame of
each source in one call; bad batch sizes are one line."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from conftest import TEST_CLASSES, TEST_SIZE, get_model, textured_image
from detection_matching import assert_same_sequence, matched_share

from edge_fpn import Detector
from edge_fpn.bundle import load_manifest
from edge_fpn.errors import EdgeFpnError

ARCHS = ["fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn"]
BATCH = 3


@pytest.fixture(scope="session")
def batch_bundle(tmp_path_factory, reference_models):
    bundles = {}

    def make(arch, batch=BATCH):
        if (arch, batch) not in bundles:
            from edge_fpn.export.onnx_export import ExportOptions, export_bundle
            out = str(tmp_path_factory.mktemp("batch") / f"{arch}-b{batch}")
            export_bundle(get_model(reference_models, arch), arch, TEST_CLASSES, TEST_SIZE, out,
                          ExportOptions(progress=False, batch=batch))
            bundles[arch, batch] = out
        return bundles[arch, batch]
    return make


def _frames():
    # three engine-sized frames and one that letterboxes (another image_size per batch item)
    return [textured_image(seed, *TEST_SIZE) for seed in (0, 1, 2)] + [textured_image(4, 240, 320)]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_batch_item_equals_the_batch1_graph_and_torchvision(bundle_factory, batch_bundle, arch):
    from test_engine_fidelity import _torchvision
    model, single = bundle_factory(arch, layout="engine")
    frames = _frames()
    with Detector(single) as one, Detector(batch_bundle(arch)) as many:
        assert many.batch == BATCH and one.batch == 1
        ref = [one(frame) for frame in frames]
        got = many.detect_batch(frames)  # a full batch of 3, then 1 frame + 2 padding slots
        got_alone = many(frames[1])  # one frame padded to the batch
    for index, (r, g) in enumerate(zip(ref, got)):
        assert len(g) == len(r) > 0, f"{arch} frame {index}"
        assert_same_sequence(r.boxes, r.scores, g.boxes, g.scores)  # measured: identical (difference 0.0)
        assert (g.labels == r.labels).all()
    assert_same_sequence(ref[1].boxes, ref[1].scores, got_alone.boxes, got_alone.scores)
    for frame, ours in zip(frames[:3], got[:3]):  # and torchvision's own detections on engine-sized frames
        theirs = _torchvision(model, frame)
        mine = (ours.boxes, ours.scores, ours.labels)
        assert matched_share(theirs, mine, min_score=0.05) == 1.0 and matched_share(mine, theirs, min_score=0.05) == 1.0


def test_padding_slots_give_no_detections(batch_bundle):
    from edge_fpn import graph_names as names
    with Detector(batch_bundle(ARCHS[0])) as detector:
        prepared = detector.preprocess(_frames()[0])
        engine = detector.layout.engine
        blank = {names.IMAGE: np.zeros((BATCH,) + TEST_SIZE + (3,), np.uint8),
                 names.IMAGE_SIZE: np.zeros((BATCH, 2), np.float32)}
        blank[names.IMAGE][0] = prepared[0][names.IMAGE][0]
        blank[names.IMAGE_SIZE][0] = prepared[0][names.IMAGE_SIZE]
        outputs = engine(blank)
    counts = outputs[names.NUM_DETECTIONS]
    assert counts.shape == (BATCH,) and counts[0] > 0 and (counts[1:] == 0).all()
    assert not outputs[names.BOXES][1:].any() and not outputs[names.SCORES][1:].any()


def test_the_batch_graph_keeps_cast_first_and_one_rpn_nms(batch_bundle):
    bundle = batch_bundle(ARCHS[0])
    manifest = load_manifest(bundle)
    assert manifest.batch == BATCH
    stage = manifest.stages["detector"]
    assert [t.shape for t in stage.inputs] == [[BATCH, *TEST_SIZE, 3], [BATCH, 2]]
    detections = manifest.roi.detections_per_img
    assert {t.name: t.shape for t in stage.outputs} == {"boxes": [BATCH, detections, 4], "scores": [BATCH, detections],
                                                        "labels": [BATCH, detections], "num_detections": [BATCH]}
    graph = onnx.load(os.path.join(bundle, "detector.onnx")).graph
    consumers = [node.op_type for node in graph.node if "image" in node.input]
    assert consumers == ["Cast"]  # TensorRT takes UINT8 only into a Cast
    ops = [node.op_type for node in graph.node]
    assert ops.count("NonMaxSuppression") == 2  # one RPN NMS (levels as classes, batch axis), one final
    assert not {"NonZero", "If", "Loop", "Scan", "ScatterND", "ScatterElements"} & set(ops)
    # the postprocessing keeps its scopes (the builder keeps them FP32, Q/DQ leaves them alone)
    from edge_fpn.graph_names import POSTPROCESS_SCOPES
    steps = [node for node in graph.node if node.op_type in ("TopK", "NonMaxSuppression", "RoiAlign", "MatMul")
             and "/box_head" not in node.name and "/box_predictor" not in node.name]
    assert steps and all(node.name.startswith(tuple(POSTPROCESS_SCOPES)) for node in steps), \
        [node.name for node in steps if not node.name.startswith(tuple(POSTPROCESS_SCOPES))]
    from edge_fpn.export.check import check_path
    assert check_path(bundle, "jetpack6.1") == []


class CountingEngine:
    def __init__(self, engine):
        self.engine, self.calls = engine, []
        self.input_names, self.output_names = engine.input_names, engine.output_names

    def __call__(self, inputs):
        self.calls.append(int((inputs["image_size"].reshape(-1, 2)[:, 0] > 0).sum()))
        return self.engine(inputs)

    def close(self):
        self.engine.close()


def test_pipeline_runs_the_frames_of_all_sources_in_one_call(bundle_factory, batch_bundle):
    from edge_fpn.runtime.pipeline import Pipeline
    sources = [f"test://?width=320&height=320&realtime=0&frames=4&seed={seed}" for seed in (1, 2, 3)]
    detector = Detector(batch_bundle(ARCHS[0]))
    counting = detector.layout.engine = CountingEngine(detector.layout.engine)
    with detector, Pipeline(detector, sources, quiet=True, score_threshold=0.05) as pipeline:
        results = list(pipeline)
    # file sources are waited for: 4 calls of 3 frames, none padded
    assert counting.calls == [3, 3, 3, 3]
    by_source = {(r.source_index, r.index): r.detections for r in results}
    assert sorted(by_source) == [(s, i) for s in range(3) for i in range(4)]
    from edge_fpn.runtime.sources import open_source
    with Detector(bundle_factory(ARCHS[0], layout="engine")[1]) as single:
        for source_index in (0, 2):
            with open_source(sources[source_index]) as source:
                frame = source.read().frame
            ref = single(frame)
            got = by_source[source_index, 0]
            assert_same_sequence(ref.boxes, ref.scores, got.boxes, got.scores)


def test_bad_batch_sizes_are_one_line(batch_bundle, tmp_path, capsys):
    from edge_fpn.cli import main
    for args, message in ((["--batch", "0"], "--batch must be a whole number from 1 to 64"),
                          (["--batch", "100000"], "--batch must be a whole number from 1 to 64"),  # (was a traceback)
                          (["--batch", "2", "--postprocess", "host"], "--batch 2 needs the engine layout")):
        code = main(["export", "--model", "shapes", "--output", str(tmp_path / "out"), "--quiet", *args])
        err = capsys.readouterr().err
        assert code == 2, err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    # a manifest whose batch is not its graph's
    import shutil
    bundle = str(tmp_path / "edited")
    shutil.copytree(batch_bundle(ARCHS[0]), bundle)
    path = os.path.join(bundle, "manifest.json")
    data = json.load(open(path))
    data["batch"] = 0
    json.dump(data, open(path, "w"))
    with pytest.raises(EdgeFpnError, match="batch must be a whole number >= 1, not 0"):
        load_manifest(bundle)
    data["batch"] = 2
    for tensor in data["stages"]["detector"]["inputs"]:
        tensor["shape"][0] = 2
    json.dump(data, open(path, "w"))
    with pytest.raises(EdgeFpnError, match="does not match its manifest"):
        Detector(bundle)
