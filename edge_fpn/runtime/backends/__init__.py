"""Engine backends behind one small interface: ``backend(inputs: dict[str, ndarray]) -> dict[str, ndarray]``."""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from ...bundle import Manifest
from ...errors import EdgeFpnError

try:  # Python 3.8 has Protocol in typing
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore


class Backend(Protocol):
    input_names: List[str]
    output_names: List[str]

    def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def close(self) -> None: ...


# defined where they are used (both modules import numpy alone at load: no side effects)
from .cuda_memory import CUDA_CHOICES as CUDA_BINDINGS  # noqa: E402
from .onnxruntime_backend import DEVICES  # noqa: E402


def open_stage(bundle_dir: str, manifest: Manifest, key: str, threads: int = 0, device: str = "auto",
               cuda: str = "auto", memory: str = "auto") -> Backend:
    """Open the stage `key` of a bundle with the backend its manifest names (TensorRT is imported
    only here). The manifest is the one bundle.load_manifest read: a backend never reads it again,
    so the TensorRT backend's refusal of an engine built for another TensorRT or GPU cannot turn
    into a warning after a failed second read.

    device: "auto" (the GPU where there is one), "cpu" or "cuda". It chooses ONNX Runtime's
    execution provider (CUDA, and TensorRT where it loads, with onnxruntime-gpu); a TensorRT
    engine runs on the GPU only. cuda: the binding that moves a TensorRT engine's memory, "auto"
    (cuda-python, else pycuda), "cuda-python" or "pycuda"; memory: "auto", "pinned" or "mapped"
    (see tensorrt_backend). Both are ignored by ONNX Runtime stages.
    """
    if device not in DEVICES:
        raise EdgeFpnError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if cuda not in CUDA_BINDINGS:
        raise EdgeFpnError(f"cuda must be one of {', '.join(CUDA_BINDINGS)}, not {cuda!r}")
    stage = manifest.stages[key]
    path = os.path.join(bundle_dir, stage.file)
    if stage.backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(path, threads=threads, device=device, stage=stage)
    if stage.backend == "tensorrt":
        if device == "cpu":
            raise EdgeFpnError(f"{stage.file} is a TensorRT engine, which runs on the GPU only; use --device auto or cuda, "
                               "or run an ONNX Runtime bundle of this model (`edge-fpn build --backend onnxruntime`)")
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(path, stage, provenance=manifest.provenance, stages=manifest.stages, stage_key=key,
                               cuda=cuda, memory=memory)
    raise EdgeFpnError(f"stage file {stage.file} names backend {stage.backend!r}, which this edge-fpn does not know; upgrade edge-fpn or rebuild the bundle")
