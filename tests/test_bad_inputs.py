"""Bad input, as a new user would give it: each case is exit 2 (or EdgeFpnError / FrameError from
the API), one line, no traceback, no output left behind, and the inputs byte-identical after it.

Each case names the defect it guards against (issue 12 of the tracker, from a run of 205 inputs).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from edge_fpn.cli import main


def _checksums(*roots):
    """sha256 of every file under the given files or folders: the inputs must not change."""
    sums = {}
    for root in roots:
        root = str(root)
        paths = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        for path in paths:
            with open(path, "rb") as f:
                sums[path] = hashlib.sha256(f.read()).hexdigest()
    return sums


def _one_line_error(capsys, command):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edge-fpn {command}: error: "), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def photos(tmp_path):
    import cv2
    from conftest import textured_image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.jpg"), textured_image(i, 120, 160))
    return folder


@pytest.fixture
def clip(tmp_path):
    import cv2
    from conftest import textured_image

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(3):
        writer.write(textured_image(i, 120, 160))
    writer.release()
    return path


# ------------------------------------------------------- 1. an output that is an input is refused

def _cases(photos, clip, tmp_path):
    link = tmp_path / "link_to_clip.avi"
    link.symlink_to(clip)
    return {
        "the source's own folder as the image sink": ([str(photos), str(photos)], "folder of the source image"),
        "the same folder with a trailing slash": ([str(photos), str(photos) + "/"], "folder of the source image"),
        "a video written over itself": ([str(clip), str(clip)], "source file"),
        "one image into its own folder": ([str(photos / "p0.jpg"), str(photos)], "folder of the source image"),
        "the folder reached through ..": ([str(photos), str(photos / ".." / "photos")], "folder of the source image"),
        "a video over itself through a symlink": ([str(clip), str(link)], "source file"),
    }


@pytest.mark.parametrize("case", ["the source's own folder as the image sink", "the same folder with a trailing slash",
                                  "a video written over itself", "one image into its own folder",
                                  "the folder reached through ..", "a video over itself through a symlink"])
def test_an_output_that_is_an_input_is_refused_and_nothing_is_touched(tiny_bundle, photos, clip, tmp_path, capsys,
                                                                      case):
    args, words = _cases(photos, clip, tmp_path)[case]
    before = _checksums(photos, clip)
    listing = sorted(os.listdir(tmp_path))
    assert main(["detect", tiny_bundle, *args, "--quiet", "--force"]) == 2  # --force does not allow it either
    assert words in _one_line_error(capsys, "detect")
    assert _checksums(photos, clip) == before and sorted(os.listdir(tmp_path)) == listing


def test_an_existing_output_file_needs_force(tiny_bundle, photos, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    assert main(["detect", tiny_bundle, str(photos), str(out), "--quiet"]) == 2
    assert "exists; pass --force" in _one_line_error(capsys, "detect")
    assert out.read_text() == "keep me\n"
    assert main(["detect", tiny_bundle, str(photos), str(out), "--quiet", "--force"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_two_sinks_on_one_path_are_refused(tiny_bundle, photos, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["detect", tiny_bundle, str(photos), str(out), str(tmp_path / "." / "out.jsonl"), "--quiet"]) == 2
    assert "are the same path" in _one_line_error(capsys, "detect") and not out.exists()


def test_a_later_sink_that_cannot_be_written_leaves_none_of_the_outputs(tiny_bundle, photos, tmp_path, capsys):
    # /proc accepts os.access(W_OK) from root, but no file can be created there
    out, video = tmp_path / "a.jsonl", tmp_path / "a.avi"
    assert main(["detect", tiny_bundle, str(photos), str(out), str(video), "/proc/x.jsonl", "--quiet"]) == 2
    assert "cannot write '/proc/x.jsonl'" in _one_line_error(capsys, "detect")
    assert not out.exists() and not video.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not an image", "truncated"])
def test_a_single_unreadable_image_is_exit_2_with_no_output(tiny_bundle, tmp_path, capsys, content):
    import cv2
    from conftest import textured_image

    image = tmp_path / "bad.jpg"
    if content == "truncated":
        ok, data = cv2.imencode(".jpg", textured_image(0, 120, 160))
        content = data.tobytes()[: len(data) // 3]
    image.write_bytes(content)
    out = tmp_path / "out.jsonl"
    assert main(["detect", tiny_bundle, str(image), str(out), "--quiet"]) == 2
    assert "cannot read the image" in _one_line_error(capsys, "detect") and not out.exists()


# ------------------------------------------------------- 2. a bundle whose graph is not its manifest's

def _edited_bundle(tiny_bundle, tiny_host_bundle, tmp_path, case):
    import json
    import shutil

    bundle = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, bundle)
    path = os.path.join(bundle, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    if case == "another layout's graph under the expected name":
        shutil.copyfile(os.path.join(tiny_host_bundle, "stage2.onnx"), os.path.join(bundle, "detector.onnx"))
    elif case == "a stage file outside the bundle":
        manifest["stages"]["detector"]["file"] = "../../detector.onnx"
        shutil.copyfile(os.path.join(tiny_bundle, "detector.onnx"), str(tmp_path.parent / "detector.onnx"))
    elif case == "an input size that is not the graph's":
        manifest["preprocess"]["input_size"] = [256, 256]
    elif case == "too few class names":
        manifest["class_names"] = manifest["class_names"][:-1]
    elif case == "too many class names":
        manifest["class_names"] = manifest["class_names"] + ["extra"]
    elif case == "class names as a string":
        manifest["class_names"] = "abcde"
    elif case == "a negative input size":
        manifest["preprocess"]["input_size"] = [-320, 320]
    elif case == "a format version as a string":
        manifest["format_version"] = "2"
    with open(path, "w") as f:
        json.dump(manifest, f)
    return bundle


MANIFEST_CASES = {
    "another layout's graph under the expected name": "holds the stage2 graph, not the detector graph",
    "a stage file outside the bundle": "lies outside the bundle",
    "an input size that is not the graph's": "takes 320x320 images but the manifest's input_size is 256x256",
    "too few class names": "predictor has 5 classes (with the background) but the manifest names 4",
    "too many class names": "predictor has 5 classes (with the background) but the manifest names 6",
    "class names as a string": "class_names must be a list of names",
    "a negative input size": "preprocess.input_size must be two positive whole numbers",
    "a format version as a string": "format_version must be a whole number like 2, not '2'",
}


@pytest.mark.parametrize("command", ["check", "calibrate", "build"])
@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_a_bundle_that_does_not_match_its_graph_is_refused(tiny_bundle, tiny_host_bundle, tmp_path, capsys, case,
                                                           command):
    bundle = _edited_bundle(tiny_bundle, tiny_host_bundle, tmp_path, case)
    out = str(tmp_path / "out")
    args = {"check": ["check", bundle],
            "calibrate": ["calibrate", bundle, "--data", "synthetic:2", "--output", out, "--quiet"],
            "build": ["build", bundle, "--precision", "fp32", "--backend", "onnxruntime", "--output", out]}[command]
    code = main(args)
    if command == "check" and code == 1:  # a graph that is not its manifest's is a finding of check
        printed = capsys.readouterr().out
        assert MANIFEST_CASES[case] in printed and "clean" not in printed
    else:
        assert code == 2
        assert MANIFEST_CASES[case] in _one_line_error(capsys, command)
    assert not os.path.exists(out)


# ------------------------------------------------------------- 3. outputs that cannot be written

@pytest.mark.parametrize("command", ["export", "calibrate", "build", "demo"])
def test_an_output_that_cannot_be_written_is_one_line(tiny_bundle, command, capsys):
    # /proc exists but no folder can be made in it, even by root (a read-only or immutable place)
    out = "/proc/edge-fpn-out"
    args = {"export": ["export", "--model", "shapes", "--output", out, "--quiet"],
            "calibrate": ["calibrate", tiny_bundle, "--data", "synthetic:2", "--output", out, "--quiet"],
            "build": ["build", tiny_bundle, "--backend", "onnxruntime", "--output", out],
            "demo": ["demo", "--output", out, "--quiet"]}[command]
    assert main(args) == 2
    err = _one_line_error(capsys, command)
    assert "/proc" in err and ("cannot write into" in err or "cannot create" in err), err


def test_export_force_over_a_bundle_that_cannot_be_moved_leaves_it_and_no_old_folder(tmp_path, capsys):
    import shutil
    import subprocess

    out = tmp_path / "shapes"
    assert main(["export", "--model", "shapes", "--output", str(out), "--quiet"]) == 0
    before = _checksums(out)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(out)]).returncode != 0:
        pytest.skip("chattr +i is not available on this file system: an immovable folder cannot be made")
    try:
        assert main(["export", "--model", "shapes", "--output", str(out), "--force", "--quiet"]) == 2
        assert "cannot replace" in _one_line_error(capsys, "export")
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert sorted(os.listdir(tmp_path)) == ["shapes"]  # no .tmp-* or .old-* folder
    assert _checksums(out) == before


# ------------------------------------------------------------------------- 4. and 5. the Python API

@pytest.mark.parametrize("shape", [(1, 5000, 3), (5000, 1, 3), (1, 1, 3), (2, 2)])
def test_extreme_frames_are_letterboxed_to_at_least_one_pixel(tiny_bundle, shape):
    from edge_fpn import Detector

    with Detector(tiny_bundle) as detector:
        detections = detector(np.full(shape, 128, np.uint8))
    assert detections.boxes.shape == (len(detections), 4)
    h, w = shape[:2]
    assert np.all(detections.boxes[:, [0, 2]] <= w + 1e-3) and np.all(detections.boxes[:, [1, 3]] <= h + 1e-3)


@pytest.mark.parametrize("value", [2, -0.1, float("nan"), float("inf"), "0.5", True])
def test_the_api_refuses_a_score_threshold_outside_0_to_1(tiny_bundle, value):
    from edge_fpn import Detector
    from edge_fpn.errors import EdgeFpnError

    with pytest.raises(EdgeFpnError, match="score_threshold must be a number between 0 and 1"):
        Detector(tiny_bundle, score_threshold=value)


@pytest.mark.parametrize("bundle", [None, 3, b"engines/x"])
def test_the_api_refuses_a_bundle_that_is_not_a_path(bundle):
    from edge_fpn import Detector
    from edge_fpn.errors import EdgeFpnError

    with pytest.raises(EdgeFpnError, match="needs a bundle directory"):
        Detector(bundle)


@pytest.mark.parametrize("case", ["another layout's graph under the expected name", "too few class names",
                                  "an input size that is not the graph's"])
def test_detect_refuses_a_foreign_graph_at_load(tiny_bundle, tiny_host_bundle, tmp_path, capsys, case):
    bundle = _edited_bundle(tiny_bundle, tiny_host_bundle, tmp_path, case)
    out = tmp_path / "out.jsonl"
    assert main(["detect", bundle, "test://?frames=2&realtime=0", str(out), "--quiet"]) == 2
    assert MANIFEST_CASES[case] in _one_line_error(capsys, "detect") and not out.exists()


# --------------------------------------------------------------------- 6. and 7. options and numbers

@pytest.mark.parametrize("args, words", [
    (["demo", "--seconds", "nan"], "--seconds must be a positive number"),
    (["demo", "--seconds", "0"], "--seconds must be a positive number"),
    (["demo", "--seconds", "1e300"], "at most 86400"),  # (it wrote the bundles, then overflowed: a traceback)
    (["demo", "--eval-images", "0"], "--eval-images must be at least 1"),
    (["demo", "--calibration-images", "0"], "--calibration-images must be at least 1"),
    (["export", "--model", "shapes", "--num-classes", "3"], "brings its own classes"),
    (["export", "--arch", "fasterrcnn_resnet50_fpn", "--checkpoint", "x.pth", "--num-classes", "0"],
     "counts the background too"),
])
def test_options_are_checked_before_any_work(tmp_path, capsys, args, words):
    out = tmp_path / "out"
    assert main(args + ["--output", str(out)]) == 2
    assert words in _one_line_error(capsys, args[0])
    assert not out.exists()


def test_tool_options_are_checked_where_they_are_read(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", tiny_bundle, "--threads", "-1"]) == 2
    assert "--threads must be 0" in _one_line_error(capsys, "bench")
    assert main(["build", tiny_bundle, "--precision", "int8", "--calibration", str(tmp_path), "--max-ap-drop", "2",
                 "--output", str(out)]) == 2
    assert "--max-ap-drop is an AP difference between 0 and 1" in _one_line_error(capsys, "build")
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["detect", tiny_bundle, "test://?frames=1", str(afile / "out.jsonl")]) == 2
    assert "is a file, not a directory" in _one_line_error(capsys, "detect")
    assert main(["eval", tiny_bundle, "--synthetic", "2", "--reference", str(tmp_path / "missing.pth")]) == 2
    assert "does not exist" in _one_line_error(capsys, "eval")
    assert not out.exists()


@pytest.mark.parametrize("content, words", [
    (None, "cannot read the annotation file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is not JSON"),
    (b"[1, 2]", "needs the lists images, annotations and categories"),
    (b'{"images": [{"id": 1}], "annotations": [], "categories": []}', "lacks id or file_name"),
    (b'{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "category_id": 1}], '
     b'"categories": [{"id": 1, "name": "circle"}]}', "lacks image_id or category_id or bbox"),
    (b'{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1}]}',
     "each COCO category needs them"),
    (b'{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "category_id": 1, '
     b'"bbox": 5}], "categories": [{"id": 1, "name": "circle"}]}', "is not [x, y, width, height]"),
])
def test_eval_names_what_is_wrong_with_coco_annotations(tiny_bundle, tmp_path, capsys, content, words):
    """One line that says what the file lacks: no exception's repr (a binary file's bytes were
    printed), no KeyError from deeper down."""
    annotations = tmp_path / "annotations.json"
    if content is not None:
        annotations.write_bytes(content)
    images = tmp_path / "images"
    images.mkdir()
    assert main(["eval", tiny_bundle, "--coco", str(annotations), "--images", str(images)]) == 2
    err = _one_line_error(capsys, "eval")
    assert words in err and "\\x" not in err and "Error(" not in err, err


def test_detect_without_a_source_names_only_the_source(tiny_bundle, capsys):
    assert main(["detect", tiny_bundle]) == 2
    err = _one_line_error(capsys, "detect")
    assert "needs a source" in err and "required: source, sinks" not in err


# ------------------------------------------------------ inputs that look odd but are valid still work

def test_grayscale_rgba_and_16_bit_images_give_the_detections_of_the_color_image(shapes_bundle, tmp_path, capsys):
    import json

    import cv2
    from edge_fpn.runtime.synthetic import make_scene

    bundle = shapes_bundle("engine")[1]
    image = make_scene(1000, 3, 320, 240)[0]
    gray = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)  # what a gray file decodes to
    folder = tmp_path / "odd"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_color.png"), image)
    cv2.imwrite(str(folder / "b_rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "c_16bit.png"), image.astype(np.uint16) * 257)  # 16 bits a channel, same picture
    cv2.imwrite(str(folder / "d_gray.png"), gray[:, :, 0])
    cv2.imwrite(str(folder / "e_gray_as_color.png"), gray)
    out = tmp_path / "out.jsonl"
    assert main(["detect", bundle, str(folder), str(out), "--quiet", "--score-threshold", "0.3"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5  # none skipped as unreadable

    def boxes(record):
        return sorted((d["label"], tuple(round(v, 1) for v in d["box"])) for d in record["detections"])

    color, rgba, sixteen, gray_file, gray_color = (boxes(r) for r in records)
    assert color and rgba == color and sixteen == color  # the same pixels, decoded the same
    assert gray_file == gray_color  # a one-channel file is the gray picture in three channels
