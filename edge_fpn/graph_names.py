"""Names shared by the exported engine-layout graph, the builder and the runtime.

The engine layout ("detector" stage) is one graph from the letterboxed uint8 frame to padded
detections. Its postprocessing part (anchors, decode, clip, NMS, RoIAlign's boxes, the final
class-wise step) must stay FP32 in FP16 and INT8 engines; the exporter puts those nodes under the
module scopes below, so the builder finds them by node name (torch.onnx names nodes by module path).
"""
from __future__ import annotations

from typing import Tuple

DETECTOR_STAGE = "detector"
DETECTOR_FILE = "detector.onnx"

# inputs
IMAGE = "image"  # uint8 [1, H, W, 3], BGR, the frame resized into the top-left corner (padding ignored)
IMAGE_SIZE = "image_size"  # float32 [2]: (h, w) of the resized frame inside IMAGE
# outputs (D = detections_per_img; rows past num_detections are padding)
BOXES = "boxes"  # float32 [D, 4], xyxy in IMAGE pixels
SCORES = "scores"  # float32 [D]
LABELS = "labels"  # int32 [D], 1-based (0 is the background)
NUM_DETECTIONS = "num_detections"  # int32 [1]

# the engine layout's cap on (proposal, class) pairs before the final NMS (TensorRT's NMS considers
# at most 5000 boxes per image, its top-k at most 3840): small enough to keep that NMS cheap, large
# enough to change no detection of the tested models
DEFAULT_DETECTION_CANDIDATES = 2000

# node-name prefixes of the postprocessing part (kept FP32, never quantized)
POSTPROCESS_SCOPES: Tuple[str, ...] = ("/proposals/", "/roi_pool/", "/detections/")


def is_postprocess_node(node_name: str) -> bool:
    return node_name.startswith(POSTPROCESS_SCOPES)
