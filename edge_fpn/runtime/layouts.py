"""The two bundle layouts as runtime steps: preprocess -> infer (the engine calls) -> finish.

Both give ``RawDetections`` in engine-input pixels; ``Detector`` maps them to the frame. The
steps are separate so that the pipeline can run them on different threads.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import graph_names as names
from ..bundle import Manifest
from ..errors import EdgeFpnError
from .backends import open_stage
from .postprocess import DetectionPostprocessor, ProposalPostprocessor, RawDetections
from .preprocess import Letterbox, Preprocessor, UInt8Letterbox

Timings = Dict[str, float]


try:  # Python 3.8 has Protocol in typing
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore


class Layout(Protocol):
    """What open_layout returns, whatever the bundle's layout (as Polygraphy's BaseRunner types its
    runners): the Detector's steps, separately callable so that the pipeline can run them on
    different threads. `engine_steps` names the timed steps that are engine calls."""

    engine_steps: Tuple[str, ...]

    def preprocess(self, frame: np.ndarray, reuse_buffer: bool = False) -> Tuple[Any, Letterbox]: ...

    def infer(self, inputs: Any, letterbox: Letterbox) -> Tuple[Any, Timings]: ...

    def engine_runner(self, inputs: Any, letterbox: Letterbox) -> Callable[[], Timings]: ...

    def finish(self, outputs: Any, letterbox: Letterbox) -> RawDetections: ...

    def backends(self) -> List[Any]: ...

    def close(self) -> None: ...


class EngineLayout:
    """One graph from pixels to detections: the host only letterboxes, and slices the padded outputs.

    A batch-N bundle (``manifest.batch``) takes N frames a call: ``infer_batch`` runs up to N
    prepared frames in one call (empty slots padded with a blank image whose image_size (0, 0)
    gives no detections) and splits the outputs per frame; ``infer`` on one frame pads likewise."""

    engine_steps = ("engine",)

    def __init__(self, bundle_dir: str, manifest: Manifest, threads: int = 0, device: str = "auto", cuda: str = "auto"):
        self.engine = open_stage(bundle_dir, manifest, names.DETECTOR_STAGE, threads, device=device, cuda=cuda)
        self.letterbox = UInt8Letterbox(manifest.preprocess)
        self.batch = int(manifest.batch)
        # Detector.__call__ resizes straight into the engine's own (page-locked) input buffer
        # where the backend offers one (batch 1), else into this reused array
        input_array = getattr(self.engine, "input_array", None)
        self.own_buffer: np.ndarray = input_array(names.IMAGE) if callable(input_array) and self.batch == 1 \
            else self.letterbox.new_buffer()

    def preprocess(self, frame: np.ndarray, reuse_buffer: bool = False) -> Tuple[Dict[str, np.ndarray], Letterbox]:
        # the pipeline preprocesses the next frame while the engine runs this one: a fresh buffer
        image, image_size, letterbox = self.letterbox(frame, self.own_buffer if reuse_buffer else None)
        return {names.IMAGE: image, names.IMAGE_SIZE: image_size}, letterbox

    def infer(self, inputs: Dict[str, np.ndarray], letterbox: Letterbox) -> Tuple[Dict[str, np.ndarray], Timings]:
        if self.batch > 1:
            outputs, timings = self.infer_batch([(inputs, letterbox)])
            return outputs[0], timings
        t0 = time.perf_counter()
        outputs = self.engine(inputs)
        return outputs, {"engine": time.perf_counter() - t0}

    def infer_batch(self, items: Sequence[Tuple[Dict[str, np.ndarray], Letterbox]]
                    ) -> Tuple[List[Dict[str, np.ndarray]], Timings]:
        """Up to ``batch`` prepared frames in one engine call -> (per-frame outputs, for ``finish``;
        seconds). Slots past the frames are blank images of image_size (0, 0): no detections."""
        if not 1 <= len(items) <= self.batch:
            raise EdgeFpnError(f"this bundle runs 1 to {self.batch} frames a call, not {len(items)}")
        if self.batch == 1:
            outputs, timings = self.infer(*items[0])
            return [outputs], timings
        image = np.zeros((self.batch,) + self.letterbox.input_size + (3,), dtype=np.uint8)
        sizes = np.zeros((self.batch, 2), dtype=np.float32)
        for slot, (inputs, _) in enumerate(items):
            image[slot] = inputs[names.IMAGE][0]
            sizes[slot] = inputs[names.IMAGE_SIZE].reshape(2)
        t0 = time.perf_counter()
        outputs = self.engine({names.IMAGE: image, names.IMAGE_SIZE: sizes})
        seconds = time.perf_counter() - t0
        split = [{names.BOXES: outputs[names.BOXES][slot], names.SCORES: outputs[names.SCORES][slot],
                  names.LABELS: outputs[names.LABELS][slot],
                  names.NUM_DETECTIONS: outputs[names.NUM_DETECTIONS].reshape(-1)[slot: slot + 1]}
                 for slot in range(len(items))]
        return split, {"engine": seconds}

    def engine_runner(self, inputs: Dict[str, np.ndarray], letterbox: Letterbox) -> Callable[[], Timings]:
        """A call of the engine alone on prepared inputs (what `bench` compares the pipeline with)."""
        return lambda: self.infer(inputs, letterbox)[1]

    def finish(self, outputs: Dict[str, np.ndarray], letterbox: Letterbox) -> RawDetections:
        count = int(outputs[names.NUM_DETECTIONS].reshape(-1)[0])
        return RawDetections(boxes=outputs[names.BOXES][:count], scores=outputs[names.SCORES][:count],
                             labels=outputs[names.LABELS][:count].astype(np.int64))

    def backends(self) -> List[Any]:
        return [self.engine]

    def close(self) -> None:
        self.engine.close()


class HostLayout:
    """Stage 1 -> per-level proposals in numpy -> stage 2 -> final postprocessing in numpy."""

    engine_steps = ("stage1", "stage2")

    def __init__(self, bundle_dir: str, manifest: Manifest, threads: int = 0, device: str = "auto", cuda: str = "auto"):
        self.preprocessor = Preprocessor(manifest.preprocess)
        self.proposal_postprocessor = ProposalPostprocessor(manifest.levels, manifest.rpn)
        self.detection_postprocessor = DetectionPostprocessor(manifest.roi)
        self.stage1 = open_stage(bundle_dir, manifest, "stage1", threads, device=device, cuda=cuda)
        try:
            self.stage2 = open_stage(bundle_dir, manifest, "stage2", threads, device=device, cuda=cuda)
        except BaseException:
            self.stage1.close()  # its buffers and its share of the CUDA session
            raise
        spec1 = manifest.stages["stage1"]
        self.stage1_input = spec1.inputs[0].name
        outputs = [t.name for t in spec1.outputs]
        self.objectness_names = [n for n in outputs if n.startswith("objectness_")]
        self.deltas_names = [n for n in outputs if n.startswith("deltas_")]
        self.stage2_inputs = [t.name for t in manifest.stages["stage2"].inputs]

    def preprocess(self, frame: np.ndarray, reuse_buffer: bool = False) -> Tuple[np.ndarray, Letterbox]:
        return self.preprocessor(frame)

    def run_stage1(self, tensor: np.ndarray) -> Dict[str, np.ndarray]:
        return self.stage1({self.stage1_input: tensor})

    def propose(self, stage1_outputs: Dict[str, np.ndarray], letterbox: Letterbox) -> np.ndarray:
        proposals, _ = self.proposal_postprocessor(
            [stage1_outputs[n] for n in self.objectness_names],
            [stage1_outputs[n] for n in self.deltas_names], letterbox.resized_size)
        return proposals

    def run_stage2(self, stage1_outputs: Dict[str, np.ndarray], proposals: np.ndarray) -> Dict[str, np.ndarray]:
        inputs = {name: stage1_outputs[name] for name in self.stage2_inputs if name != "proposals"}
        inputs["proposals"] = np.ascontiguousarray(proposals, dtype=np.float32)
        return self.stage2(inputs)

    def infer(self, tensor: np.ndarray, letterbox: Letterbox
              ) -> Tuple[Tuple[np.ndarray, Optional[Dict[str, np.ndarray]]], Timings]:
        """Stage 1 -> proposals -> stage 2: ((proposals, stage 2 outputs or None), seconds per step)."""
        t0 = time.perf_counter()
        outputs1 = self.run_stage1(tensor)
        t1 = time.perf_counter()
        proposals = self.propose(outputs1, letterbox)
        t2 = time.perf_counter()
        # an engine cannot run on zero proposals; there is then nothing to detect
        outputs2 = self.run_stage2(outputs1, proposals) if len(proposals) else None
        t3 = time.perf_counter()
        return (proposals, outputs2), {"stage1": t1 - t0, "proposals": t2 - t1, "stage2": t3 - t2}

    def engine_runner(self, tensor: np.ndarray, letterbox: Letterbox) -> Callable[[], Timings]:
        """Stage 1 then stage 2 on this frame's own proposals, without the numpy between them."""
        proposals = self.propose(self.run_stage1(tensor), letterbox)
        if not len(proposals):
            raise EdgeFpnError("the first frame gives no proposals, so stage 2 cannot be timed; use another --source")

        def run() -> Timings:
            t0 = time.perf_counter()
            outputs1 = self.run_stage1(tensor)
            t1 = time.perf_counter()
            self.run_stage2(outputs1, proposals)
            return {"stage1": t1 - t0, "stage2": time.perf_counter() - t1}
        return run

    def finish(self, outputs: Tuple[np.ndarray, Optional[Dict[str, np.ndarray]]], letterbox: Letterbox) -> RawDetections:
        proposals, outputs2 = outputs
        if outputs2 is None:
            return RawDetections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))
        return self.detection_postprocessor(outputs2["class_logits"], outputs2["box_regression"],
                                            proposals, letterbox.resized_size)

    def backends(self) -> List[Any]:
        return [self.stage1, self.stage2]

    def close(self) -> None:
        self.stage1.close()
        self.stage2.close()


def open_layout(bundle_dir: str, manifest: Manifest, threads: int = 0, device: str = "auto", cuda: str = "auto") -> Layout:
    layout = EngineLayout if manifest.layout == "engine" else HostLayout
    return layout(bundle_dir, manifest, threads, device, cuda)
