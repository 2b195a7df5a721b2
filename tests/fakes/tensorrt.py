"""Stand-ins for `tensorrt`, shared by the builder and backend tests (TensorRT cannot be installed
on the machines that develop and test edge-fpn; where TensorRT-RTX runs, tests/test_nvidia_parser.py
checks that the builder fake's parser and NVIDIA's real one agree).

- ``fake_tensorrt``: the builder side (Builder, network, ONNX parser, builder config), as strict as
  each TensorRT version line where edge-fpn's logic depends on it.
- ``make_fake_trt``: the runtime side (Runtime, engine, execution context); an "engine" file is JSON
  naming an ONNX graph that ONNX Runtime runs on fake device memory (tests/fakes/cuda.py).
"""
from __future__ import annotations

import json
import os
import types

import numpy as np

from edge_fpn.runtime.backends import tensorrt_logic as logic


def fake_tensorrt(version="10.3.0", dla_cores=0, fail_build=False, gpu="Orin"):
    """A stand-in `tensorrt` as strict as the real one where edge-fpn's logic depends on it:

    - the ONNX parser of TensorRT 10+ does not register libnvinfer_plugin's plugins: a RoiAlign node
      fails to import ("ROIAlign_TRT ... not found") unless init_libnvinfer_plugins ran first;
    - the network has one layer per ONNX node, named after it (and "[ONNX Layer: ...]" metadata
      from 8.6), with TensorRT's tensor types (INT64 becomes INT32 before 9.0), in topological
      order, plus the parser's helper layers, named as TensorRT names an unnamed layer
      ("(Unnamed Layer* 7) [Shuffle]"; metadata of their node from 8.6, none on 8.5): the transpose
      of NonMaxSuppression's scores and the unsqueeze/squeeze around a TopK of 1-D data; setting a layer's
      precision or output type raises in a strongly typed network (11, or STRONGLY_TYPED), and an
      output type other than FP32/FP16 on a non-float output raises (TopK's indices, shapes);
    - set_timing_cache returns False for a cache made on another GPU (and does not use it);
    - BuilderFlag has no FP16/INT8/OBEY_PRECISION_CONSTRAINTS on 11;
    - the parser refuses what edge_fpn/export/tensorrt_support.json says its version cannot import
      (so the fake cannot drift from what `check` believes): operators, opsets, TopK's K above the
      limit or (8.5) not an initializer; before 8.5, RoiAlign and NonMaxSuppression (8.4's parser
      stops at opset 13); types TensorRT does not have (DOUBLE, ...) instead of reading them as FLOAT;
      UINT8 into anything but a Cast, and (8.6+) UINT8 intermediate tensors;
    - the build fails (None, an error logged) for FP16/INT8 flags on a strongly typed network, for a
      dynamic input without an optimization profile, and add_optimization_profile returns -1 for a
      profile without min <= opt <= max.
    """
    import onnx
    from onnx import numpy_helper

    from edge_fpn.export.check import load_support_table

    major, minor = (int(v) for v in version.split(".")[:2])
    table = load_support_table()["tensorrt"]
    usable = [key for key in table if tuple(int(p) for p in key.split(".")) <= (major, minor)]
    if usable:
        rules = table[max(usable, key=lambda key: tuple(int(p) for p in key.split(".")))]
        not_importable, opsets = set(rules["not_importable"]), (int(rules["min_opset"]), int(rules["max_opset"]))
        topk_max, topk_dynamic = int(rules["topk_max_k"]), bool(rules.get("topk_dynamic_k"))
    else:  # TensorRT 8.4 (JetPack 5.0.2): no RoiAlign, no native NMS, opsets up to 13
        not_importable, opsets = {"RoiAlign", "NonMaxSuppression"}, (7, 13)
        topk_max, topk_dynamic = 3840, False
    calls, events = [], []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = calls
    trt.events = events  # "plugins" / "parse:<file>" / "build:<file>", in order
    flags = {"EXPLICIT_BATCH": 0}
    if major >= 10:
        flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    builder_flags = {"GPU_FALLBACK": "GPU_FALLBACK"}
    if major < 11:
        builder_flags.update(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS")
    trt.BuilderFlag = types.SimpleNamespace(**builder_flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = types.SimpleNamespace(GPU="GPU", DLA="DLA")
    names = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"] + (["INT64"] if major >= 9 else [])
    trt.DataType = types.SimpleNamespace(**{n: "DataType." + n for n in names})
    trt.float32, trt.float16, trt.int32 = trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.INT32
    floats = {trt.DataType.FLOAT, trt.DataType.HALF}
    trt.LayerType = types.SimpleNamespace(SHAPE="SHAPE", TOPK="TOPK", NMS="NMS", PLUGIN="PLUGIN", SHUFFLE="SHUFFLE",
                                          ELEMENTWISE="ELEMENTWISE", OTHER="OTHER")
    layer_types = {"Shape": "SHAPE", "TopK": "TOPK", "NonMaxSuppression": "NMS", "RoiAlign": "PLUGIN",
                   "Reshape": "SHUFFLE", "Unsqueeze": "SHUFFLE", "Squeeze": "SHUFFLE", "Flatten": "SHUFFLE",
                   "Transpose": "SHUFFLE", "Add": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Sub": "ELEMENTWISE"}
    onnx_types = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF", onnx.TensorProto.INT8: "INT8",
                  onnx.TensorProto.INT32: "INT32", onnx.TensorProto.BOOL: "BOOL", onnx.TensorProto.UINT8: "UINT8",
                  onnx.TensorProto.INT64: "INT64" if major >= 9 else "INT32"}
    trt.plugins_registered = False

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    def init_libnvinfer_plugins(logger, namespace):
        assert isinstance(logger, ILogger) and isinstance(namespace, str)
        events.append("plugins")
        trt.plugins_registered = True
        return True

    class TimingCache:
        def __init__(self, device, entries):
            self.device, self.entries = device, entries

        def serialize(self):
            return b"TC|" + self.device + b"|" + self.entries

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class Config:
        def __init__(self):
            self.flags, self.profiles = [], []
            self.default_device_type = "GPU"
            self.DLA_core = -1
            self.int8_calibrator = None
            self.calibration_profile = None
            self.timing_cache = None
            self.pool = {}

        def set_flag(self, flag):
            self.flags.append(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def add_optimization_profile(self, profile):
            # as the real one (TensorRT-RTX taught it): an invalid profile is not added, and the
            # call returns -1 instead of raising
            if not all(all(lo <= op <= hi for lo, op, hi in zip(*shapes)) for shapes in profile.shapes.values()):
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

        def create_timing_cache(self, data):
            data = bytes(data)
            if not data:
                return TimingCache(gpu.encode(), b"")
            if not data.startswith(b"TC|") or data.count(b"|") < 2:
                return None  # not a timing cache
            _, device, entries = data.split(b"|", 2)
            return TimingCache(device, entries)

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache.device != gpu.encode() and not ignore_mismatch:
                return False  # "a failure will be reported if the CUDA device property ... is different"
            self.timing_cache = cache
            return True

    class Tensor:
        def __init__(self, name, dtype):
            self.name, self.dtype = name, dtype
            self.dynamic = False  # a dimension without a fixed size (the build needs a profile)

    class Layer:
        def __init__(self, network, name, type_, inputs, outputs, node=None):
            self.network = network
            self.name = name
            self.type = type_
            if (major, minor) >= (8, 6):  # ILayer.metadata exists from 8.6 ("" where the parser set none)
                self.metadata = f"[ONNX Layer: {node}]" if node else ""
            self.inputs, self.outputs = list(inputs), list(outputs)
            self._precision = None
            self.output_types = {}

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, index):
            return self.inputs[index]

        def get_output(self, index):
            return self.outputs[index]

        @property
        def precision(self):
            return self._precision or trt.DataType.FLOAT

        @precision.setter
        def precision(self, dtype):
            if self.network.strongly_typed:
                raise RuntimeError("strongly typed networks reject setPrecision")
            assert dtype in vars(trt.DataType).values()
            self._precision = dtype

        def set_output_type(self, index, dtype):
            if self.network.strongly_typed:
                raise RuntimeError("strongly typed networks reject setOutputType")
            if self.type == trt.LayerType.TOPK and index == 1 or self.outputs[index].dtype not in floats:
                raise RuntimeError(f"setOutputType on the {self.outputs[index].dtype} output {index} of {self.name}")
            self.output_types[index] = dtype

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.strongly_typed = major >= 11 or bool(flags & (1 << flags_of("STRONGLY_TYPED")))
            self.layers, self.inputs = [], []
            self.helpers = {}  # the parser's helper layers: name -> their ONNX node

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.inputs))

        def get_input(self, index):
            return self.inputs[index]

        def add_input(self, name, dtype, shape):
            assert dtype in vars(trt.DataType).values() and name not in {t.name for t in self.inputs}
            self.inputs.append(Tensor(name, dtype))
            return self.inputs[-1]

        def get_layer(self, index):
            return self.layers[index]

        # not TensorRT's API: how the stand-in parser (and a test) adds a layer; name=None gives
        # TensorRT's name of an unnamed layer, outputs as dtypes get TensorRT's default tensor names
        def add_layer(self, name, type_, inputs, outputs, node=None):
            default = f"(Unnamed Layer* {len(self.layers)}) [{type_.title()}]"
            outputs = [t if isinstance(t, Tensor) else
                       Tensor(default + ("_output" if len(outputs) == 1 else f"_output_{i}"), t)
                       for i, t in enumerate(outputs)]
            layer = Layer(self, name or default, type_, inputs, outputs, node)
            self.layers.append(layer)
            return layer

        def add_helper(self, type_, inputs, outputs, node):
            layer = self.add_layer(None, type_, inputs, outputs, node)
            self.helpers[layer.name] = node
            return layer

        def import_node(self, node, tensors, ranks):
            name = node.name or f"node_of_{node.output[0]}"
            type_ = getattr(trt.LayerType, layer_types.get(node.op_type, "OTHER"))
            inputs = [tensors.get(i) if i else None for i in node.input]
            outputs = [tensors[o] for o in node.output]
            if node.op_type == "NonMaxSuppression":  # INMSLayer reads scores as [batch, boxes, classes]
                inputs[1] = self.add_helper(trt.LayerType.SHUFFLE, [inputs[1]], [inputs[1].dtype], name).outputs[0]
            if node.op_type == "TopK" and ranks.get(node.input[0]) == 1:  # ITopKLayer needs 2-D data
                inputs[0] = self.add_helper(trt.LayerType.SHUFFLE, [inputs[0]], [inputs[0].dtype], name).outputs[0]
                topk = self.add_layer(name, type_, inputs, [t.dtype for t in outputs], name)
                for i, final in enumerate(outputs):
                    self.add_helper(trt.LayerType.SHUFFLE, [topk.outputs[i]], [final], name)
                return
            self.add_layer(name, type_, inputs, outputs, name)

    def flags_of(name):
        return getattr(trt.NetworkDefinitionCreationFlag, name, 99)

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def _error(self, message):
            self.logger.log(ILogger.Severity.ERROR, message)  # as TensorRT reports a failed build

        def build_serialized_network(self, network, config):
            events.append("build:" + os.path.basename(network.onnx["path"]))
            precision = [f for f in config.flags if f in ("FP16", "INT8")]
            if network.strongly_typed and precision:
                self._error(f"strongly typed networks take no precision flags ({precision})")
                return None
            profiled = {name for profile in config.profiles for name in profile.shapes}
            unprofiled = [t.name for t in network.inputs if t.dynamic and t.name not in profiled]
            if unprofiled:
                self._error(f"Network has dynamic or shape inputs ({unprofiled}), but no optimization profile "
                            "has been defined")
                return None
            calibration = None
            if config.int8_calibrator is not None:
                calibration = config.int8_calibrator.read_calibration_cache().decode()
            calls.append({"network_flags": network.flags, "flags": list(config.flags), "pool": dict(config.pool),
                          "profiles": [p.shapes for p in config.profiles], "device": config.default_device_type,
                          "dla_core": config.DLA_core, "calibration": calibration,
                          "calibration_profile": config.calibration_profile.shapes if config.calibration_profile else None,
                          "timing_cache": config.timing_cache.entries if config.timing_cache else None,
                          "fp32_layers": sorted(l.name for l in network.layers if l._precision == trt.DataType.FLOAT),
                          "output_types": {l.name: dict(l.output_types) for l in network.layers if l.output_types},
                          "helpers": {l.name: (network.helpers[l.name], any(t.dtype in floats for t in l.outputs))
                                      for l in network.layers if l.name in network.helpers},
                          "onnx": network.onnx})
            if config.timing_cache is not None:
                config.timing_cache.entries += b"t"  # this build's timings
            if fail_build:
                return None
            return b"ENGINE"

    class ParserError:
        """IParserError: node() (an index) and desc() on every version; node_name() and
        node_operator() from TensorRT 10 only (8.x has no such methods)."""

        def __init__(self, text, index=-1, node=None):
            self.text, self.index, self.onnx_node = text, index, node
            if major >= 10:
                self.node_name = lambda: node.name if node is not None else ""
                self.node_operator = lambda: node.op_type if node is not None else ""

        def desc(self):
            return self.text

        def node(self):
            return self.index

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.errors = []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, index):
            return self.errors[index]

        def parse_from_file(self, path):
            events.append("parse:" + os.path.basename(path))
            model = onnx.load(path)
            for node in model.graph.node:
                if node.op_type == "RoiAlign" and major >= 10 and not trt.plugins_registered:
                    self.errors.append(ParserError(
                        f"In node {node.name} (checkFallbackPluginImporter): creator && \"Plugin not found, are the "
                        "plugin name, version, and namespace correct?\" (ROIAlign_TRT was not found in the plugin registry)"))
                    return False
            refusal = self._refusal(model)
            if refusal:
                self.errors.append(ParserError(*refusal))
                return False
            inferred = onnx.shape_inference.infer_shapes(model)
            # what the real parser taught (TensorRT-RTX, NVIDIA/TensorRT#3985): UINT8 is network I/O
            # only, read by a Cast alone; from 8.6 no UINT8 intermediate tensor at all
            elem = {i.name: i.type.tensor_type.elem_type for i in list(inferred.graph.input)
                    + list(inferred.graph.value_info) + list(inferred.graph.output)}
            elem.update({t.name: t.data_type for t in model.graph.initializer})
            outputs = {o.name for o in model.graph.output}
            for index, node in enumerate(model.graph.node):
                if node.op_type != "Cast" and any(elem.get(i) == onnx.TensorProto.UINT8 for i in node.input):
                    self.errors.append(ParserError(
                        f"Invalid Node - {node.name}\n{node.name}: first input has type UInt8 but must have type "
                        "Float, Half, Int8, Int32 or Bool", index, node))
                    return False
                if (major, minor) >= (8, 6) and any(elem.get(o) == onnx.TensorProto.UINT8 and o not in outputs
                                                    for o in node.output):
                    self.errors.append(ParserError(
                        f"{node.name}: TensorRT does not support UINT8 types for intermediate tensors!", index, node))
                    return False
            tensors, ranks = {}, {}
            for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
                tensors[info.name] = Tensor(info.name, getattr(trt.DataType, onnx_types.get(info.type.tensor_type.elem_type, "FLOAT")))
                if info.type.tensor_type.HasField("shape"):
                    ranks[info.name] = len(info.type.tensor_type.shape.dim)
                    tensors[info.name].dynamic = any(not d.HasField("dim_value") for d in info.type.tensor_type.shape.dim)
            for init in model.graph.initializer:
                tensors[init.name] = Tensor(init.name, getattr(trt.DataType, onnx_types.get(init.data_type, "FLOAT")))
            self.network.inputs += [tensors[i.name] for i in model.graph.input if i.name in tensors
                                    and i.name not in {init.name for init in model.graph.initializer}]
            for node in model.graph.node:
                for name in node.output:
                    tensors.setdefault(name, Tensor(name, trt.DataType.FLOAT))
                self.network.import_node(node, tensors, ranks)
            self.network.onnx = {"path": path, "opset": model.opset_import[0].version,
                                 "types": sorted({i.type.tensor_type.elem_type for i in model.graph.input}),
                                 "ops": sorted({n.op_type for n in model.graph.node}),
                                 "float16_initializers": sum(t.data_type == 10 for t in model.graph.initializer)}
            return True

        def _refusal(self, model):
            """(message, node index, node) of the first thing this version's parser refuses, or None."""
            opset = max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
            if not opsets[0] <= opset <= opsets[1]:
                return (f"Unsupported ONNX opset {opset}: this parser imports opsets {opsets[0]} to {opsets[1]}", -1, None)
            infos = list(model.graph.input) + list(model.graph.output)
            for info in infos:
                if info.type.tensor_type.elem_type not in onnx_types:
                    kind = onnx.TensorProto.DataType.Name(info.type.tensor_type.elem_type)
                    return (f"{info.name}: unsupported data type {kind}", -1, None)
            constants = {t.name: t for t in model.graph.initializer}
            for index, node in enumerate(model.graph.node):
                if node.op_type in not_importable:
                    return (f"No importer registered for op: {node.op_type}", index, node)
                if node.op_type == "TopK" and len(node.input) > 1:
                    if node.input[1] not in constants:
                        if not topk_dynamic:
                            return (f"{node.name}: this version's TopK importer needs K as an initializer", index, node)
                        continue
                    k = int(numpy_helper.to_array(constants[node.input[1]]).ravel()[0])
                    if k > topk_max:
                        return (f"{node.name}: TopK K = {k}, but K must be <= {topk_max}", index, node)
            return None

    class Calibrator:
        def __init__(self):
            pass

    trt.ILogger = ILogger
    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    if major < 11:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (Calibrator,), {})
        trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (Calibrator,), {})
    return trt


