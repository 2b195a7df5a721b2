"""TensorRT-RTX's two gaps around RoiAlign, worked around so that its real ONNX parser (and
builder) can judge edge-fpn's graphs on a host with no GPU (nvidia_parser, and the tests).

TensorRT-RTX 1.7.1 (PyPI ``tensorrt-rtx-cu13-libs``/``-bindings``, module ``tensorrt_rtx_bindings``):

1. **Its parser does not find its own ROIAlign_TRT.** ``init_libnvinfer_plugins`` registers the
   creator "ROIAlign_TRT" version "2", and the parser finds it, but the plugin's constructor asks
   CUDA about the GPU; without a driver that fails, the creator returns nothing and the parser says
   "ROIAlign plugin was not found in the plugin registry!". ``register_roialign_stand_in`` puts a
   Python IPluginV3 under the same name, version and namespace: shape and type inference only (output
   [rois, C, output_height, output_width] in the features' type), the fields the importer passed
   recorded (so a test can check the importer's attribute mapping), the same six fields serialized
   with the same types as NVIDIA's plugin. It has no kernel: ``enqueue`` raises. Nothing runs a plan
   on a machine without a GPU, and on a Jetson the real TensorRT and its real plugin are used.
2. **Its parser aborts the process on any plugin layer** when it cannot dlopen the unversioned
   "libtensorrt_rtx.so" (the wheel ships only libtensorrt_rtx.so.1: the C++ exception reaches a
   noexcept boundary, "terminate called without an active exception"). ``ensure_plugin_loading``
   makes that name resolvable in this process, by the first of:
     a. the wheel's folder already holds libtensorrt_rtx.so (nothing to do);
     b. tensorrt_rtx_bindings is not loaded yet: a private folder holds the links
        libtensorrt_onnxparser_rtx.so.1 -> the wheel's parser and libtensorrt_rtx.so -> the wheel's
        libtensorrt_rtx.so.1, and the parser is loaded first from there, so that its $ORIGIN rpath
        (glibc keeps the link's folder) finds libtensorrt_rtx.so; the bindings reuse that parser;
     c. "libtensorrt_rtx.so" already loads by name (LD_LIBRARY_PATH, the ld.so cache);
   and otherwise ``register_roialign_stand_in`` raises instead of letting a parse abort the process.
   ``import_tensorrt_rtx`` runs it before importing the bindings: import them through it.

Everything C++ may still point at (creators, loggers, plugin objects, loaded libraries) is kept
for the life of the process. Python 3.8: this module runs on hosts and devices alike.
"""
from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from typing import Any, Dict, List, Optional, Tuple

ROIALIGN_NAME = "ROIAlign_TRT"
ROIALIGN_VERSION = "2"
ROIALIGN_NAMESPACE = ""

# How the ONNX importer (onnxOpImporters.cpp, importRoiAlign) encodes the string attributes.
COORDINATE_TRANSFORMATION_MODES = {0: "output_half_pixel", 1: "half_pixel"}
ROIALIGN_MODES = {0: "max", 1: "avg"}

# The fields of ROIAlign_TRT v2, in the order and with the types of the built-in creator / plugin.
_INT32, _FLOAT32 = "INT32", "FLOAT32"
ROIALIGN_FIELDS = (
    ("coordinate_transformation_mode", _INT32, 1),
    ("mode", _INT32, 1),
    ("output_height", _INT32, 1),
    ("output_width", _INT32, 1),
    ("sampling_ratio", _INT32, 0),
    ("spatial_scale", _FLOAT32, 1.0),
)

_PARSER_LIB = "libtensorrt_onnxparser_rtx.so.1"
_RUNTIME_LIB = "libtensorrt_rtx.so.1"
_UNVERSIONED = "libtensorrt_rtx.so"

_lock = threading.RLock()
# Everything C++ may still point at lives here for the life of the process: the creators (ours and
# the deregistered built-in), the loggers, every plugin object handed to TensorRT, the loaded libraries.
_STATE: Dict[str, Any] = {"plugin_loading": None, "keep": [], "creator": None, "logger": None}


# --------------------------------------------------------------------------------------------------
# "libtensorrt_rtx.so" for the parser's dlopen


def _wheel_lib_dir() -> Optional[str]:
    try:
        spec = importlib.util.find_spec("tensorrt_rtx_libs")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return os.path.dirname(os.path.realpath(spec.origin))


def _parser_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return any(_PARSER_LIB in line for line in maps)
    except OSError:
        return "tensorrt_rtx_bindings" in sys.modules


def _symlink_preload(lib_dir: str) -> None:
    folder = tempfile.mkdtemp(prefix="edge-fpn-rtx-libs-")
    os.symlink(os.path.join(lib_dir, _PARSER_LIB), os.path.join(folder, _PARSER_LIB))
    os.symlink(os.path.join(lib_dir, _RUNTIME_LIB), os.path.join(folder, _UNVERSIONED))
    atexit.register(shutil.rmtree, folder, True)  # the parser dlopens through it lazily: keep it until exit
    _STATE["keep"].append(ctypes.CDLL(os.path.join(folder, _PARSER_LIB)))


