"""Q/DQ placement for TensorRT, and the writer of INT8 Q/DQ ONNX stages from calibration ranges.

Written by hand rather than with onnxruntime's ``quantize_static`` or NVIDIA ModelOpt, because:

- onnxruntime's QDQ quantizer also quantizes the outputs of Conv/Gemm (a Q/DQ pair after every
  layer), quantizes biases to INT32, and knows nothing of TensorRT's residual-Add fusion; its
  calibrators keep every activation of every image in memory (about 6.5 GB for ResNet-50 FPN at
  800x800 on 128 images) and its entropy calibrator's defaults (128 bins, 128 quantized bins)
  leave a single candidate threshold, i.e. min-max.
- ModelOpt's ONNX PTQ follows TensorRT's rules, but pulls in a large dependency set for a tool
  that must run on a Jetson, calibrates through onnxruntime's calibrators (same memory problem),
  and would leave the per-layer fallback (sensitivity) outside our control.

Placement follows TensorRT's Q/DQ recommendations (developer guide, "Explicit Quantization"):

- Q/DQ on the inputs of weighted layers only (Conv, ConvTranspose, Gemm, MatMul): the activation
  input per tensor, the weights per output channel (axis 0 of Conv and of Gemm with transB=1,
  axis 1 of ConvTranspose, of Gemm with transB=0 and of MatMul's [K, N] weights). Outputs are not
  quantized: TensorRT propagates the scales itself and fuses Conv+BN+ReLU as one INT8 layer.
- A residual Add whose one input comes from a Conv gets a Q/DQ on its other input, so that
  TensorRT fuses the Add into that Conv (INT8 output with an INT8 residual). Where both inputs
  come from weighted layers, the second (the skip branch in torchvision's blocks) is quantized.
- Nothing on RoIAlign, on the box arithmetic of stage 2 (proposals, level selection) or on any
  non-weighted op; biases stay float (TensorRT adds them in float after the INT8 GEMM).
- The engine layout ("detector", one graph from uint8 pixels to detections): nothing on the
  postprocessing part (nodes named under graph_names.POSTPROCESS_SCOPES: anchors, decode, NMS,
  RoIAlign and its level selection, the final class-wise step), nor on the in-graph preprocessing
  (uint8 -> float, mean/std), whose last tensor is the first convolution's input and gets the
  usual Q/DQ. A network layer reading a tensor that a postprocess node produced (the pooled RoI
  features, input of a box head that starts with a convolution, as the shapes model's) still gets
  its input Q/DQ: the Q reads that FP32 output, the postprocess node itself stays FP32.
- Symmetric INT8: every zero point is an int8 0 (TensorRT accepts nothing else).
- Weights stay float32 initializers behind a QuantizeLinear -> DequantizeLinear pair, the form
  pytorch-quantization exports and every TensorRT from 8.0 on imports (INT8 initializers feeding a
  DequantizeLinear directly were refused by older parsers: "invalid weights type of Int8").

The same graphs run on ONNX Runtime's CPU provider, which computes them as fake quantization
(quantize, dequantize, float math): that is how INT8 accuracy is measured here.

Python 3.8: this module runs on the device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np

from ..graph_names import IMAGE_SIZE, is_postprocess_node

# Q/DQ node and tensor names start here, never with a postprocess scope: a quantized tensor may be
# named after a postprocess node (RoIAlign's output feeds the box head's first conv), and the
# builders find the FP32 part by node name
QDQ_PREFIX = "qdq/"

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# graph inputs that are box coordinates, not feature maps: nothing computed from them alone is quantized
NON_FEATURE_INPUTS = ("proposals",)
# the engine layout's (h, w) of the frame inside the input: masks and clipping, never a feature
_SIZE_INPUTS = (IMAGE_SIZE,)


@dataclass(frozen=True)
class Layer:
    """One quantizable layer: weighted nodes sharing a weight (the RPN head runs once per level)."""
    name: str  # the first node's name, e.g. "/backbone/body/layer1/layer1.0/conv1/Conv"
    stage: str
    nodes: Tuple[str, ...]
    op_type: str
    weight: Optional[str]  # initializer name (None: an activation x activation MatMul)
    weight_axis: int
    # (node name, input index, tensor) of every activation input this layer quantizes, including
    # the residual-Add input of the Add that TensorRT fuses into it
    activation_inputs: Tuple[Tuple[str, int, str], ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.stage}:{self.name}"

    @property
    def activations(self) -> Tuple[str, ...]:
        seen: List[str] = []
        for _, _, tensor in self.activation_inputs:
            if tensor not in seen:
                seen.append(tensor)
        return tuple(seen)


@dataclass
class QuantPlan:
    stage: str
    layers: List[Layer]
    # every float network activation (graph order): the feature inputs, the layers' activation
    # inputs and what the weighted layers compute, never the postprocessing part, the box
    # arithmetic or the in-graph preprocessing; what `calibrate --tensors all` measures
    dense_tensors: List[str]
    residual_adds: Dict[str, str] = field(default_factory=dict)  # Add node -> quantized input tensor

    @property
    def activation_tensors(self) -> List[str]:
        """Tensors that get a Q/DQ pair (the ones calibration must measure), in graph order."""
        wanted = {t for layer in self.layers for t in layer.activations}
        return [t for t in self.dense_tensors if t in wanted]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name or layer.qualified_name == name:
                return layer
        raise KeyError(name)


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _float_tensors(model: Any) -> Set[str]:
    """Names of float32 tensors (graph inputs, node outputs) by ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(_without_weights(model))
    floats = set()
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            floats.add(info.name)
    return floats


def _without_weights(model: Any) -> Any:
    """A copy for shape inference with big float initializers replaced by graph inputs (fast, small)."""
    import onnx
    from onnx import helper

    graph = model.graph
    small, big_inputs = [], []
    for init in graph.initializer:
        numel = int(np.prod(init.dims)) if len(init.dims) else 1
        if numel > 1024 and init.data_type == onnx.TensorProto.FLOAT:
            big_inputs.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            small.append(init)
    new_graph = helper.make_graph(list(graph.node), graph.name, list(graph.input) + big_inputs, list(graph.output),
                                  initializer=small, value_info=list(graph.value_info))
    return helper.make_model(new_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def plan_quantization(model: Any, stage: str) -> QuantPlan:
    """Where the Q/DQ pairs of one stage go, grouped into layers (see the module docstring)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    constants = set(initializers) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    feature_inputs, order, dense_set = _reachable(graph, initializers, _float_tensors(model))

    def is_activation(tensor: str) -> bool:
        return bool(tensor) and tensor in dense_set and tensor not in constants

    groups, group_order = _weighted_groups(graph, initializers, is_activation)
    conv_of: Dict[str, str] = {}  # output tensor of a weighted node -> its group key
    for key in group_order:
        for node in groups[key]:
            conv_of[node.output[0]] = key
    residual_inputs, residual_adds = _residual_adds(graph, group_order, conv_of, is_activation)

    layers: List[Layer] = []
    for key in group_order:
        nodes = groups[key]
        first = nodes[0]
        weight = first.input[1] if first.input[1] in initializers else None
        inputs: List[Tuple[str, int, str]] = []
        for node in nodes:
            inputs.append((node.name, 0, node.input[0]))
            if weight is None:
                inputs.append((node.name, 1, node.input[1]))
        inputs += residual_inputs[key]
        layers.append(Layer(name=first.name, stage=stage, nodes=tuple(n.name for n in nodes), op_type=first.op_type,
                            weight=weight, weight_axis=_weight_axis(first, initializers.get(weight) if weight else None),
                            activation_inputs=tuple(inputs)))
    return QuantPlan(stage=stage, layers=layers, residual_adds=residual_adds,
                     dense_tensors=_network_tensors(graph, order, dense_set, feature_inputs, conv_of, layers))


def _reachable(graph: Any, initializers: Mapping[str, Any], floats: Set[str]) -> Tuple[List[str], List[str], Set[str]]:
    """(the float feature inputs, every tensor that depends on a feature input (not on boxes alone)
    in graph order, the float ones among them)."""
    non_feature = set(NON_FEATURE_INPUTS) | set(_SIZE_INPUTS)
    feature_inputs = [i.name for i in graph.input
                      if i.name not in non_feature and i.name not in initializers and i.name in floats]
    dense: Set[str] = {i.name for i in graph.input if i.name not in non_feature and i.name not in initializers}
    order: List[str] = [i.name for i in graph.input if i.name in dense]
    for node in graph.node:
        if any(i in dense for i in node.input if i):
            for output in node.output:
                dense.add(output)  # reachability passes through int8 (Q/DQ) and shape tensors too
                order.append(output)
    return feature_inputs, order, {t for t in order if t in floats}


def _weighted_groups(graph: Any, initializers: Mapping[str, Any],
                     is_activation: Callable[[str], bool]) -> Tuple[Dict[str, List[Any]], List[str]]:
    """Weighted nodes, grouped by their weight initializer (none of the postprocessing part), and
    the groups' keys in graph order."""
    groups: Dict[str, List[Any]] = {}
    group_order: List[str] = []
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or not is_activation(node.input[0]):
            continue
        if is_postprocess_node(node.name):
            continue
        weight = node.input[1] if node.input[1] in initializers else None
        if weight is not None and initializers[weight].data_type != 1:  # float weights only
            continue
        if weight is None and not is_activation(node.input[1]):
            continue
        key = weight or node.name
        if key not in groups:
            groups[key] = []
            group_order.append(key)
        groups[key].append(node)
    return groups, group_order


def _residual_adds(graph: Any, group_order: List[str], conv_of: Mapping[str, str],
                   is_activation: Callable[[str], bool]) -> Tuple[Dict[str, List[Tuple[str, int, str]]], Dict[str, str]]:
    """The residual Adds of weighted layers' outputs: (group key -> (Add, input index, skip tensor)
    to quantize with that layer, Add name -> skip tensor)."""
    residual_inputs: Dict[str, List[Tuple[str, int, str]]] = {key: [] for key in group_order}
    residual_adds: Dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or is_postprocess_node(node.name):
            continue
        a, b = node.input
        if not (is_activation(a) and is_activation(b)):
            continue
        a_conv, b_conv = a in conv_of, b in conv_of
        if a_conv and not b_conv:
            partner, index, tensor = conv_of[a], 1, b
        elif b_conv and not a_conv:
            partner, index, tensor = conv_of[b], 0, a
        elif a_conv and b_conv:
            partner, index, tensor = conv_of[a], 1, b  # the skip branch is the second input
        else:
            continue
        residual_inputs[partner].append((node.name, index, tensor))
        residual_adds[node.name] = tensor
    return residual_inputs, residual_adds


def _network_tensors(graph: Any, order: List[str], dense: Set[str], feature_inputs: List[str],
                     weighted_outputs: Collection[str], layers: List[Layer]) -> List[str]:
    """The float network activations, in graph order: the float feature inputs, every layer's
    activation inputs and output, and the outputs of non-postprocess nodes computed from a layer.

    What this leaves out: the postprocessing part (by node scope), the box arithmetic (computed from
    boxes alone), and the engine layout's in-graph preprocessing (before the first weighted layer,
    whose input, the normalized image, is kept as that layer's activation input).
    """
    wanted: Set[str] = set(feature_inputs) | set(weighted_outputs) | {t for layer in layers for t in layer.activations}
    downstream: Set[str] = set(weighted_outputs)
    for node in graph.node:
        if any(i in downstream for i in node.input if i):
            downstream.update(o for o in node.output if o)
            if not is_postprocess_node(node.name):
                wanted.update(o for o in node.output if o)
    return [t for t in order if t in dense and t in wanted]


def _weight_axis(node: Any, weight: Any) -> int:
    """The output-channel axis of a weight, the axis TensorRT quantizes per channel."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if int(_attribute(node, "transB", 0)) else 1
    # MatMul: B is [..., K, N], output channels are the last axis
    return max(0, len(weight.dims) - 1) if weight is not None else 0


def weight_scales(weight: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric scales max|W_c| / 127 (channels of a zero weight get 1/127)."""
    moved = np.moveaxis(np.abs(weight.astype(np.float32)), axis, 0).reshape(weight.shape[axis], -1)
    amax = moved.max(axis=1) if moved.shape[1] else np.zeros(weight.shape[axis], np.float32)
    amax = np.where(amax > 0, amax, 1.0)
    return (amax / 127.0).astype(np.float32)


def activation_scale(amax: float) -> float:
    return (float(amax) if amax > 0 else 1.0) / 127.0


def quantize_model(model: Any, plan: QuantPlan, amax: Mapping[str, float],
                   exclude: Collection[str] = ()) -> Tuple[Any, List[str]]:
    """A copy of `model` with Q/DQ pairs placed by `plan`, except on the layers named in `exclude`.

    `amax` maps activation tensors to their calibrated range. Returns (model, names of the layers
    quantized). Layers whose activation has no range are left unquantized (and named in the error
    of the caller, which checks the ranges against the plan first).
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {init.name: init for init in graph.initializer}
    excluded = set(exclude)
    chosen = [layer for layer in plan.layers
              if layer.name not in excluded and layer.qualified_name not in excluded
              and all(t in amax for t in layer.activations)]

    writer = _QdqWriter({o for n in graph.node for o in n.output})
    for layer in chosen:
        for node_name, index, tensor in layer.activation_inputs:
            writer.quantize_activation(node_name, index, tensor, amax[tensor])
        if layer.weight is not None:
            writer.quantize_weight(layer, initializers[layer.weight])

    nodes_out: List[Any] = list(writer.leading)
    for node in graph.node:
        for index in range(len(node.input)):
            replacement = writer.rewire.get((node.name, index))
            if replacement is not None:
                node.input[index] = replacement
        nodes_out.append(node)
        for output in node.output:
            nodes_out.extend(writer.qdq_after.get(output, []))
    del graph.node[:]
    graph.node.extend(nodes_out)
    graph.initializer.extend(writer.new_initializers)
    del graph.value_info[:]  # stale for the rewired tensors; consumers re-infer
    return out, [layer.qualified_name for layer in chosen]


class _QdqWriter:
    """The Q/DQ nodes and initializers quantize_model adds, and the node inputs they replace."""

    def __init__(self, produced: Set[str]) -> None:
        self.produced = produced  # tensors some node outputs (the others are graph inputs)
        self.new_initializers: List[Any] = []
        # activation tensor -> DQ output, and which (node, input index) read it
        self.rewire: Dict[Tuple[str, int], str] = {}
        self.activation_dq: Dict[str, str] = {}
        self.qdq_after: Dict[str, List[Any]] = {}  # tensor -> Q/DQ nodes to emit right after its producer
        self.leading: List[Any] = []  # Q/DQ of graph inputs and weights: emitted first

    def zero_point(self, name: str, size: Optional[int]) -> str:
        from onnx import numpy_helper

        values = np.zeros(size if size is not None else (), dtype=np.int8)
        self.new_initializers.append(numpy_helper.from_array(values, name))
        return name

    def quantize_activation(self, node_name: str, index: int, tensor: str, amax: float) -> None:
        """Input `index` of `node_name` reads `tensor` through its (one, shared) Q/DQ pair."""
        from onnx import helper, numpy_helper

        if tensor not in self.activation_dq:
            scale_name = f"{tensor}_scale"
            self.new_initializers.append(numpy_helper.from_array(np.array(activation_scale(amax), np.float32), scale_name))
            zp_name = self.zero_point(f"{tensor}_zero_point", None)
            q_out, dq_out = f"{QDQ_PREFIX}{tensor}/QuantizeLinear_Output", f"{QDQ_PREFIX}{tensor}/DequantizeLinear_Output"
            nodes = [helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [q_out], name=f"{QDQ_PREFIX}{tensor}/QuantizeLinear"),
                     helper.make_node("DequantizeLinear", [q_out, scale_name, zp_name], [dq_out], name=f"{QDQ_PREFIX}{tensor}/DequantizeLinear")]
            if tensor in self.produced:
                self.qdq_after.setdefault(tensor, []).extend(nodes)
            else:
                self.leading.extend(nodes)
            self.activation_dq[tensor] = dq_out
        self.rewire[(node_name, index)] = self.activation_dq[tensor]

    def quantize_weight(self, layer: Layer, initializer: Any) -> None:
        """Per-channel Q/DQ of the layer's weight: one pair per node, as a per-call fake-quantized
        module exports (the RPN head's convolutions share their weights across levels, not their
        Q/DQ nodes)."""
        from onnx import helper, numpy_helper

        scales = weight_scales(numpy_helper.to_array(initializer), layer.weight_axis)
        scale_name = f"{layer.weight}_scale"
        self.new_initializers.append(numpy_helper.from_array(scales, scale_name))
        zp_name = self.zero_point(f"{layer.weight}_zero_point", int(scales.shape[0]))
        for index, node_name in enumerate(layer.nodes):
            suffix = f"_{index}" if len(layer.nodes) > 1 else ""
            q_out = f"{QDQ_PREFIX}{layer.weight}/QuantizeLinear_Output{suffix}"
            dq_out = f"{QDQ_PREFIX}{layer.weight}/DequantizeLinear_Output{suffix}"
            self.leading.append(helper.make_node("QuantizeLinear", [layer.weight, scale_name, zp_name], [q_out],
                                                 name=f"{QDQ_PREFIX}{layer.weight}/QuantizeLinear{suffix}", axis=layer.weight_axis))
            self.leading.append(helper.make_node("DequantizeLinear", [q_out, scale_name, zp_name], [dq_out],
                                                 name=f"{QDQ_PREFIX}{layer.weight}/DequantizeLinear{suffix}", axis=layer.weight_axis))
            self.rewire[(node_name, 1)] = dq_out


def missing_ranges(plan: QuantPlan, amax: Mapping[str, float]) -> List[str]:
    return [t for t in plan.activation_tensors if t not in amax]


def ensure_node_names(model: Any) -> None:
    """Give every unnamed node a unique name (Q/DQ rewiring and layer names rely on them)."""
    seen: Set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}" if f"{node.op_type}_{index}" not in seen else f"{node.op_type}_{index}_n"
        seen.add(node.name)
