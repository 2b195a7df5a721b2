"""TensorRT-RTX (CPU only): the host layout's stage 2 (RoiAlign) parses and builds for SM86 through the
ROIAlign_TRT stand-in of edge_fpn/export/rtx_roialign.py (its docstring names the two TensorRT-RTX 1.7.1
gaps it works around), so that NVIDIA's RoiAlign importer itself runs on edge-fpn's graphs."""
from __future__ import annotations

import json
import os

import pytest

import tensorrt_rtx_support as rtx
from edge_fpn.export import rtx_roialign

if rtx.rtx() is None:
    pytest.skip("tensorrt-rtx is not installed (x86-64 Linux only: pip install -e '.[dev]')", allow_module_level=True)


@pytest.fixture(scope="module")
def host_bundle(shapes_bundle):
    """The shipped model ("shapes") exported in the host layout: (bundle dir, manifest dict)."""
    out = shapes_bundle("host")[1]
    with open(os.path.join(out, "manifest.json")) as f:
        return out, json.load(f)


def roialign_attributes(path):
    import onnx
    from onnx import helper
    model = onnx.load(path, load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == "RoiAlign"]
    assert len(nodes) == 1
    return {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}


def test_stage2_parses_with_the_stand_in(host_bundle):
    bundle, manifest = host_bundle
    ok, errors, summary = rtx.parse_onnx(os.path.join(bundle, "stage2.onnx"))
    assert ok and errors == []
    channels = manifest["levels"][0]["feature_shape"][0]
    out_h, out_w = manifest["roi"]["pooler_output_size"]
    assert summary.plugin_layers == [{"name": "/roi_pool/RoiAlign", "type": "PLUGIN_V3",
                                      "output_shape": (-1, channels, out_h, out_w), "output_dtype": "FLOAT"}]
    assert [name for name, _, _ in summary.outputs] == ["class_logits", "box_regression"]
    assert rtx_roialign.ensure_plugin_loading() in ("wheel", "symlink-preload", "by-name")


def test_stand_in_receives_the_importers_fields(host_bundle):
    bundle, manifest = host_bundle
    path = os.path.join(bundle, "stage2.onnx")
    attributes = roialign_attributes(path)
    ok, errors, summary = rtx.parse_onnx(path)
    assert ok, errors
    assert len(summary.stand_in_fields) == 1
    fields = summary.stand_in_fields[0]
    assert fields["output_height"] == attributes["output_height"] == manifest["roi"]["pooler_output_size"][0] == 7
    assert fields["output_width"] == attributes["output_width"] == manifest["roi"]["pooler_output_size"][1]
    assert fields["sampling_ratio"] == attributes["sampling_ratio"] == manifest["roi"]["sampling_ratio"] == 2
    assert fields["spatial_scale"] == pytest.approx(attributes["spatial_scale"])
    assert rtx.COORDINATE_TRANSFORMATION_MODES[fields["coordinate_transformation_mode"]] == \
        attributes["coordinate_transformation_mode"].decode() == "output_half_pixel"
    assert rtx.ROIALIGN_MODES[fields["mode"]] == attributes.get("mode", b"avg").decode() == "avg"
    record = rtx_roialign.stand_in_creator().received[-1]
    assert record["name"] == "/roi_pool/RoiAlign" and record["phase"] == "BUILD"
    assert record["types"] == {"coordinate_transformation_mode": "INT32", "mode": "INT32", "output_height": "INT32",
                               "output_width": "INT32", "sampling_ratio": "INT32", "spatial_scale": "FLOAT32"}


def test_importer_maps_the_other_string_attributes(tmp_path):
    """half_pixel / max and float16: the other codes, and HALF through the stand-in."""
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("RoiAlign", ["X", "rois", "batch"], ["Y"], coordinate_transformation_mode="half_pixel",
                            mode="max", output_height=5, output_width=3, sampling_ratio=0, spatial_scale=0.25)
    graph = helper.make_graph([node], "roialign", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT16, [2, 8, 16, 16]),
        helper.make_tensor_value_info("rois", TensorProto.FLOAT16, ["n", 4]),
        helper.make_tensor_value_info("batch", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, ["n", 8, 5, 3])])
    path = str(tmp_path / "roialign.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    ok, errors, summary = rtx.parse_onnx(path)
    assert ok, errors
    assert summary.stand_in_fields == [{"coordinate_transformation_mode": 1, "mode": 0, "output_height": 5,
                                        "output_width": 3, "sampling_ratio": 0, "spatial_scale": 0.25}]
    assert summary.outputs == [("Y", (-1, 8, 5, 3), "HALF")]
    assert dict(rtx_roialign.stand_in_creator().received[-1]["fields"]) == summary.stand_in_fields[0]


def test_stage2_builds_for_sm86(host_bundle):
    bundle, _ = host_bundle
    plan = rtx.build_sm86(os.path.join(bundle, "stage2.onnx"))
    assert isinstance(plan, bytes) and len(plan) > 1_000_000  # the box head's weights are in it
    # the plugin layer is serialized with the built-in ROIAlign_TRT v2's fields
    assert b"ROIAlign_TRT" in plan
    for name, _, _ in rtx.ROIALIGN_FIELDS:
        assert name.encode() in plan


def test_builder_errors_are_one_sentence_from_the_real_builder(host_bundle):
    from dataclasses import replace
    from edge_fpn.bundle import load_manifest
    from edge_fpn.errors import EdgeFpnError

    bundle, _ = host_bundle
    stage = load_manifest(bundle).stages["stage2"]
    reversed_range = replace(stage, dynamic_axes={"num_proposals": [300, 1]})  # min > max: the builder refuses
    with pytest.raises(EdgeFpnError, match=r"refused the optimization profile of stage2.onnx \(proposals: min \[300, 4\]"):
        rtx.build_sm86(os.path.join(bundle, "stage2.onnx"), stage=reversed_range)