class FakeDataType:
    """A member of tensorrt.DataType (a pybind11 enum): ``.name`` "FLOAT", ``str`` "DataType.FLOAT"."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __str__(self):
        return f"DataType.{self.name}"

    def __repr__(self):
        return f"<DataType.{self.name}: {self.value}>"

    @classmethod
    def enum(cls, names):
        return types.SimpleNamespace(**{name: cls(name, value) for value, name in enumerate(names)})


def make_fake_trt(memory, version="10.3.0.30", dla_cores=0):
    """An 'engine' file is JSON naming an ONNX file; executing it runs ONNX Runtime on fake memory.

    As strict as TensorRT where the backend depends on it: an engine that holds a plugin
    ("plugins" in its JSON; RoiAlign's ROIAlign_TRT) deserializes only after init_libnvinfer_plugins;
    a DLA engine ("dla_core") only with the runtime's DLA_core set to that core first;
    set_tensor_address returns a bool (False for an unknown name, a null or misaligned address);
    tensor types come from the graph (uint8 image, int32 labels) as trt.DataType members (an enum:
    ``.name`` "FLOAT", ``str`` "DataType.FLOAT"); and trt.nptype, like TensorRT 8.5's with NumPy >= 1.24
    (it looks up the removed np.bool; NVIDIA/TensorRT #2557, #2701), raises AttributeError before 8.6."""
    import onnxruntime as ort
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # "v2" / "v3" executions
    trt.events = []  # "plugins", "DLA_core=<n>", "deserialize", in order
    trt.plugins_registered = False
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    kinds = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32", "tensor(int8)": "INT8",
             "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(int64)": "INT64"}
    trt.DataType = FakeDataType.enum(list(kinds.values()) + ["FP8", "BF16", "INT4"])
    numpy_of = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
                trt.DataType.INT8: np.int8, trt.DataType.UINT8: np.uint8, trt.DataType.BOOL: np.bool_,
                trt.DataType.INT64: np.int64}

    def nptype(dtype):
        if logic.parse_version(version)[:2] < (8, 6):  # TensorRT 8.5's mapping holds np.bool: gone in NumPy 1.24
            raise AttributeError("module 'numpy' has no attribute 'bool'.\n`np.bool` was a deprecated alias for the "
                                 "builtin `bool`.")
        if dtype not in numpy_of:
            raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {dtype}")
        return numpy_of[dtype]

    trt.nptype = nptype

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level
            self.errors = []

    def init_libnvinfer_plugins(logger, namespace):
        assert isinstance(logger, Logger) and isinstance(namespace, str)
        trt.events.append("plugins")
        trt.plugins_registered = True
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            if name not in self.engine.names or not ptr or int(ptr) % 256:
                return False
            self.addresses[name] = int(ptr)
            return True

        def _run(self, addresses):
            session = self.engine.session
            feeds = {i.name: memory.view(addresses[i.name], self.engine.numpy(i.name), self.shapes[i.name]).copy()
                     for i in session.get_inputs()}
            outputs = session.run(None, feeds)
            for meta, value in zip(session.get_outputs(), outputs):
                memory.view(addresses[meta.name], value.dtype, value.shape)[...] = value
            return True

        def execute_async_v3(self, stream_handle):
            assert logic.parse_version(version)[0] >= 10, "execute_async_v3 is used only on TensorRT 10+"
            assert set(self.addresses) == set(self.engine.names), "every I/O tensor needs an address"
            assert type(stream_handle) is int, "TensorRT takes the stream as an int"
            trt.calls.append("v3")
            addresses = dict(self.addresses)
            memory.enqueue(stream_handle, lambda: self._run(addresses))  # runs in the stream's order
            return True

        def execute_async_v2(self, bindings, stream_handle):
            assert logic.parse_version(version)[0] < 10, "TensorRT 10 has no execute_async_v2"
            assert type(stream_handle) is int, "TensorRT takes the stream as an int"
            trt.calls.append("v2")
            addresses = dict(zip(self.engine.names, bindings))
            memory.enqueue(stream_handle, lambda: self._run(addresses))
            return True

    class Engine:
        def __init__(self, onnx_path):
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            inputs = [i.name for i in self.session.get_inputs()]
            outputs = [o.name for o in self.session.get_outputs()]
            self.names = inputs[::-1] + outputs  # an engine's own order, not the manifest's
            self.modes = {n: ("INPUT" if n in inputs else "OUTPUT") for n in self.names}
            self.types = {t.name: getattr(trt.DataType, kinds[t.type])
                          for t in list(self.session.get_inputs()) + list(self.session.get_outputs())}

        def numpy(self, name):
            return numpy_of[self.types[name]]

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return self.modes[name]

        def get_tensor_dtype(self, name):
            return self.types[name]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            self.logger = logger
            self._dla_core = -1

        @property
        def DLA_core(self):
            return self._dla_core

        @DLA_core.setter
        def DLA_core(self, core):
            if not 0 <= core < self.num_DLA_cores:
                raise RuntimeError(f"setDLACore({core}): this device has {self.num_DLA_cores} DLA core(s)")
            trt.events.append(f"DLA_core={core}")
            self._dla_core = core

        def deserialize_cuda_engine(self, blob):
            trt.events.append("deserialize")
            try:
                spec = json.loads(blob.decode())
                onnx_path = spec["onnx"]
            except (ValueError, KeyError):
                return None
            if spec.get("plugins") and not trt.plugins_registered:
                self.logger.errors.append(f"Cannot deserialize plugin {spec['plugins'][0]}: not in the plugin registry")
                return None
            if spec.get("dla_core") is not None and self._dla_core != spec["dla_core"]:
                self.logger.errors.append("the engine was built for another DLA core")
                return None
            engine = Engine(onnx_path)
            if logic.parse_version(version)[0] < 9 and trt.DataType.INT64 in engine.types.values():
                # TensorRT 8.x has no INT64 tensors: its builder made them INT32, so no 8.x engine has one
                self.logger.errors.append("TensorRT 8.x engines have no INT64 inputs or outputs")
                return None
            return engine

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt
