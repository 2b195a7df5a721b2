"""The TensorRT backend's pure logic, testable without a GPU: version and GPU compatibility,
execution-API dispatch, buffer planning from the manifest's TensorSpecs, dynamic shapes, the DLA
core an engine was built for, and whether an input array is the backend's own input buffer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...bundle import StageSpec, TensorSpec
from ...errors import BackendInputError, EdgeFpnError
from ...versions import format_version, parse_version

MIN_TENSORRT = (8, 5)  # name-based I/O (num_io_tensors, set_tensor_address, set_input_shape)


def execute_api(version: Sequence[int]) -> str:
    """'v3' (execute_async_v3 + set_tensor_address) on TensorRT 10+, 'v2' (bindings) on 8.5 / 8.6."""
    if tuple(version[:2]) < MIN_TENSORRT:
        raise EdgeFpnError(f"TensorRT {format_version(version)} is too old for edge-fpn (it needs 8.5 or newer: JetPack 5.1+); upgrade JetPack or use the onnxruntime backend")
    return "v3" if version[0] >= 10 else "v2"


def parse_compute_capability(value: Any) -> Optional[Tuple[int, int]]:
    """'8.7', [8, 7], (8, 7), 87 -> (8, 7); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).strip()
    match = re.match(r"^(?:sm_?)?(\d+)\.(\d+)$", text) or re.match(r"^(?:sm_?)?(\d)(\d)$", text)
    if not match:
        raise ValueError(f"not a compute capability: {value!r}")
    return int(match.group(1)), int(match.group(2))


def compatibility_problem(provenance: Mapping[str, Any], engine_file: str, tensorrt_version: str,
                          gpu_name: str, compute_capability: Tuple[int, int]) -> Optional[str]:
    """A sentence saying why this engine cannot run here, or None.

    Serialized TensorRT engines run only with the TensorRT version that built them and on the GPU
    they were built for (kernels are chosen for its SM architecture). The builder records both in
    the manifest's provenance (``tensorrt_version``, ``gpu_name``, ``compute_capability``), so the
    runtime can refuse with a sentence before TensorRT fails with a less helpful one.
    """
    built_version = provenance.get("tensorrt_version")
    built_gpu = provenance.get("gpu_name")
    try:
        built_cc = parse_compute_capability(provenance.get("compute_capability"))
    except ValueError:
        built_cc = None
    here_cc = f"{compute_capability[0]}.{compute_capability[1]}"
    fix = "rebuild the bundle on this device with `edge-fpn build`"
    if built_version:
        built = parse_version(built_version)
        here = parse_version(tensorrt_version)
        common = max(3, min(len(built), len(here)))
        if built[:common] != here[:common]:
            return (f"engine {engine_file} was built with TensorRT {built_version} but this machine has TensorRT "
                    f"{tensorrt_version}, and engines run only with the version that built them; {fix}")
    if built_cc is not None and built_cc != tuple(compute_capability):
        return (f"engine {engine_file} was built for {built_gpu or 'a GPU'} (compute capability "
                f"{built_cc[0]}.{built_cc[1]}) but this GPU is {gpu_name} ({here_cc}); {fix}")
    # the compute capability decides (kernels are compiled for an SM architecture); the name only
    # where no capability was recorded (names differ between pycuda and /proc/device-tree/model)
    if built_cc is None and built_gpu and _normalise_gpu(built_gpu) != _normalise_gpu(gpu_name):
        return (f"engine {engine_file} was built on {built_gpu} but this GPU is {gpu_name}, and an engine's kernels "
                f"are chosen for the GPU that built it; {fix}")
    return None


def _normalise_gpu(name: str) -> str:
    return re.sub(r"\s+", " ", str(name)).strip().lower()


def missing_provenance(provenance: Mapping[str, Any]) -> List[str]:
    return [key for key in ("tensorrt_version", "gpu_name", "compute_capability") if not provenance.get(key)]


# ---------------------------------------------------------------- shapes and buffers

def numpy_dtype(name: str) -> np.dtype:
    aliases = {"float": "float32", "half": "float16", "fp16": "float16", "fp32": "float32", "bool": "bool_"}
    return np.dtype(aliases.get(name, name))


