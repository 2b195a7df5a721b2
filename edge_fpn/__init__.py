"""edge-fpn: FPN detectors from PyTorch to ONNX/TensorRT, and a light runtime to run them live."""
__version__ = "0.1.0"

from .runtime import Detections, Detector  # noqa: E402  (numpy + OpenCV only, never torch)

__all__ = ["Detector", "Detections", "__version__"]