def ensure_plugin_loading() -> str:
    """Make the parser's dlopen("libtensorrt_rtx.so") succeed in this process (see the module docstring).

    Returns which way ("wheel", "symlink-preload", "by-name") or "unavailable: why". Idempotent;
    never raises.
    """
    with _lock:
        if _STATE["plugin_loading"] is not None:
            return _STATE["plugin_loading"]
        lib_dir = _wheel_lib_dir()
        how = None
        if lib_dir is None or not os.path.isfile(os.path.join(lib_dir, _PARSER_LIB)):
            how = "unavailable: the tensorrt_rtx_libs wheel is not installed"
        elif os.path.exists(os.path.join(lib_dir, _UNVERSIONED)):
            how = "wheel"
        elif not _parser_loaded():
            try:
                _symlink_preload(lib_dir)
                how = "symlink-preload"
            except OSError as exc:
                how = None
                _STATE["symlink_error"] = str(exc)
        if how is None:
            try:
                _STATE["keep"].append(ctypes.CDLL(_UNVERSIONED))
                how = "by-name"
            except OSError as exc:
                why = (f"{_PARSER_LIB} was loaded before edge-fpn could prepare it (import tensorrt_rtx_bindings "
                       "through edge_fpn.export.rtx_roialign.import_tensorrt_rtx)" if "symlink_error" not in _STATE
                       else f"the link folder failed ({_STATE['symlink_error']})")
                how = f"unavailable: {why}, and {_UNVERSIONED} does not load by name ({exc})"
        _STATE["plugin_loading"] = how
        return how


# --------------------------------------------------------------------------------------------------
# The ROIAlign_TRT stand-in


def _field_value(field, kind: str):
    import numpy as np
    data = np.asarray(field.data)
    if kind == "CHAR":
        return bytes(data.astype(np.uint8)).rstrip(b"\0").decode(errors="replace")
    values = data.reshape(-1).tolist()
    return values[0] if len(values) == 1 else values


def _supports_format(trt: Any, pos: int, in_out: Any) -> bool:
    """ROIAlign_TRT's formats: linear; float32 or float16 features, ROIs and output of the features'
    type, int32 batch indices."""
    desc = in_out[pos].desc
    if desc.format != trt.TensorFormat.LINEAR:
        return False
    if pos == 0:  # features: float32, or float16
        return desc.type in (trt.DataType.FLOAT, trt.DataType.HALF)
    if pos == 2:  # batch indices: the importer casts them to int32
        return desc.type == trt.DataType.INT32
    return desc.type == in_out[0].desc.type  # ROIs and the output: the features' type


def _field_arrays(trt: Any, fields: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(name, one-element array, field type) of each ROIAlign_TRT field, in ROIALIGN_FIELDS order."""
    import numpy as np

    arrays = []
    for name, kind, _ in ROIALIGN_FIELDS:
        if kind == _INT32:
            arrays.append((name, np.array([fields[name]], dtype=np.int32), trt.PluginFieldType.INT32))
        else:
            arrays.append((name, np.array([fields[name]], dtype=np.float32), trt.PluginFieldType.FLOAT32))
    return arrays


def _plugin_class(trt: Any) -> Any:
    """The stand-in plugin class, made against the bindings' base classes (imported lazily)."""

    class RoiAlignStandIn(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        """Shape and type inference of ROIAlign_TRT v2; no kernel."""

        def __init__(self, creator, fields: Dict[str, Any], phase=None):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = 1
            self.plugin_name = ROIALIGN_NAME
            self.plugin_version = ROIALIGN_VERSION
            self.plugin_namespace = ROIALIGN_NAMESPACE
            self.timing_cache_id = ""
            self.creator = creator
            self.fields = {name: fields.get(name, default) for name, _, default in ROIALIGN_FIELDS}
            self.phase = phase
            self._serialized = None

        def get_capability_interface(self, type):
            return self

        def clone(self):
            twin = RoiAlignStandIn(self.creator, self.fields, self.phase)
            self.creator.keep(twin)
            return twin

        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            output = trt.DimsExprs(4)
            output[0] = inputs[1][0]  # number of ROIs
            output[1] = inputs[0][1]  # channels
            output[2] = expr_builder.constant(int(self.fields["output_height"]))
            output[3] = expr_builder.constant(int(self.fields["output_width"]))
            return [output]

        def supports_format_combination(self, pos, in_out, num_inputs):
            return _supports_format(trt, pos, in_out)

        def configure_plugin(self, inputs, outputs):
            pass

        def on_shape_change(self, inputs, outputs):
            pass

        def get_valid_tactics(self):
            return []

        def set_tactic(self, tactic):
            pass

        def get_workspace_size(self, inputs, outputs):
            return 0

        def get_fields_to_serialize(self):
            self._serialized = _field_arrays(trt, self.fields)  # the collection points into these arrays
            return trt.PluginFieldCollection([trt.PluginField(name, data, kind) for name, data, kind in self._serialized])

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            raise RuntimeError("the ROIAlign_TRT stand-in of edge_fpn.export.rtx_roialign has no kernel")

        def attach_to_context(self, context):
            return self.clone()

    return RoiAlignStandIn


def _creator_class(trt: Any, plugin_class: Any) -> Any:
    """The stand-in's creator class; its create_plugin makes `plugin_class` objects."""
    import numpy as np

    RoiAlignStandIn = plugin_class

    class RoiAlignStandInCreator(trt.IPluginCreatorV3One):
        """Creator of the stand-in under ROIAlign_TRT / "2" / ""; `received` records each create_plugin."""

        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = ROIALIGN_NAME
            self.plugin_version = ROIALIGN_VERSION
            self.plugin_namespace = ROIALIGN_NAMESPACE
            self._field_arrays = [np.zeros(0, dtype=np.float32 if kind == _FLOAT32 else np.int32)
                                  for _, kind, _ in ROIALIGN_FIELDS]
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField(name, array, trt.PluginFieldType.FLOAT32 if kind == _FLOAT32 else trt.PluginFieldType.INT32)
                for (name, kind, _), array in zip(ROIALIGN_FIELDS, self._field_arrays)])
            self.received: List[Dict[str, Any]] = []
            self._plugins: List[Any] = []

        def keep(self, plugin):
            self._plugins.append(plugin)

        def create_plugin(self, name, fc, phase):
            fields: Dict[str, Any] = {}
            types: Dict[str, str] = {}
            for i in range(len(fc)):
                field = fc[i]
                kind = str(field.type).rsplit(".", 1)[-1]
                types[field.name] = kind
                fields[field.name] = _field_value(field, kind)
            self.received.append({"name": name, "phase": str(phase).rsplit(".", 1)[-1], "fields": dict(fields),
                                  "types": types})
            plugin = RoiAlignStandIn(self, fields, phase)
            self.keep(plugin)
            return plugin

    return RoiAlignStandInCreator


