"""The torch-free runtime: numpy + OpenCV (+ ONNX Runtime or TensorRT/pycuda, imported when used)."""
from .detector import Detections, Detector

__all__ = ["Detector", "Detections"]
