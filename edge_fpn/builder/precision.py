"""INT8 Q/DQ bundles from calibration ranges, and accuracy-aware precision.

``QuantizedStages`` holds the FP32 stages of the bundle's layout (the one "detector" graph, or
stage 1 and stage 2), their Q/DQ plans and the calibrated ranges, and writes Q/DQ stages with any
set of layers left in higher precision. On top of it:

- ``sensitivity``: each layer's AP cost, measured with only that layer quantized;
- ``choose_fallback``: the fewest worst layers to keep unquantized so that the INT8 bundle's AP is
  within ``max_ap_drop`` of FP32 (on TensorRT they run in FP16, on ONNX Runtime in FP32).

Accuracy is always measured the same way: the bundle runs through the runtime (``Detector``, ONNX
Runtime on the CPU) on held-out images, scored by pycocotools.

Python 3.8: this module runs on the device.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..bundle import Manifest, StageSpec, write_manifest
from ..errors import EdgeFpnError
from .calibrate import CalibrationRanges, stage_keys

logger = logging.getLogger(__name__)


@dataclass
class SensitivityEntry:
    layer: str  # "detector:/backbone/..." or "stage1:/backbone/..." (qualified)
    ap: float  # AP with only this layer quantized
    drop: float  # FP32 AP - ap

    def to_dict(self) -> Dict[str, Any]:
        return {"layer": self.layer, "ap": round(self.ap, 5), "drop": round(self.drop, 5)}


@dataclass
class FallbackResult:
    kept: List[str]  # layers left unquantized, worst first
    ap: float
    evaluations: List[Tuple[int, float]] = field(default_factory=list)  # (number kept, AP)


class QuantizedStages:
    """The FP32 stages of a bundle with their Q/DQ plans; writes Q/DQ bundles on demand."""

    def __init__(self, bundle_dir: str, manifest: Manifest, ranges: CalibrationRanges):
        import onnx

        from .qdq import ensure_node_names, missing_ranges, plan_quantization

        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.ranges = ranges
        self.models: Dict[str, Any] = {}
        self.plans: Dict[str, Any] = {}
        self.keys = stage_keys(manifest)
        for key in self.keys:
            model = onnx.load(os.path.join(bundle_dir, manifest.stages[key].file))
            ensure_node_names(model)
            plan = plan_quantization(model, key)
            missing = missing_ranges(plan, ranges.amax(key))
            if missing:
                raise EdgeFpnError(f"the calibration has no range for {len(missing)} tensor(s) of {key} (e.g. {missing[0]!r}); "
                                   "it was made by another edge-fpn version or for another graph: re-run `edge-fpn calibrate`")
            self.models[key] = model
            self.plans[key] = plan

    @property
    def layers(self) -> List[str]:
        return [layer.qualified_name for key in self.keys for layer in self.plans[key].layers]

    def resolve(self, names: Sequence[str]) -> List[str]:
        """Qualified layer names for user-given names (qualified, or a node name unique in the bundle)."""
        known = self.layers
        resolved = []
        for name in names:
            if name in known:
                resolved.append(name)
                continue
            matches = [q for q in known if q.split(":", 1)[1] == name]
            if len(matches) != 1:
                raise EdgeFpnError(f"no quantizable layer is called {name!r}; run `edge-fpn build ... --sensitivity` to list "
                                   f"them (e.g. {known[0]!r})")
            resolved.append(matches[0])
        return resolved

    def write(self, directory: str, exclude: Sequence[str] = (), only: Optional[Sequence[str]] = None,
              provenance: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
        """Write a complete ONNX Runtime bundle of Q/DQ stages into `directory`; returns stage precisions.

        `exclude`: layers left unquantized; `only`: quantize just these (sensitivity runs). A stage
        with nothing quantized is the FP32 file itself.
        """
        import onnx

        from .qdq import quantize_model

        keep_out = set(exclude)
        if only is not None:
            keep_out |= set(self.layers) - set(only)
        precisions: Dict[str, str] = {}
        stages: Dict[str, StageSpec] = {}
        for key in self.keys:
            spec = self.manifest.stages[key]
            plan = self.plans[key]
            quantized_model, quantized = quantize_model(self.models[key], plan, self.ranges.amax(key), exclude=keep_out)
            path = os.path.join(directory, spec.file)
            if quantized:
                onnx.save(quantized_model, path)
            else:
                shutil.copyfile(os.path.join(self.bundle_dir, spec.file), path)
            total = len(plan.layers)
            precisions[key] = "int8" if quantized and len(quantized) == total else ("mixed" if quantized else "fp32")
            stages[key] = StageSpec(spec.file, "onnxruntime", precisions[key], spec.inputs, spec.outputs, spec.dynamic_axes)
        manifest = self.manifest.replace(stages=stages, provenance=dict(self.manifest.provenance, **(provenance or {})))
        write_manifest(directory, manifest)
        return precisions

    def evaluate(self, evaluate: Callable[[str], Dict[str, float]], exclude: Sequence[str] = (),
                 only: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """AP metrics of a temporary Q/DQ bundle (evaluate: bundle_dir -> metrics)."""
        work = tempfile.mkdtemp(prefix="edge-fpn-qdq-")
        try:
            self.write(work, exclude=exclude, only=only)
            return evaluate(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def sensitivity(stages: QuantizedStages, evaluate: Callable[[str], Dict[str, float]], fp32_ap: float,
                progress: Optional[Callable[[int, int, str], None]] = None,
                layers: Optional[Sequence[str]] = None) -> List[SensitivityEntry]:
    """Every layer's AP drop with only that layer quantized, worst first (ties keep graph order)."""
    entries = []
    layers = list(layers) if layers is not None else stages.layers
    for index, layer in enumerate(layers):
        if progress is not None:
            progress(index, len(layers), layer)
        ap = stages.evaluate(evaluate, only=[layer])["AP"]
        entries.append(SensitivityEntry(layer, ap, fp32_ap - ap))
    order = sorted(range(len(entries)), key=lambda i: (-entries[i].drop, i))
    return [entries[i] for i in order]


