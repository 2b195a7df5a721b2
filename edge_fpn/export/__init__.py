"""torch -> ONNX export of the two stages, and the TensorRT lint (host only)."""