# numpy's type of each TensorRT DataType an engine's I/O tensor may have, by the type's name. Not
# trt.nptype: TensorRT 8.5's (JetPack 5.1) uses np.bool, which NumPy 1.24 removed, so it raises
# AttributeError for every type there (NVIDIA/TensorRT #2557, #2701; fixed in 8.6).
TENSORRT_NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                        "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def tensorrt_type_name(dtype: Any) -> str:
    """A TensorRT DataType's name: "FLOAT" for trt.DataType.FLOAT (``dtype.name``, else the part
    of ``str(dtype)`` after the last dot: "DataType.FLOAT")."""
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype).rsplit(".", 1)[-1]
    return name.strip().upper()


def tensorrt_numpy_dtype(dtype: Any, tensor: str, engine_file: str = "") -> np.dtype:
    """numpy's dtype for TensorRT DataType `dtype` of I/O tensor `tensor` (in place of trt.nptype);
    a one-line EdgeFpnError for a type numpy has no equivalent of (FP8, BF16, INT4, FP4, ...)."""
    name = tensorrt_type_name(dtype)
    if name not in TENSORRT_NUMPY_TYPES:
        where = f"engine {engine_file}: " if engine_file else ""
        raise EdgeFpnError(f"{where}tensor {tensor} is of TensorRT type {name}, which edge-fpn cannot hold in a numpy "
                           f"buffer (it takes {', '.join(TENSORRT_NUMPY_TYPES)}); rebuild the bundle with `edge-fpn build`")
    return np.dtype(TENSORRT_NUMPY_TYPES[name])


def max_shape(spec: TensorSpec, dynamic_axes: Mapping[str, Sequence[int]]) -> Tuple[int, ...]:
    """The largest shape a tensor can take: symbolic dimensions at their declared maximum."""
    return tuple(_dim(d, dynamic_axes, spec.name, use="max") for d in spec.shape)


def resolve_shape(spec: TensorSpec, dynamic_axes: Mapping[str, Sequence[int]], values: Mapping[str, int]) -> Tuple[int, ...]:
    """A tensor's concrete shape once its symbolic dimensions are known."""
    shape = []
    for d in spec.shape:
        if isinstance(d, str):
            if d not in values:
                raise BackendInputError(f"dimension {d!r} of {spec.name} is not known yet")
            shape.append(int(values[d]))
        else:
            shape.append(int(d))
    return tuple(shape)


def _dim(d: Any, dynamic_axes: Mapping[str, Sequence[int]], name: str, use: str) -> int:
    if isinstance(d, str):
        if d not in dynamic_axes:
            raise EdgeFpnError(f"tensor {name} has a dynamic dimension {d!r} that the manifest does not declare; re-run `edge-fpn export`")
        low, high = dynamic_axes[d]
        return int(high if use == "max" else low)
    return int(d)


def bind_axes(stage: StageSpec, shapes: Mapping[str, Sequence[int]]) -> Dict[str, int]:
    """Values of the symbolic dimensions from the input shapes; checks static dims and ranges."""
    values: Dict[str, int] = {}
    for spec in stage.inputs:
        if spec.name not in shapes:
            raise BackendInputError(f"input {spec.name} is missing")
        shape = tuple(int(v) for v in shapes[spec.name])
        if len(shape) != len(spec.shape):
            raise BackendInputError(f"input {spec.name} has shape {shape}, expected rank {len(spec.shape)} ({spec.shape})")
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, str):
                low, high = stage.dynamic_axes.get(want, (1, got))
                if not low <= got <= high:
                    raise BackendInputError(f"input {spec.name} dimension {axis} ({want}) is {got}, outside the engine's range {low}..{high}")
                if values.setdefault(want, got) != got:
                    raise BackendInputError(f"dimension {want} is {values[want]} in one input and {got} in {spec.name}")
            elif int(want) != got:
                raise BackendInputError(f"input {spec.name} has shape {shape}, the engine takes {tuple(spec.shape)}")
    return values


@dataclass(frozen=True)
class BufferPlan:
    """One I/O tensor's buffers, sized for its largest shape."""
    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: Tuple[int, ...]
    device_resident: bool  # an output that stays on the device (the next stage's input)

    @property
    def max_elements(self) -> int:
        return int(np.prod(self.max_shape, dtype=np.int64)) if self.max_shape else 1

    @property
    def nbytes(self) -> int:
        return self.max_elements * self.dtype.itemsize

    @property
    def needs_host(self) -> bool:
        """Inputs are written from the host; outputs are read on the host unless they stay on the device."""
        return self.is_input or not self.device_resident


