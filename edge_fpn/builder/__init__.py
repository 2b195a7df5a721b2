"""The engine builder: calibration, Q/DQ INT8 graphs, FP16 graphs, TensorRT and ONNX Runtime engine bundles.

Nothing here imports torch; onnx, onnxruntime and tensorrt are imported inside the functions that
need them, so that `import edge_fpn.builder` costs nothing on a Jetson.
"""
