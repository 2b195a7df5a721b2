"""Frame -> engine input: resize keeping the aspect ratio, pad bottom-right.

Engine layout (``UInt8Letterbox``): the resized BGR uint8 frame goes into the top-left corner of
the engine's NHWC input; colour order, scaling, normalization and the zero padding happen in the
graph. Host layout (``Preprocessor``): all of it here, to a float NCHW tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from ..bundle import PreprocessSpec


@dataclass(frozen=True)
class Letterbox:
    """Where a frame went inside the engine input (what postprocessing needs to map boxes back)."""
    frame_size: Tuple[int, int]  # (h, w) of the original frame
    resized_size: Tuple[int, int]  # (h, w) of the image inside the engine input; the rest is padding


class FrameError(ValueError):
    """A frame that cannot be turned into an engine input (the pipeline counts and skips it)."""


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Accept grayscale, BGR and BGRA uint8 frames; anything else is a FrameError."""
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise FrameError("frame is empty or not an array")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame dtype is {frame.dtype}, expected uint8")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise FrameError(f"frame shape {frame.shape} is not HxW, HxWx1, HxWx3 or HxWx4")


def fitted_size(frame_size: Tuple[int, int], input_size: Tuple[int, int]) -> Tuple[int, int]:
    """torchvision's resize rule: one scale for both axes, sizes floored (interpolate with scale_factor)."""
    h, w = frame_size
    scale = min(input_size[0] / h, input_size[1] / w)
    # at least 1 px a side: a 1x5000 strip would floor to 0 rows, which no resize can produce
    return (max(1, min(int(np.floor(h * scale)), input_size[0])),
            max(1, min(int(np.floor(w * scale)), input_size[1])))


class Preprocessor:
    """Reuses one output buffer; the per-frame work is one resize, one colour swap and one affine."""

    def __init__(self, spec: PreprocessSpec):
        self.input_size = (int(spec.input_size[0]), int(spec.input_size[1]))
        self.swap_rb = spec.channel_order.upper() == "RGB"
        std = np.asarray(spec.std, dtype=np.float32)
        # (x / 255 - mean) / std == x * gain + offset
        self.gain = (1.0 / (255.0 * std)).reshape(3, 1, 1).astype(np.float32)
        self.offset = (-np.asarray(spec.mean, dtype=np.float32) / std).reshape(3, 1, 1).astype(np.float32)

    def __call__(self, frame: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Letterbox]:
        frame = to_bgr(frame)
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        resized_size = fitted_size(frame_size, self.input_size)
        if out is None:
            out = np.empty((1, 3) + self.input_size, dtype=np.float32)
        h, w = resized_size
        if resized_size != frame_size:
            # resize in float, as torchvision interpolates the float image: a uint8 resize would
            # round every pixel and move scores by up to 1e-3
            image = cv2.resize(frame.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            image = frame
        if self.swap_rb:
            image = image[:, :, ::-1]
        # padding is 0 after normalization, as torchvision pads the normalized batch with zeros
        if (h, w) != self.input_size:
            out.fill(0.0)
        chw = np.transpose(image, (2, 0, 1)).astype(np.float32)
        np.multiply(chw, self.gain, out=chw)
        np.add(chw, self.offset, out=out[0, :, :h, :w])
        return out, Letterbox(frame_size=frame_size, resized_size=resized_size)


class UInt8Letterbox:
    """Frame -> (uint8 [1, H, W, 3] engine input, float32 [2] resized (h, w), Letterbox): one resize.

    The padding is left as it is: the graph zeroes everything outside the resized frame after
    normalization (torchvision's zero padding), so stale pixels there cannot leak into results.
    """

    def __init__(self, spec: PreprocessSpec):
        self.input_size = (int(spec.input_size[0]), int(spec.input_size[1]))

    def new_buffer(self) -> np.ndarray:
        return np.zeros((1,) + self.input_size + (3,), dtype=np.uint8)

    def __call__(self, frame: np.ndarray, out: Optional[np.ndarray] = None
                 ) -> Tuple[np.ndarray, np.ndarray, Letterbox]:
        frame = to_bgr(frame)
        frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        h, w = fitted_size(frame_size, self.input_size)
        if out is None:
            out = np.empty((1,) + self.input_size + (3,), dtype=np.uint8)
        if (h, w) == frame_size:
            out[0, :h, :w] = frame
        else:
            # bilinear, half-pixel centres, no antialias: torchvision's interpolate, on uint8
            view = out[0, :h, :w]
            resized = cv2.resize(frame, (w, h), dst=view, interpolation=cv2.INTER_LINEAR)
            if resized is not view:  # OpenCV allocated instead of writing into the view
                view[...] = resized
        return out, np.array([h, w], dtype=np.float32), Letterbox(frame_size=frame_size, resized_size=(h, w))