def plan_buffers(stage: StageSpec, device_outputs: Iterable[str] = (),
                 dtypes: Optional[Mapping[str, Any]] = None) -> List[BufferPlan]:
    """Buffers for every input and output of a stage, from its TensorSpecs (inputs first). dtypes:
    the engine's own type of each tensor (``tensorrt_numpy_dtype(engine.get_tensor_dtype(name))``: uint8
    image, int32 labels), which win over the manifest's (``check_engine_io`` makes them agree)."""
    keep = set(device_outputs)
    dtypes = dtypes or {}

    def dtype(t: TensorSpec) -> np.dtype:
        return np.dtype(dtypes[t.name]) if t.name in dtypes else numpy_dtype(t.dtype)

    plans = [BufferPlan(t.name, True, dtype(t), max_shape(t, stage.dynamic_axes), False) for t in stage.inputs]
    plans += [BufferPlan(t.name, False, dtype(t), max_shape(t, stage.dynamic_axes), t.name in keep)
              for t in stage.outputs]
    return plans


def is_buffer(array: Any, buffer: Optional[np.ndarray], dtype: np.dtype) -> bool:
    """Whether `array` is (a leading view of) the page-locked host buffer `buffer`, as
    ``input_array`` hands it out: then the input is already in place and is not copied again."""
    if buffer is None or not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype):
        return False
    if not array.flags.c_contiguous or array.size > buffer.size:
        return False
    return array.__array_interface__["data"][0] == buffer.__array_interface__["data"][0]


def dla_core_of(provenance: Mapping[str, Any]) -> Optional[int]:
    """The DLA core an engine was built for (the builder records it at the top of the provenance,
    and under "build"), or None for a GPU engine."""
    value = provenance.get("dla_core")
    if value is None:
        value = (provenance.get("build") or {}).get("dla_core")
    return None if value is None else int(value)


def dla_problem(dla_core: int, available: int, engine_file: str) -> Optional[str]:
    """Why a DLA engine cannot be loaded here (IRuntime.DLA_core must name an existing core), or None."""
    if available <= 0:
        return (f"engine {engine_file} was built for DLA core {dla_core}, but TensorRT sees no DLA on this device; "
                "rebuild the bundle without --dla-core (or on this device)")
    if not 0 <= dla_core < available:
        return (f"engine {engine_file} was built for DLA core {dla_core}, but this device has {available} DLA core(s) "
                f"(0..{available - 1}); rebuild it with --dla-core 0..{available - 1}")
    return None


def device_resident_outputs(stage_key: str, stages: Mapping[str, StageSpec]) -> List[str]:
    """Outputs of a stage that another stage takes as inputs (stage 1's feature maps): they stay on the device."""
    consumed = {t.name for key, spec in stages.items() if key != stage_key for t in spec.inputs}
    return [t.name for t in stages[stage_key].outputs if t.name in consumed]


def host_memory_mode(integrated: bool, can_map_host_memory: bool) -> str:
    """'mapped' (zero-copy: the GPU reads and writes page-locked host memory) on an integrated GPU
    such as Jetson's, where host and device share DRAM; 'pinned' (page-locked staging buffers and
    async copies) on a discrete GPU, where mapped memory would cross PCIe at every access."""
    return "mapped" if integrated and can_map_host_memory else "pinned"


def check_engine_io(stage: StageSpec, engine_io: Mapping[str, Tuple[bool, np.dtype]], engine_file: str) -> None:
    """The engine's I/O tensors (name -> (is_input, dtype)) must be the manifest's."""
    want = {t.name: (True, numpy_dtype(t.dtype)) for t in stage.inputs}
    want.update({t.name: (False, numpy_dtype(t.dtype)) for t in stage.outputs})
    missing = sorted(set(want) - set(engine_io))
    extra = sorted(set(engine_io) - set(want))
    if missing or extra:
        raise EdgeFpnError(f"engine {engine_file} does not match its manifest (missing {missing or 'none'}, unexpected "
                           f"{extra or 'none'}); rebuild the bundle with `edge-fpn build`")
    for name, (is_input, dtype) in want.items():
        got_input, got_dtype = engine_io[name]
        if got_input != is_input or np.dtype(got_dtype) != dtype:
            raise EdgeFpnError(f"engine {engine_file}: tensor {name} is {'an input' if got_input else 'an output'} of "
                               f"{np.dtype(got_dtype)}, the manifest says {'input' if is_input else 'output'} of {dtype}; "
                               f"rebuild the bundle with `edge-fpn build`")