def register_roialign_stand_in(trt: Any, logger: Any) -> Any:
    """Replace the built-in ROIAlign_TRT v2 creator by the Python stand-in; returns the stand-in creator.

    Idempotent (and puts the stand-in back if another creator took its name since). Runs init_libnvinfer_plugins(logger, ""), deregisters the built-in creator (its plugin
    cannot be created without a CUDA driver, which TensorRT-RTX 1.7.1's parser reports as "ROIAlign plugin
    was not found in the plugin registry!") and registers RoiAlignStandInCreator under the same name,
    version and namespace. Raises RuntimeError when the parser could not load plugin layers in this
    process (it would abort it; see ensure_plugin_loading).
    """
    with _lock:
        creator = _STATE["creator"]
        if creator is not None:
            registry = trt.get_plugin_registry()
            current = registry.get_creator(ROIALIGN_NAME, ROIALIGN_VERSION, ROIALIGN_NAMESPACE)
            if current is creator:
                return creator
            # something else (e.g. another stand-in) took the name since: put ours back
            if current is not None:
                _STATE["keep"].append(current)
                registry.deregister_creator(current)
            if not registry.register_creator(creator, ROIALIGN_NAMESPACE):
                raise RuntimeError(f"could not register the {ROIALIGN_NAME} v{ROIALIGN_VERSION} stand-in again")
            return creator
        how = ensure_plugin_loading()
        if how.startswith("unavailable"):
            raise RuntimeError(f"TensorRT-RTX's parser would abort on a plugin layer here: {how}")
        _STATE["keep"].append(logger)
        trt.init_libnvinfer_plugins(logger, "")
        registry = trt.get_plugin_registry()
        builtin = registry.get_creator(ROIALIGN_NAME, ROIALIGN_VERSION, ROIALIGN_NAMESPACE)
        if builtin is not None:
            _STATE["keep"].append(builtin)
            if not registry.deregister_creator(builtin):
                raise RuntimeError(f"could not deregister the built-in {ROIALIGN_NAME} v{ROIALIGN_VERSION} creator")
        creator_class = _creator_class(trt, _plugin_class(trt))
        creator = creator_class()
        if not registry.register_creator(creator, ROIALIGN_NAMESPACE):
            raise RuntimeError(f"could not register the {ROIALIGN_NAME} v{ROIALIGN_VERSION} stand-in")
        _STATE["creator"] = creator
        return creator


def import_tensorrt_rtx() -> Any:
    """``tensorrt_rtx_bindings``, imported after ``ensure_plugin_loading`` (which must come first)."""
    ensure_plugin_loading()
    import tensorrt_rtx_bindings  # noqa: F401  (lazy: an optional host tool)

    return tensorrt_rtx_bindings


def stand_in_creator() -> Optional[Any]:
    """The registered stand-in creator (its `received` lists what the importer passed), if any."""
    return _STATE["creator"]