def choose_fallback(stages: QuantizedStages, evaluate: Callable[[str], Dict[str, float]], fp32_ap: float,
                    int8_ap: float, ranking: Sequence[SensitivityEntry], max_ap_drop: float) -> FallbackResult:
    """The fewest of the worst-ranked layers to keep unquantized for AP >= FP32 AP - max_ap_drop.

    Tries 1, 2, 4, ... layers until the bound holds, then bisects between the last two counts
    (the AP is treated as monotone in the number kept; each try is one evaluation).
    """
    if fp32_ap - int8_ap <= max_ap_drop:
        return FallbackResult(kept=[], ap=int8_ap, evaluations=[(0, int8_ap)])
    order = [entry.layer for entry in ranking if entry.drop > 0] or [entry.layer for entry in ranking]
    tried: Dict[int, float] = {0: int8_ap}

    def ap_with(count: int) -> float:
        if count not in tried:
            tried[count] = stages.evaluate(evaluate, exclude=order[:count])["AP"]
            logger.info(f"  {count} layer(s) kept in higher precision: AP {tried[count]:.4f}")
        return tried[count]

    low, high = 0, None
    count = 1
    while count <= len(order):
        if fp32_ap - ap_with(count) <= max_ap_drop:
            high = count
            break
        low = count
        if count == len(order):
            break
        count = min(count * 2, len(order))
    if high is None:
        # even every harmful layer in higher precision does not reach the bound: keep the best seen
        best = max(tried, key=lambda k: (tried[k], -k))
        return FallbackResult(kept=order[:best], ap=tried[best], evaluations=sorted(tried.items()))
    while high - low > 1:
        middle = (low + high) // 2
        if fp32_ap - ap_with(middle) <= max_ap_drop:
            high = middle
        else:
            low = middle
    return FallbackResult(kept=order[:high], ap=tried[high], evaluations=sorted(tried.items()))
