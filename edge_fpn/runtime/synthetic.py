"""Synthetic scenes of simple shapes: the data the shipped model is trained and evaluated on.

numpy + OpenCV only (no torch): the ``test://`` camera source renders the moving version of these
scenes, so it lives in the runtime. Everything is deterministic by (seed, index): a numpy
Generator is seeded from both, and all randomness comes from it.

Boxes are the tight boxes of the *visible* pixels of each drawn shape (after occlusion), in xyxy
pixel-edge coordinates. A shape that would be mostly hidden (by other shapes or the image border)
is left out of the scene altogether, so the image never shows an unlabelled shape.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

CLASS_NAMES = ["__background__", "circle", "square", "triangle", "star", "ring"]

# an object is annotated only if at least this share of its pixels stays visible
MIN_VISIBLE_FRACTION = 0.5
# sub-pixel precision of polygon vertices (OpenCV's `shift`): smooth motion and exact sizes
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Shape:
    """One object: class label, centre, circumscribed diameter (px), rotation and colour."""
    label: int
    cx: float
    cy: float
    size: float
    angle: float  # radians
    color: Tuple[int, int, int]
    inner: float  # ring: hole diameter / outer diameter; star: inner / outer radius


def size_range(width: int, height: int) -> Tuple[float, float]:
    """Smallest and largest object diameter for an image size.

    8 px to 0.6 of the short side at 320 px (8..192), scaled with the image so that a 640x480
    camera frame shows 12..288 px objects: every FPN level from P2 to P6 has work.
    """
    short = float(min(width, height))
    return max(8.0, 8.0 * short / 320.0), 0.6 * short


# ---------------------------------------------------------------- shapes

def _polygon(shape: Shape) -> np.ndarray:
    """Vertices of a polygonal shape, (K, 2) float."""
    r = shape.size / 2.0
    if shape.label == 2:  # square: circumscribed circle of diameter `size`
        angles = shape.angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif shape.label == 3:  # equilateral triangle
        angles = shape.angle - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r)
    elif shape.label == 4:  # five-pointed star
        angles = shape.angle - np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * shape.inner)
    else:
        raise ValueError(f"label {shape.label} is not a polygon")
    return np.stack([shape.cx + radii * np.cos(angles), shape.cy + radii * np.sin(angles)], axis=1)


def _shape_mask(shape: Shape, width: int, height: int) -> Tuple[Optional[Tuple[int, int]], Optional[np.ndarray]]:
    """The shape's pixels as a local uint8 mask and its top-left corner (None if off-image)."""
    r = shape.size / 2.0 + 2.0
    x0, y0 = max(0, int(math.floor(shape.cx - r))), max(0, int(math.floor(shape.cy - r)))
    x1, y1 = min(width, int(math.ceil(shape.cx + r)) + 1), min(height, int(math.ceil(shape.cy + r)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None, None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    center = (int(round((shape.cx - x0 - 0.5) * _ONE)), int(round((shape.cy - y0 - 0.5) * _ONE)))
    if shape.label in (1, 5):
        cv2.circle(mask, center, int(round(shape.size / 2.0 * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        if shape.label == 5:
            cv2.circle(mask, center, int(round(shape.size * shape.inner / 2.0 * _ONE)), 0, -1, cv2.LINE_8, _SHIFT)
    else:
        points = _polygon(shape) - np.array([x0 + 0.5, y0 + 0.5])
        cv2.fillPoly(mask, [np.round(points * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return (x0, y0), mask


def _random_shape(rng: np.random.Generator, width: int, height: int, size: float) -> Shape:
    label = int(rng.integers(1, len(CLASS_NAMES)))
    margin = size * 0.35  # a little of a shape may leave the image, as in a camera frame
    cx = float(rng.uniform(-margin + size / 2, width + margin - size / 2))
    cy = float(rng.uniform(-margin + size / 2, height + margin - size / 2))
    inner = float(rng.uniform(0.45, 0.6)) if label == 5 else float(rng.uniform(0.38, 0.5))
    return Shape(label, cx, cy, size, float(rng.uniform(0, 2 * np.pi)), (0, 0, 0), inner)


# ---------------------------------------------------------------- backgrounds and clutter

def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A gradient, smooth noise or texture background, float32 HxWx3."""
    kind = int(rng.integers(0, 4))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    c1, c2 = _random_color(rng), _random_color(rng)
    if kind == 0:  # linear gradient
        theta = rng.uniform(0, 2 * np.pi)
        t = xs * np.cos(theta) + ys * np.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    elif kind == 1:  # radial gradient
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
        t = t / max(float(t.max()), 1.0)
    elif kind == 2:  # smooth coloured noise
        cell = int(rng.integers(8, 64))
        small = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32) * 255
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        return np.clip(image * rng.uniform(0.4, 1.0) + c1 * rng.uniform(0.0, 0.5), 0, 255)
    else:  # stripes or a checkerboard, rotated
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 40)
        u = xs * np.cos(theta) + ys * np.sin(theta)
        if rng.random() < 0.5:
            t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
        else:
            v = -xs * np.sin(theta) + ys * np.cos(theta)
            t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        # low contrast so that the shapes stand out from the texture
        c2 = c1 + (c2 - c1) * rng.uniform(0.15, 0.45)
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def _clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Lines, elongated ellipses and scribbles: edges that are none of the classes."""
    height, width = image.shape[:2]
    short = min(width, height)
    for _ in range(count):
        color = tuple(float(c) for c in _random_color(rng))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            major = rng.uniform(0.05, 0.3) * short
            axes = (int(major), max(1, int(major / rng.uniform(3.0, 8.0))))
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            thickness = -1 if rng.random() < 0.5 else int(rng.integers(1, 3))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, color, thickness, cv2.LINE_AA)
        else:
            n = int(rng.integers(3, 8))
            start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
            steps = rng.normal(0, 0.08 * short, (n, 2))
            points = np.round(start + np.cumsum(steps, axis=0)).astype(np.int32)
            cv2.polylines(image, [points], False, color, int(rng.integers(1, 3)), cv2.LINE_AA)


def _contrasting_color(rng: np.random.Generator, under: np.ndarray) -> Tuple[int, int, int]:
    """A colour that differs clearly from the mean colour of what the shape covers."""
    mean = under.reshape(-1, 3).mean(axis=0) if under.size else np.full(3, 128.0)
    best, best_distance = None, -1.0
    for _ in range(24):
        color = _random_color(rng)
        distance = float(np.abs(color - mean).sum())
        if distance > best_distance:
            best, best_distance = color, distance
        if distance >= 160:
            break
    return (int(best[0]), int(best[1]), int(best[2]))


# ---------------------------------------------------------------- rendering

def _render(background: np.ndarray, shapes: Sequence[Shape]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[int]]:
    """Draw shapes in order (later ones cover earlier ones); boxes of the visible pixels.

    Returns the image, boxes, labels and the indices of the annotated shapes. A shape that is
    mostly hidden is not drawn at all (and the occlusion is recomputed), so every visible shape
    is annotated.
    """
    height, width = background.shape[:2]
    masks = [_shape_mask(s, width, height) for s in shapes]
    keep = [i for i, (corner, mask) in enumerate(masks) if corner is not None and mask.any()]
    # the share of the *whole* shape counts, also what lies outside the image
    areas = {i: _full_area(shapes[i]) for i in keep}
    while True:
        occupied = np.zeros((height, width), bool)
        visible: Dict[int, Tuple[Tuple[int, int], np.ndarray]] = {}
        dropped = None
        for i in reversed(keep):  # the last drawn is on top
            (x0, y0), mask = masks[i]
            region = occupied[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
            full = mask.astype(bool)
            seen = full & ~region
            if seen.sum() < MIN_VISIBLE_FRACTION * areas[i]:
                dropped = i
                break
            region |= full
            visible[i] = ((x0, y0), seen)
        if dropped is None:
            break
        keep.remove(dropped)
    image = background.copy()
    boxes, labels = [], []
    for i in keep:
        (x0, y0), mask = masks[i]
        patch = image[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        patch[mask.astype(bool)] = shapes[i].color
        (vx, vy), seen = visible[i]
        rows, cols = np.nonzero(seen.any(axis=1))[0], np.nonzero(seen.any(axis=0))[0]
        boxes.append([vx + cols[0], vy + rows[0], vx + cols[-1] + 1, vy + rows[-1] + 1])
        labels.append(shapes[i].label)
    boxes_array = np.asarray(boxes, np.float32).reshape(-1, 4)
    return image, boxes_array, np.asarray(labels, np.int64), keep


def _full_area(shape: Shape) -> float:
    """Pixel count of the whole shape, as if the image had no border (a small local render)."""
    side = int(math.ceil(shape.size)) + 6
    # the same sub-pixel offset as in the scene, so that the count matches the drawn pixels
    fx, fy = shape.cx - math.floor(shape.cx), shape.cy - math.floor(shape.cy)
    centred = replace(shape, cx=side / 2.0 + fx, cy=side / 2.0 + fy)
    _, mask = _shape_mask(centred, side + 2, side + 2)
    return float(mask.sum())


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Camera effects: brightness/contrast, blur, sensor noise; to uint8."""
    image = image * rng.uniform(0.8, 1.15) + rng.uniform(-20, 20)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.1)))
    sigma = float(rng.uniform(0, 8))
    if sigma > 0.5:
        image = image + rng.normal(0, sigma, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _place_shapes(rng: np.random.Generator, background: np.ndarray, count: int,
                  sizes: Optional[np.ndarray] = None) -> List[Shape]:
    """Random shapes, biggest first, overlapping each other only partly."""
    height, width = background.shape[:2]
    smin, smax = size_range(width, height)
    if sizes is None:
        sizes = np.exp(rng.uniform(np.log(smin), np.log(smax), count))
    shapes: List[Shape] = []
    for size in sorted(sizes, reverse=True):
        for _ in range(10):
            shape = _random_shape(rng, width, height, float(size))
            if all(_overlap(shape, other) < 0.35 for other in shapes):
                r = int(shape.size / 2)
                under = background[max(0, int(shape.cy) - r):int(shape.cy) + r + 1,
                                   max(0, int(shape.cx) - r):int(shape.cx) + r + 1]
                shapes.append(replace(shape, color=_contrasting_color(rng, under)))
                break
    order = rng.permutation(len(shapes))
    return [shapes[i] for i in order]


def _overlap(a: Shape, b: Shape) -> float:
    """Intersection of the two bounding squares over the smaller one."""
    ra, rb = a.size / 2, b.size / 2
    w = min(a.cx + ra, b.cx + rb) - max(a.cx - ra, b.cx - rb)
    h = min(a.cy + ra, b.cy + rb) - max(a.cy - ra, b.cy - rb)
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min(a.size, b.size) ** 2


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF, 0x5EED])


def make_scene(seed: int, index: int, width: int, height: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene `index` of `seed`: (BGR uint8 image HxWx3, boxes float32 (N,4) xyxy, labels int64 (N,))."""
    rng = _rng(seed, index)
    background = _background(rng, width, height).astype(np.float32)
    _clutter(rng, background, int(rng.integers(0, 12)))
    shapes = _place_shapes(rng, background, int(rng.integers(3, 13)))
    image, boxes, labels, _ = _render(background, shapes)
    return _finish(rng, image), boxes, labels


# ---------------------------------------------------------------- COCO data sets

def coco_dataset(count: int, seed: int, width: int, height: int) -> Tuple[List[np.ndarray], Dict[str, Any]]:
    """`count` scenes of `seed` and their COCO annotations (file names scene_000000.png, ...)."""
    images: List[np.ndarray] = []
    coco: Dict[str, Any] = {
        "info": {"description": f"edge-fpn synthetic shapes, seed {seed}", "version": "1"},
        "images": [], "annotations": [],
        "categories": [{"id": i, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES) if i > 0],
    }
    for index in range(count):
        image, boxes, labels = make_scene(seed, index, width, height)
        images.append(image)
        image_id = index + 1
        coco["images"].append({"id": image_id, "file_name": f"scene_{index:06d}.png", "width": width, "height": height})
        for box, label in zip(boxes.tolist(), labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": int(label), "bbox": [box[0], box[1], w, h],
                                        "area": w * h, "iscrowd": 0})
    return images, coco


def write_coco_dataset(directory: str, count: int, seed: int, width: int, height: int) -> str:
    """Write the scenes as PNGs and annotations.json into `directory`; returns the json path."""
    images, coco = coco_dataset(count, seed, width, height)
    os.makedirs(directory, exist_ok=True)
    for image, info in zip(images, coco["images"]):
        cv2.imwrite(os.path.join(directory, info["file_name"]), image)
    path = os.path.join(directory, "annotations.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    return path


# ---------------------------------------------------------------- the moving scene

@dataclass(frozen=True)
class _Motion:
    """How one object moves. ``path``:

    - "sine": centre + amplitude * sin(omega t + phase) on each axis (the default drift);
    - "circle": centre + amplitude * (cos, sin)(omega[0] t + phase[0]), an ellipse (fast objects);
    - "bounce": straight at ``velocity`` px/s, reflected at the borders (kept fully inside);
    - "wrap": straight at ``velocity`` (horizontal), out of the frame and in again on the other
      side as a *new* object (its ground-truth ID changes at each entry);
    - "static": the centre, still.
    """
    shape: Shape
    amplitude: Tuple[float, float]
    omega: Tuple[float, float]  # rad/s of the x and y oscillations
    phase: Tuple[float, float]
    spin: float  # rad/s
    path: str = "sine"
    velocity: Tuple[float, float] = (0.0, 0.0)


# the motion scenarios of the test:// camera (``motion=``); all but "drift" are tracker tests
MOTIONS = ("drift", "cross", "occlude", "exit", "fast", "hard")
# the largest frame side and rate of a synthetic camera: 8K, and a rate a frame's time can show
# (its background is drawn once at full size, 0.8 GB at 8192 x 8192: a larger one asked for
# terabytes)
MAX_CAMERA_SIDE = 8192
MAX_CAMERA_FPS = 1000.0


def _bounce(start: float, speed: float, t: float, low: float, high: float) -> float:
    """A straight path from `start` reflected between `low` and `high` (a triangle wave)."""
    span = high - low
    if span <= 0:
        return (low + high) / 2.0
    u = (start - low + speed * t) % (2.0 * span)
    return low + (u if u <= span else 2.0 * span - u)


@dataclass(frozen=True)
class _Sprite:
    """A shape's pixels at one rotation: a tight bool mask and where it sits against the centre."""
    mask: np.ndarray  # bool (h, w), tight around the drawn pixels
    dx: int  # column of mask[:, 0] relative to the pixel that holds the shape's centre
    dy: int  # row of mask[0, :], likewise
    area: int  # pixels of the whole shape (the share that must stay visible counts from it)


# rotations pre-rendered per symmetry period of a shape (a square repeats every 90 degrees):
# 64 steps are 1.4 degrees for a square, under one pixel at the rim of a 64 px one
_SPRITE_ANGLES = 64
_SYMMETRY = {1: 0.0, 5: 0.0, 2: np.pi / 2, 3: 2 * np.pi / 3, 4: 2 * np.pi / 5}  # 0: no visible rotation


class SyntheticCamera:
    """A fixed background with shapes that drift and rotate smoothly: the ``test://`` source.

    ``frame(i)`` is deterministic by index (time is ``i / fps``), so a test can ask for any frame;
    ``ground_truth(i)`` gives its boxes and labels (tight boxes of the visible pixels; a shape that
    is mostly hidden, by other shapes or the border, is not drawn, as in ``make_scene``).

    Rendered once, moved cheaply: the background (with its clutter and sensor noise) is rendered
    once as uint8, and each shape's mask once per rotation step (64 per symmetry period, made the
    first time that rotation is needed; a few MB at 640x480 once all are made). A frame is then a copy of the background and, per shape,
    a few numpy operations on the shape's own rectangle: about 1 ms at 640x480, where drawing the
    scene again cost about 4.5 ms. Positions are whole pixels and rotations snap to the nearest
    step, so the camera can never bound a pipeline (>= 500 frames/s at 640x480 on 2 cores).
    """

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, seed: int = 1, motion: str = "drift"):
        if not (32 <= width <= MAX_CAMERA_SIDE and 32 <= height <= MAX_CAMERA_SIDE and 0 < fps <= MAX_CAMERA_FPS):
            raise ValueError(f"a synthetic camera needs width and height from 32 to {MAX_CAMERA_SIDE} and fps above 0, at "
                             f"most {MAX_CAMERA_FPS:g}, not {width}x{height} at {fps}")
        if motion not in MOTIONS:
            raise ValueError(f"unknown motion {motion!r}; use one of {', '.join(MOTIONS)}")
        self.width, self.height, self.fps, self.seed = int(width), int(height), float(fps), int(seed)
        self.motion = motion
        rng = _rng(seed, 0xCA3E1A)
        background = _background(rng, self.width, self.height).astype(np.float32)
        _clutter(rng, background, int(rng.integers(3, 12)))
        # static sensor noise, baked in once: per-frame noise would cost more than the shapes
        background += rng.normal(0, 3.0, background.shape).astype(np.float32)
        self._background = np.clip(background, 0, 255).astype(np.uint8)
        if motion == "drift":
            shapes = _place_shapes(rng, background, int(rng.integers(6, 11)))
            self._motions = [self._motion(rng, s) for s in shapes]
        else:
            self._motions = _scenario(rng, background, motion, self.fps)
        # a block of each shape's colour as big as any of its sprites: what cv2.copyTo paints from
        self._paint = [np.full((int(math.ceil(m.shape.size / 2.0)) * 2 + 5,) * 2 + (3,), m.shape.color, np.uint8)
                       for m in self._motions]
        self._sprites: List[Dict[int, _Sprite]] = [{} for _ in self._motions]
        self._cache: Tuple[int, Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]] = (-1, None)
        self._cache_ids = np.zeros((0,), np.int64)

    def _position(self, m: _Motion, t: float) -> Tuple[float, float, int]:
        """Centre of a motion at time t and its lap (the number of times a "wrap" object re-entered)."""
        if m.path == "sine":
            return (m.shape.cx + m.amplitude[0] * math.sin(m.omega[0] * t + m.phase[0]),
                    m.shape.cy + m.amplitude[1] * math.sin(m.omega[1] * t + m.phase[1]), 0)
        if m.path == "circle":
            angle = m.omega[0] * t + m.phase[0]
            return m.shape.cx + m.amplitude[0] * math.cos(angle), m.shape.cy + m.amplitude[1] * math.sin(angle), 0
        r = m.shape.size / 2.0
        if m.path == "bounce":
            return (_bounce(m.shape.cx, m.velocity[0], t, r + 1, self.width - r - 1),
                    _bounce(m.shape.cy, m.velocity[1], t, r + 1, self.height - r - 1), 0)
        if m.path == "wrap":  # fully out on one side, then in again on the other (as a new object)
            low, span = -r - 2.0, self.width + 2 * r + 4.0
            u = m.shape.cx - low + m.velocity[0] * t
            return low + u % span, m.shape.cy, int(math.floor(u / span))
        return m.shape.cx, m.shape.cy, 0

    def object_id(self, k: int, lap: int) -> int:
        """Ground-truth ID of motion k on its lap: 1..n for the first pass, then n+1.. for re-entries."""
        return k + 1 + len(self._motions) * abs(lap)  # an object moves one way: its laps have one sign

    def _motion(self, rng: np.random.Generator, shape: Shape) -> _Motion:
        r = shape.size / 2
        # the centre stays inside the frame all the time; big shapes move less
        cx = float(np.clip(shape.cx, r * 0.6, self.width - r * 0.6))
        cy = float(np.clip(shape.cy, r * 0.6, self.height - r * 0.6))
        ax = min(cx, self.width - cx) * rng.uniform(0.1, 0.6)
        ay = min(cy, self.height - cy) * rng.uniform(0.1, 0.6)
        period = rng.uniform(4.0, 12.0, 2)
        return _Motion(replace(shape, cx=cx, cy=cy), (float(ax), float(ay)),
                       (float(2 * np.pi / period[0]), float(2 * np.pi / period[1])),
                       (float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
                       float(rng.uniform(-1.0, 1.0)))

    def shapes_at(self, index: int) -> List[Shape]:
        """The shapes of frame `index` (exact centres and angles; ``render`` snaps them to pixels and steps)."""
        t = index / self.fps
        shapes = []
        for m in self._motions:
            cx, cy, _ = self._position(m, t)
            shapes.append(replace(m.shape, cx=cx, cy=cy, angle=m.shape.angle + m.spin * t))
        return shapes

    def _sprite(self, k: int, angle: float) -> _Sprite:
        """Shape k's sprite at the rotation step nearest `angle` (rendered on first use)."""
        shape = self._motions[k].shape
        period = _SYMMETRY[shape.label]
        step = int(round(angle / period * _SPRITE_ANGLES)) % _SPRITE_ANGLES if period else 0
        sprite = self._sprites[k].get(step)
        if sprite is None:
            radius = int(math.ceil(shape.size / 2.0)) + 2
            side = 2 * radius + 1
            # centred on the centre of pixel (radius, radius) of a canvas that holds the whole shape
            local = replace(shape, cx=radius + 0.5, cy=radius + 0.5, angle=step * period / _SPRITE_ANGLES)
            corner, mask = _shape_mask(local, side, side)
            canvas = np.zeros((side, side), bool)
            if corner is not None:
                x0, y0 = corner
                canvas[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = mask.astype(bool)
            rows, cols = np.flatnonzero(canvas.any(axis=1)), np.flatnonzero(canvas.any(axis=0))
            if len(rows):
                tight = canvas[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
                sprite = _Sprite(np.ascontiguousarray(tight), int(cols[0]) - radius, int(rows[0]) - radius,
                                 int(np.count_nonzero(tight)))
            else:
                sprite = _Sprite(np.zeros((1, 1), bool), 0, 0, 0)
            self._sprites[k][step] = sprite
        return sprite

    def render(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, boxes, labels) of frame `index`; the last frame is cached."""
        cached_index, cached = self._cache
        if cached_index == index and cached is not None:
            return cached
        width, height = self.width, self.height
        t = index / self.fps
        image = self._background.copy()
        occupied = np.zeros((height, width), bool)
        placed: List[Tuple[int, np.ndarray, int, int]] = []  # (shape, visible pixels, x, y), top first
        laps: Dict[int, int] = {}
        # the last shape is drawn on top: going down from it, each shape sees what is still free;
        # a mostly hidden shape is skipped and hides nothing (as make_scene's _render drops it)
        for k in range(len(self._motions) - 1, -1, -1):
            m = self._motions[k]
            sprite = self._sprite(k, m.shape.angle + m.spin * t)
            if not sprite.area:
                continue
            cx, cy, laps[k] = self._position(m, t)
            x = int(math.floor(cx)) + sprite.dx
            y = int(math.floor(cy)) + sprite.dy
            h, w = sprite.mask.shape
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            if x1 <= x0 or y1 <= y0:
                continue
            mask = sprite.mask[y0 - y:y1 - y, x0 - x:x1 - x]
            region = occupied[y0:y1, x0:x1]
            seen = mask & ~region
            if np.count_nonzero(seen) < MIN_VISIBLE_FRACTION * sprite.area:
                continue
            region |= mask
            _paint(image[y0:y1, x0:x1], self._paint[k][:y1 - y0, :x1 - x0], seen)
            placed.append((k, seen, x0, y0))
        placed.reverse()  # drawing order, as make_scene lists its boxes
        boxes = np.zeros((len(placed), 4), np.float32)
        labels = np.zeros((len(placed),), np.int64)
        ids = np.zeros((len(placed),), np.int64)
        for row, (k, seen, x0, y0) in enumerate(placed):
            rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
            boxes[row] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
            labels[row] = self._motions[k].shape.label
            ids[row] = self.object_id(k, laps[k])
        result = (image, boxes, labels)
        self._cache = (index, result)
        self._cache_ids = ids
        return result

    def frame(self, index: int) -> np.ndarray:
        return self.render(index)[0]

    def ground_truth(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        _, boxes, labels = self.render(index)
        return boxes, labels

    def ground_truth_tracks(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame `index`'s (boxes, labels, object IDs): the same boxes as ``ground_truth``, each with
        the ID of the object it belongs to (stable while the object exists; a hidden object is
        absent and keeps its ID when it shows again; a "wrap" object re-entering is a new one)."""
        _, boxes, labels = self.render(index)
        return boxes, labels, self._cache_ids.copy()

    def timestamp(self, index: int) -> float:
        """Seconds from frame 0 to frame `index` (the scene's own clock)."""
        return index / self.fps


def _scenario(rng: np.random.Generator, background: np.ndarray, motion: str, fps: float) -> List[_Motion]:
    """The objects of a tracker-test scenario (drawn in list order: later ones cover earlier ones).

    cross:   pairs of same-class objects on one row, moving towards each other (bouncing at the
             borders), so that one passes over the other, hiding it, again and again;
    occlude: a large still object on top in the middle, small ones passing behind it, fully
             hidden for 0.3-0.6 s at a time;
    exit:    objects crossing the frame, leaving it and entering again (a new object each time);
    fast:    small objects on wide ellipses, moving 1.1-1.4 of their size a frame at the camera's fps:
             their boxes never overlap from one frame to the next;
    hard:    some of each, with a few drifting shapes.
    """
    height, width = background.shape[:2]
    smin, smax = size_range(width, height)
    motions: List[_Motion] = []

    def shape(label: int, cx: float, cy: float, size: float) -> Shape:
        r = int(size / 2)
        under = background[max(0, int(cy) - r):max(0, int(cy) + r + 1), max(0, int(cx) - r):max(0, int(cx) + r + 1)]
        inner = float(rng.uniform(0.45, 0.6)) if label == 5 else float(rng.uniform(0.38, 0.5))
        return Shape(label, float(cx), float(cy), float(size), float(rng.uniform(0, 2 * np.pi)),
                     _contrasting_color(rng, under), inner)

    def label() -> int:
        return int(rng.integers(1, len(CLASS_NAMES)))

    def add(s: Shape, path: str, velocity: Tuple[float, float] = (0.0, 0.0), amplitude: Tuple[float, float] = (0.0, 0.0),
            omega: Tuple[float, float] = (0.0, 0.0), phase: Tuple[float, float] = (0.0, 0.0)) -> None:
        motions.append(_Motion(s, amplitude, omega, phase, float(rng.uniform(-0.8, 0.8)), path, velocity))

    hard = motion == "hard"
    if motion == "cross" or hard:
        pairs = 1 if hard else int(rng.integers(2, 4))
        rows = rng.permutation(pairs * 2)[:pairs]
        for p in range(pairs):
            size = float(rng.uniform(2.5, 5.0) * smin)
            y = (rows[p] + 0.5) / (pairs * 2) * height
            speed = float(rng.uniform(0.2, 0.4) * width)
            kind = label()
            add(shape(kind, size, y, size), "bounce", (speed, float(rng.uniform(-0.03, 0.03) * height)))
            add(shape(kind, width - size, y + size * 0.1, size), "bounce", (-speed, 0.0))
    if motion == "occlude" or hard:
        big = 0.45 * min(width, height)
        small = 2 if hard else 3
        for i in range(small):
            size = float(rng.uniform(2.0, 3.5) * smin)
            hidden = float(rng.uniform(0.3, 0.6))  # seconds fully behind the occluder
            speed = max(big * 0.7 - size, 1.0) / hidden
            y = height / 2 + (i - (small - 1) / 2) * big * 0.7 / max(small, 1)
            add(shape(label(), float(rng.uniform(size, width - size)), y, size), "bounce",
                (speed * (1 if i % 2 == 0 else -1), 0.0))
        # the occluder last: drawn on top of everything (a square covers its whole box but the corners)
        add(shape(2, width / 2, height / 2, big / 0.72), "static")
    if motion == "exit" or hard:
        count = 2 if hard else int(rng.integers(4, 7))
        for i in range(count):
            size = float(rng.uniform(2.5, 6.0) * smin)
            y = (i + 0.5) / count * height
            speed = float(rng.uniform(0.15, 0.4) * width) * (1 if rng.random() < 0.5 else -1)
            add(shape(label(), float(rng.uniform(0, width)), y, size), "wrap", (speed, 0.0))
    if motion == "fast" or hard:
        count = 2 if hard else int(rng.integers(3, 6))
        for i in range(count):
            size = float(rng.uniform(1.5, 2.5) * smin)
            radii = (float(rng.uniform(0.28, 0.4) * width), float(rng.uniform(0.28, 0.4) * height))
            step = float(rng.uniform(1.1, 1.4)) * size  # pixels a frame: more than the box's own size
            omega = step * fps / math.sqrt(radii[0] * radii[1]) * (1 if rng.random() < 0.5 else -1)
            cx = width / 2 + float(rng.uniform(-0.05, 0.05) * width)
            cy = height / 2 + float(rng.uniform(-0.05, 0.05) * height)
            add(shape(label(), cx, cy, size), "circle", amplitude=radii, omega=(omega, omega),
                phase=(float(rng.uniform(0, 2 * np.pi)),) * 2)
    if hard:
        for s in _place_shapes(rng, background, 3, sizes=np.exp(rng.uniform(np.log(smin * 2), np.log(smax * 0.5), 3))):
            add(s, "sine", amplitude=(float(rng.uniform(0.05, 0.2) * width), float(rng.uniform(0.05, 0.2) * height)),
                omega=tuple(float(2 * np.pi / p) for p in rng.uniform(4.0, 12.0, 2)),  # type: ignore[arg-type]
                phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))))
        motions = motions[-3:] + motions[:-3]  # the drifting ones underneath
    return motions


def _paint(patch: np.ndarray, color: np.ndarray, mask: np.ndarray) -> None:
    """patch[mask] = color, in place: cv2.copyTo is ~100x faster than numpy's boolean assignment."""
    out = cv2.copyTo(color, mask.view(np.uint8), patch)
    if out is not patch and not np.may_share_memory(out, patch):  # a cv2 that did not write in place
        patch[...] = out
