"""ONNX Runtime backend: the CPU reference, and the backend everywhere TensorRT is absent."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ...errors import EdgeFpnError


class OnnxRuntimeBackend:
    def __init__(self, path: str, threads: int = 0, providers: Optional[List[str]] = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # two sessions run one after the other: idle threads spinning for work would steal the
        # cores from the session that is running (on 2 cores that halves its speed)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(path, sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EdgeFpnError(f"cannot load {path} with ONNX Runtime ({message}); the file is corrupt or not ONNX, re-run `edge-fpn export`") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, {name: inputs[name] for name in self.input_names})
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        self.session = None

    def __enter__(self) -> "OnnxRuntimeBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
