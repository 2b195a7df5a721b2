"""A stage backend that also hands intermediate tensors to a callback, in bounded memory.

Making every measured tensor a graph output of one ONNX Runtime session would keep all of them
alive at once: 1.6 GB per image for ResNet-50 FPN at 800x800, and twice that while the next image
runs. Instead the stage is cut, in graph order, into a chain of sub-graphs whose measured outputs
stay under a byte budget; each sub-graph's tensors go to the callback as soon as it has run and
are dropped unless a later sub-graph reads them. Every node still runs once, so this costs no
extra compute; the sessions run without a memory arena so that one sub-graph's buffers are given
back before the next runs.

It has the runtime backends' interface (``backend(inputs) -> outputs``) so that calibration runs
the stages through ``Detector``'s own methods: the engine layout's one graph (postprocessing and
all, of which nothing is measured) or the host layout's stage 1 and stage 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set

import numpy as np

DEFAULT_BUDGET_BYTES = 256 << 20
_UNKNOWN_TENSOR_BYTES = 4 << 20


@dataclass
class _Segment:
    session: Any
    inputs: List[str]
    outputs: List[str]
    measured: Set[str]
    keep_after: Set[str]  # tensors still needed once this segment ran (later segments, stage outputs)


def tensor_bytes(model: Any, dynamic_sizes: Mapping[str, int]) -> Dict[str, int]:
    """Estimated bytes of every float tensor, with dynamic axes at the given sizes."""
    import onnx

    from .qdq import _without_weights

    probe = _without_weights(model)
    for info in probe.graph.input:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param and dim.dim_param in dynamic_sizes:
                dim.dim_value = int(dynamic_sizes[dim.dim_param])
    inferred = onnx.shape_inference.infer_shapes(probe)
    sizes: Dict[str, int] = {}
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.dim_value > 0 for d in dims):
            sizes[info.name] = int(np.prod([d.dim_value for d in dims])) * 4
    return sizes


class MeasuringStage:
    """``stage(inputs) -> outputs`` that also calls ``sink(name, array)`` for every measured tensor."""

    def __init__(self, model: Any, measured: Sequence[str], sink: Callable[[str, np.ndarray], None],
                 threads: int = 0, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 dynamic_sizes: Optional[Mapping[str, int]] = None):
        import onnx
        import onnxruntime as ort
        from onnx import helper

        self.sink = sink
        graph = model.graph
        self.output_names = [o.name for o in graph.output]
        self.input_names = [i.name for i in graph.input]
        measured_set = set(measured)
        self.measured_inputs = [name for name in self.input_names if name in measured_set]
        sizes = tensor_bytes(model, dynamic_sizes or {})
        elem_types = _elem_types(model)
        initializers = {init.name: init for init in graph.initializer}
        nodes = list(graph.node)

        # cut the node list where the measured bytes of the current piece exceed the budget
        pieces: List[List[Any]] = []
        current: List[Any] = []
        spent = 0
        for node in nodes:
            current.append(node)
            spent += sum(sizes.get(o, _UNKNOWN_TENSOR_BYTES) for o in node.output if o in measured_set)
            if spent >= budget_bytes:
                pieces.append(current)
                current, spent = [], 0
        if current:
            pieces.append(current)

        consumers_after: List[Set[str]] = []  # tensors read by pieces after index i
        later: Set[str] = set(self.output_names)
        for piece in reversed(pieces):
            consumers_after.append(set(later))
            for node in piece:
                later.update(i for i in node.input if i)
        consumers_after.reverse()

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False  # give each piece's buffers back before the next runs
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.segments: List[_Segment] = []
        for piece, needed_later in zip(pieces, consumers_after):
            produced: List[str] = [o for node in piece for o in node.output if o]
            produced_set = set(produced)
            inputs: List[str] = []
            for node in piece:
                for name in node.input:
                    if name and name not in produced_set and name not in initializers and name not in inputs:
                        inputs.append(name)
            outputs = [o for o in produced if o in measured_set or o in needed_later]
            used: List[str] = []
            for node in piece:
                used += [i for i in node.input if i in initializers and i not in used]
            used_inits = [initializers[n] for n in used]
            sub = helper.make_graph(
                piece, f"{graph.name}_part{len(self.segments)}",
                [helper.make_tensor_value_info(n, elem_types.get(n, onnx.TensorProto.FLOAT), None) for n in inputs],
                [helper.make_tensor_value_info(n, elem_types.get(n, onnx.TensorProto.FLOAT), None) for n in outputs],
                initializer=used_inits)
            sub_model = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
            session = ort.InferenceSession(sub_model.SerializeToString(), sess_options=options,
                                           providers=["CPUExecutionProvider"])
            self.segments.append(_Segment(session, inputs, outputs, {o for o in outputs if o in measured_set},
                                          needed_later))

    def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        for name in self.measured_inputs:
            self.sink(name, inputs[name])
        env: Dict[str, np.ndarray] = {name: inputs[name] for name in self.input_names}
        for segment in self.segments:
            values = segment.session.run(segment.outputs, {name: env[name] for name in segment.inputs})
            for name, value in zip(segment.outputs, values):
                if name in segment.measured:
                    self.sink(name, value)
                if name in segment.keep_after:
                    env[name] = value
            del values
            for name in [n for n in env if n not in segment.keep_after]:
                del env[name]
        return {name: env[name] for name in self.output_names}

    def close(self) -> None:
        self.segments = []


def _elem_types(model: Any) -> Dict[str, int]:
    import onnx

    from .qdq import _without_weights

    inferred = onnx.shape_inference.infer_shapes(_without_weights(model))
    types: Dict[str, int] = {}
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types[info.name] = info.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types
