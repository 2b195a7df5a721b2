"""The runtime runs with numpy and OpenCV alone: importing it (and the CLI) must not load torch."""
import subprocess
import sys

CODE = """
import sys
import edge_fpn, edge_fpn.runtime, edge_fpn.bundle
from edge_fpn.runtime.backends import open_stage
import edge_fpn.runtime.backends.tensorrt_backend, edge_fpn.runtime.backends.cuda_memory
from edge_fpn.cli import build_parser
build_parser()
heavy = [m for m in ("torch", "torchvision", "tensorrt", "pycuda", "cuda.bindings", "cuda", "onnx", "onnxruntime")
         if m in sys.modules]
print(",".join(heavy))
"""


def test_runtime_and_cli_import_without_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at load time: {out.stdout.strip()}"
