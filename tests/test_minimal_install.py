"""A fresh environment with the package and nothing but numpy (and OpenCV, which the runtime's
preprocessing imports; on a Jetson it is JetPack's own): the runtime and the TensorRT backend
import, nothing pulls ONNX Runtime, and what is missing is one sentence saying what to install.

The environment is a clean ``python -m venv`` (no system site-packages); the package goes in as a
wheel with ``--no-deps``, numpy and OpenCV at the versions this interpreter has (pip's cache, or
a wheelhouse in $EDGE_FPN_WHEELHOUSE for an offline machine). Where neither can be reached, the
test skips and says so.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = r"""
import sys
import edge_fpn, edge_fpn.runtime
import edge_fpn.runtime.backends.tensorrt_backend as trt_backend
from edge_fpn.runtime.backends import cuda_memory
from edge_fpn.errors import EdgeFpnError
loaded = [m for m in ("onnxruntime", "tensorrt", "pycuda", "cuda", "torch", "onnx") if m in sys.modules]
assert not loaded, loaded
for attempt in (lambda: cuda_memory.choose_binding("auto"), trt_backend.load_tensorrt,
                lambda: __import__("edge_fpn.runtime.backends.onnxruntime_backend", fromlist=["x"]).import_onnxruntime("detector.onnx")):
    try:
        attempt()
    except EdgeFpnError as exc:
        print(str(exc))
    else:
        raise SystemExit("no error where nothing is installed")
"""


def _version(module: str) -> str:
    from importlib.metadata import version
    return version(module)


@pytest.mark.slow
def test_runtime_imports_in_a_fresh_environment_with_numpy_alone(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), ROOT], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(p for p in wheels.iterdir() if p.name.startswith("edge_fpn"))
    # no shadowing: nothing but numpy and tqdm is required outside the extras (not ONNX Runtime)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    required = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in required) == ["numpy", "tqdm"], required
    assert any("onnxruntime" in line and 'extra == "onnxruntime"' in line for line in metadata.splitlines())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    packages = [f"numpy=={_version('numpy')}", f"opencv-python-headless=={_version('opencv-python-headless')}"]
    source = ["--no-index", "--find-links", os.environ["EDGE_FPN_WHEELHOUSE"]] if os.environ.get("EDGE_FPN_WHEELHOUSE") else []
    installed = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                                *source, str(wheel), *packages], capture_output=True, text=True, timeout=300)
    if installed.returncode != 0:
        if "No matching distribution" in installed.stderr or "NewConnectionError" in installed.stderr \
                or "Could not fetch" in installed.stderr or "Network is unreachable" in installed.stderr:
            pytest.skip(f"cannot install {', '.join(packages)} into a fresh venv (no package index or wheelhouse "
                        "reachable; set EDGE_FPN_WHEELHOUSE)")
        raise AssertionError(installed.stderr[-2000:])
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            timeout=60).stdout.lower()
    assert "onnxruntime" not in listed and "cuda" not in listed
    done = subprocess.run([python, "-c", CODE], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3, lines
    assert "needs cuda-python (or pycuda)" in lines[0] and "edge-fpn[cuda12]" in lines[0]
    assert "need TensorRT" in lines[1]
    assert "pip install 'edge-fpn[onnxruntime]'" in lines[2] and "neither TensorRT nor ONNX Runtime" in lines[2]
