"""FP32 ONNX -> FP16 ONNX for strongly typed TensorRT builds (TensorRT 11 removed the FP16 flag).

A small, dependency-free converter (onnxconverter-common is not part of JetPack; ModelOpt's
AutoCast pulls in far more than this needs). The graph's inputs and outputs stay float32 (a Cast
at each end), so the runtime feeds and reads the same buffers as for an FP32 engine. What stays
float32 inside:

- RoIAlign (whose TensorRT plugin takes float32 boxes) and all of stage 2's box arithmetic on the
  proposals (a 300x300 px box has an area of 90000, beyond float16's 65504, and the FPN level of a
  box is computed from it);
- the engine layout's postprocessing, every node named under graph_names.POSTPROCESS_SCOPES
  (anchors, decoding, clipping, NMS, RoIAlign's boxes, the final class-wise step): DESIGN.md keeps
  it FP32, and TensorRT 11's strong typing takes each layer's precision from this graph, so Casts
  at its boundary are what keeps it there;
- inputs that ONNX types as float32 only (Resize's scales).

For a Q/DQ graph, quantization scales become float16 too, so that every DequantizeLinear yields
float16 (strong typing takes the output type from the scale); that needs QuantizeLinear-19, so
such graphs are converted to opset 19 first.

Python 3.8: this module runs on the device.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

# (op type -> input indices) that stay float32 whatever the node's precision
ALWAYS_FLOAT_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
FLOAT16_MAX = 65504.0
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_FP16_OPSET = 19


def float32_nodes(model: Any) -> Set[str]:
    """Nodes kept in float32: the postprocessing scopes, RoIAlign, and every node computed from the
    proposals but not from a feature map (stage 2's box arithmetic). Nodes on constants alone
    (weight Q/DQ) go to float16."""
    from ..graph_names import is_postprocess_node
    from .qdq import NON_FEATURE_INPUTS, plan_quantization

    dense = set(plan_quantization(model, "fp16").dense_tensors)
    boxes = {i.name for i in model.graph.input if i.name in NON_FEATURE_INPUTS}
    keep = set()
    for node in model.graph.node:
        from_boxes = any(i in boxes for i in node.input if i)
        if from_boxes:
            boxes.update(node.output)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue  # Q/DQ follow their layer: a Cast between a DQ and its conv would break the INT8 fusion
        if (node.op_type == "RoiAlign" or is_postprocess_node(node.name)
                or (from_boxes and not any(o in dense for o in node.output))):
            keep.add(node.name)
    return keep


def convert_to_fp16(model: Any, keep_float32: Optional[Set[str]] = None) -> Any:
    """A float16 copy of `model` (float32 graph inputs/outputs); see the module docstring."""
    out = _prepared_copy(model)
    keep = float32_nodes(out) if keep_float32 is None else set(keep_float32)
    rewrite = _Fp16Rewrite(out, keep)
    rewrite.plan_types()
    rewrite.rewrite_inputs()
    rewrite.cast_outputs()
    rewrite.tidy()
    return out


def _prepared_copy(model: Any) -> Any:
    """A copy of `model` with every node named, at opset 19 if it holds Q/DQ nodes."""
    import onnx

    from .qdq import ensure_node_names

    out = onnx.ModelProto()
    out.CopyFrom(model)
    ensure_node_names(out)
    if any(n.op_type in QDQ_OPS for n in out.graph.node) and _opset(out) < QDQ_FP16_OPSET:
        from onnx import version_converter
        out = version_converter.convert_version(out, QDQ_FP16_OPSET)
        ensure_node_names(out)
    return out


class _Fp16Rewrite:
    """convert_to_fp16's steps on one graph, changed in place: plan each float tensor's type, rewrite
    the node inputs (float16 initializer copies, boundary Casts), cast float16 graph outputs back to
    float32, then order the nodes and drop unused initializers."""

    def __init__(self, model: Any, keep: Set[str]) -> None:
        from onnx import TensorProto

        from .qdq import _float_tensors

        self.FLOAT, self.HALF = TensorProto.FLOAT, TensorProto.FLOAT16
        self.graph = model.graph
        self.floats = _float_tensors(model)
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.float_inits = {name for name, init in self.initializers.items() if init.data_type == self.FLOAT}
        self.floats |= self.float_inits
        self.half_nodes = {n.name for n in self.graph.node if n.name not in keep}
        self.new_type: Dict[str, int] = {}  # the type each float tensor has after conversion
        self.new_nodes: List[Any] = []
        self.casts: Dict[Tuple[str, int], str] = {}
        self.half_copies: Dict[str, str] = {}
        self.new_inits: List[Any] = []

    def plan_types(self) -> None:
        """Each float tensor's type after conversion; float16 nodes' Casts and constants made float16."""
        FLOAT, HALF = self.FLOAT, self.HALF
        for info in self.graph.input:
            if info.name in self.floats:
                self.new_type[info.name] = FLOAT
        for node in self.graph.node:
            half = node.name in self.half_nodes
            if half and node.op_type == "Cast" and _attr(node, "to") == FLOAT:
                _set_attr_int(node, "to", HALF)
            if half and node.op_type == "Constant":
                _constant_to_half(node)
            if half and node.op_type == "ConstantOfShape":
                _constant_of_shape_to_half(node)
            for output in node.output:
                if output in self.floats:
                    self.new_type[output] = HALF if half else FLOAT

    def cast_of(self, tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in self.casts:
            from onnx import helper

            kind = "fp16" if to == self.HALF else "fp32"
            name = f"{tensor}_to_{kind}"
            # a node name that does not start with the tensor's scope: a boundary Cast belongs to
            # neither side (graph_names.is_postprocess_node must not claim it)
            self.new_nodes.append(helper.make_node("Cast", [tensor], [name], name=f"Cast_to_{kind}_{tensor}", to=to))
            self.casts[key] = name
        return self.casts[key]

    def half_initializer(self, name: str) -> str:
        if name not in self.half_copies:
            from onnx import numpy_helper

            values = numpy_helper.to_array(self.initializers[name]).astype(np.float32)
            values = np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
            copy = f"{name}_fp16"
            self.new_inits.append(numpy_helper.from_array(values, copy))
            self.half_copies[name] = copy
        return self.half_copies[name]

    def rewrite_inputs(self) -> None:
        """Every node's float inputs in the type the node computes in (a Cast where they differ)."""
        FLOAT, HALF = self.FLOAT, self.HALF
        for node in self.graph.node:
            half = node.name in self.half_nodes
            always_float = ALWAYS_FLOAT_INPUTS.get(node.op_type, ())
            for index, tensor in enumerate(node.input):
                if not tensor or tensor not in self.floats:
                    continue
                wanted = HALF if half and index not in always_float else FLOAT
                if tensor in self.float_inits:
                    if wanted == HALF:
                        node.input[index] = self.half_initializer(tensor)
                    continue
                have = self.new_type.get(tensor, FLOAT)
                if have != wanted:
                    node.input[index] = self.cast_of(tensor, wanted)
            self.new_nodes.append(node)

    def cast_outputs(self) -> None:
        """Graph outputs keep float32: the producer writes <name>_fp16, a Cast restores <name>."""
        from onnx import helper

        for output in self.graph.output:
            if self.new_type.get(output.name) == self.HALF:
                inner = f"{output.name}_fp16"
                for node in self.new_nodes:
                    for index, name in enumerate(node.output):
                        if name == output.name:
                            node.output[index] = inner
                    for index, name in enumerate(node.input):
                        if name == output.name:
                            node.input[index] = inner
                self.new_nodes.append(helper.make_node("Cast", [inner], [output.name], name=f"{output.name}_Cast",
                                                       to=self.FLOAT))

    def tidy(self) -> None:
        """The nodes in topological order, the new initializers added, the unused ones dropped."""
        graph = self.graph
        del graph.node[:]
        graph.node.extend(_topological(self.new_nodes, {i.name for i in graph.input} | set(self.initializers)
                                       | {i.name for i in self.new_inits}))
        graph.initializer.extend(self.new_inits)
        used = {i for n in graph.node for i in n.input}
        unused = [init for init in graph.initializer if init.name not in used]
        for init in unused:
            graph.initializer.remove(init)
        del graph.value_info[:]


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _attr(node: Any, name: str) -> Any:
    from onnx import helper
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def _set_attr_int(node: Any, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = int(value)


def _constant_to_half(node: Any) -> None:
    from onnx import TensorProto, numpy_helper
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
            values = np.clip(numpy_helper.to_array(attr.t), -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(values, attr.t.name))
        elif attr.name == "value_float":
            pass  # a float attribute stays; its output type is float32 by the spec, so leave the node float
        elif attr.name == "value_floats":
            pass


def _constant_of_shape_to_half(node: Any) -> None:
    from onnx import TensorProto, numpy_helper
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(attr.t).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(values, attr.t.name))


def _topological(nodes: List[Any], available: Set[str]) -> List[Any]:
    """Kahn's order (stable): inserted Casts come right after their input is produced."""
    produced_by: Dict[str, int] = {}
    for index, node in enumerate(nodes):
        for output in node.output:
            produced_by[output] = index
    ready = set(available)
    done = [False] * len(nodes)
    ordered: List[Any] = []
    progress = True
    while progress and len(ordered) < len(nodes):
        progress = False
        for index, node in enumerate(nodes):
            if done[index]:
                continue
            if all((not i) or i in ready or i not in produced_by for i in node.input):
                ordered.append(node)
                done[index] = True
                ready.update(node.output)
                progress = True
    if len(ordered) != len(nodes):
        raise RuntimeError("the converted graph has a cycle; please report this")
    return ordered
