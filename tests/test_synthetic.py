"""The synthetic scenes: deterministic, tight boxes inside the image, sizes for every FPN level."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge_fpn.runtime.synthetic import (CLASS_NAMES, SyntheticCamera, coco_dataset, make_scene,
                                        write_coco_dataset)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digest(count: int, seed: int) -> str:
    images, coco = coco_dataset(count, seed, 160, 128)
    h = hashlib.sha256()
    for image in images:
        h.update(image.tobytes())
    h.update(json.dumps(coco, sort_keys=True).encode())
    return h.hexdigest()


def test_same_seed_same_scenes_and_other_seeds_differ():
    first = _digest(6, 3)
    assert _digest(6, 3) == first
    assert _digest(6, 4) != first


def test_scene_is_deterministic_by_index_alone():
    # scene 5 does not depend on which scenes were made before it
    a = make_scene(9, 5, 200, 150)
    make_scene(9, 2, 200, 150)
    b = make_scene(9, 5, 200, 150)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_scene_types_and_boxes_inside_the_image():
    for index in range(10):
        image, boxes, labels = make_scene(1, index, 320, 240)
        assert image.dtype == np.uint8 and image.shape == (240, 320, 3)
        assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
        assert labels.dtype == np.int64 and len(labels) >= 1
        assert labels.min() >= 1 and labels.max() < len(CLASS_NAMES)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_boxes_are_tight_around_drawn_pixels(monkeypatch):
    """make_scene on a flat black background, without clutter or camera effects, each shape drawn
    in its own value: each box is exactly the bounding box of its shape's visible pixels, and every
    shape drawn has its box."""
    import dataclasses
    from edge_fpn.runtime import synthetic
    place = synthetic._place_shapes

    def numbered(*args, **kwargs):  # shape i drawn as (i + 1, 0, 0)
        return [dataclasses.replace(shape, color=(i + 1, 0, 0)) for i, shape in enumerate(place(*args, **kwargs))]
    monkeypatch.setattr(synthetic, "_background", lambda rng, width, height: np.zeros((height, width, 3), np.float32))
    monkeypatch.setattr(synthetic, "_clutter", lambda rng, image, count: None)
    monkeypatch.setattr(synthetic, "_finish", lambda rng, image: image.astype(np.uint8))
    monkeypatch.setattr(synthetic, "_place_shapes", numbered)
    occluded = 0
    for index in range(10):
        image, boxes, _ = make_scene(2, index, 320, 320)
        assert not image[..., 1:].any()
        drawn = []
        for value in np.unique(image[..., 0])[1:]:
            ys, xs = np.nonzero(image[..., 0] == value)
            drawn.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        assert sorted(drawn) == sorted(tuple(box) for box in boxes.astype(int).tolist()), index
        np.testing.assert_array_equal(boxes, np.round(boxes))  # whole pixels
        occluded += sum(len(np.unique(image[y1:y2, x1:x2, 0])) > 2 for x1, y1, x2, y2 in drawn)
    # some boxes overlap other shapes: there a box around all changed pixels would be wrong, and the
    # boxes of each shape's own visible pixels are what was compared
    assert occluded > 0


def test_sizes_cover_small_and_large_objects():
    sides = []
    for index in range(40):
        _, boxes, _ = make_scene(0, index, 320, 320)
        sides += list(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    sides = np.array(sides)
    # measured: 44% under 32 px, 18% over 96, 8.4 to 179 px (sizes are log-uniform in 8..192): the
    # small objects of P2 (anchor 12 px) and the large of P5-P6 (96, 192) each get a real share
    assert (sides < 32).mean() > 0.2
    assert (sides > 96).mean() > 0.05
    assert sides.min() < 14 and sides.max() > 150


def test_coco_dict_and_files(tmp_path):
    path = write_coco_dataset(str(tmp_path), 3, 5, 96, 64)
    with open(path) as f:
        coco = json.load(f)
    assert [c["name"] for c in coco["categories"]] == CLASS_NAMES[1:]
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    for info in coco["images"]:
        assert (tmp_path / info["file_name"]).is_file()
        assert (info["width"], info["height"]) == (96, 64)
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids)) > 0
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["area"] == pytest.approx(w * h) and ann["iscrowd"] == 0


def test_camera_moves_and_is_deterministic():
    camera = SyntheticCamera(320, 240, fps=30.0, seed=4)
    first = camera.frame(0)
    assert first.shape == (240, 320, 3) and first.dtype == np.uint8
    later = camera.frame(30)
    assert np.abs(first.astype(int) - later.astype(int)).mean() > 0.5  # 12.4 here: a second later, things moved
    boxes, labels = camera.ground_truth(30)
    assert len(labels) > 0 and boxes.shape == (len(labels), 4)
    again = SyntheticCamera(320, 240, fps=30.0, seed=4)
    np.testing.assert_array_equal(again.frame(30), later)
    np.testing.assert_array_equal(again.ground_truth(30)[0], boxes)
    assert not np.array_equal(SyntheticCamera(320, 240, fps=30.0, seed=5).frame(0), first)


def test_camera_motion_is_smooth():
    camera = SyntheticCamera(320, 240, fps=30.0, seed=2)
    a, b = camera.frame(10), camera.frame(11)
    far = camera.frame(100)
    step = np.abs(a.astype(int) - b.astype(int)).mean()
    assert step < np.abs(a.astype(int) - far.astype(int)).mean()


def test_camera_draws_only_labelled_shapes_with_tight_boxes():
    # the frame differs from the background only inside the ground-truth boxes, and every box
    # edge touches a drawn pixel: what is drawn is labelled, and the boxes are tight
    camera = SyntheticCamera(640, 480, fps=30.0, seed=1)
    for index in (0, 17, 95, 400):
        frame = camera.frame(index)
        boxes, labels = camera.ground_truth(index)
        assert len(labels) >= 3 and labels.min() >= 1 and labels.max() < len(CLASS_NAMES)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 480).all()
        changed = (frame != camera._background).any(axis=2)
        inside = np.zeros_like(changed)
        for x1, y1, x2, y2 in boxes.astype(int):
            inside[y1:y2, x1:x2] = True
            box = changed[y1:y2, x1:x2]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        assert not (changed & ~inside).any()


def test_camera_frames_are_independent_arrays():
    # a consumer may keep or draw on a frame: that must not change the next frames
    camera = SyntheticCamera(160, 120, fps=30.0, seed=3)
    first = camera.frame(0)
    first[:] = 0
    assert camera.frame(1).any()
    np.testing.assert_array_equal(camera.frame(2), SyntheticCamera(160, 120, fps=30.0, seed=3).frame(2))


def test_bad_camera_settings():
    with pytest.raises(ValueError):
        SyntheticCamera(8, 8)


def test_import_does_not_load_torch():
    code = "import sys, edge_fpn.runtime.synthetic as s; s.make_scene(0, 0, 64, 64); print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
