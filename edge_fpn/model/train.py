"""Train the shapes detector on synthetic scenes generated on the fly (CPU, 2 threads).

Scenes come from ``edge_fpn.runtime.synthetic.make_scene(seed, index)``: iteration ``i`` of a
batch of ``b`` uses scenes ``i*b .. i*b+b-1`` of the training seed, so a run is reproducible and
evaluation seeds simply must differ from the training seed.
"""
from __future__ import annotations

import os

# OpenMP threads that spin while waiting slow training down >10x when another process shares the
# two cores; libgomp reads this when torch loads, so it only helps if nothing imported torch yet
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..bundle import check_output_dir, file_sha256
from ..errors import EdgeFpnError, OptionError
from ..progress import log_above_bars, progress_bar
from ..runtime.synthetic import CLASS_NAMES, MOTIONS, SyntheticCamera, make_scene
from .shapes import SHAPES_INPUT_SIZE, build_shapes_model, load_shapes_model  # noqa: F401 (re-export)

DEFAULT_BATCH_SIZE = 4
MAX_BATCH_SIZE = 64
DEFAULT_LR = 2e-3
MAX_LR = 1.0  # (SGD with momentum diverges far below it; a larger one is a typo)
WARMUP_ITERATIONS = 300
DEFAULT_CAMERA_SHARE = 0.0  # the shipped model's recipe: 320x320 scenes only (docs/tracking.md: camera frames)
# RoIs the box head learns from per image, and the most of them that may be objects: few RoIs with
# many positives train the box regression fast from scratch (build_shapes_model's 128 / 0.5); many
# with few positives show the classifier the background's hard places (torchvision's 512 / 0.25),
# which took a fine-tuned model's boxes on camera backgrounds to a sixth (docs/tracking.md)
DEFAULT_ROIS_PER_IMAGE = 128
DEFAULT_POSITIVE_FRACTION = 0.5

logger = logging.getLogger(__name__)


def learning_rate(iteration: int, iterations: int, base_lr: float = DEFAULT_LR) -> float:
    """Linear warmup, then cosine decay to 2% of the base rate."""
    warmup = min(WARMUP_ITERATIONS, max(1, iterations // 10))
    if iteration < warmup:
        return base_lr * (0.01 + 0.99 * iteration / warmup)
    progress = (iteration - warmup) / max(1, iterations - warmup)
    return base_lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


# camera frames come from seeds far above any evaluation's (tracking sequences, AP scenes), so a
# model is never trained on a background it is measured on
CAMERA_SEED_OFFSET = 1 << 30
CAMERA_FRAMES = 900  # frames a training camera is sampled from (30 s at 30 FPS)


def is_camera_scene(index: int, camera_share: float) -> bool:
    """Whether training scene `index` is a live camera frame: a `camera_share` of them, spread evenly."""
    return camera_share > 0 and math.floor((index + 1) * camera_share) > math.floor(index * camera_share)


def camera_scene(seed: int, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame of the synthetic camera (``test://``), 640x480, any of its motions: what the demo and
    the tracking sequences show the model. Its background keeps one static noise and its shapes are
    flat colour, where a ``make_scene`` image is blurred and noised as a whole, and its motions
    bring occluders, crossings and shapes cut by the border; the model's transform scales it to the
    input as the runtime does. (Half of them took the objects found in camera frames from 0.856 to
    0.889, not the boxes on no object: docs/tracking.md, "What is left".)"""
    pick = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF, 0xCA3])
    # in [2**30, 2**31) whatever the training seed (a mask alone would wrap large seeds down to small ones)
    camera_seed = CAMERA_SEED_OFFSET + (int(seed) * 10_000_019 + int(index)) % CAMERA_SEED_OFFSET
    camera = SyntheticCamera(640, 480, 30.0, camera_seed,
                             MOTIONS[int(pick.integers(0, len(MOTIONS)))])
    frame = int(pick.integers(0, CAMERA_FRAMES))
    boxes, labels = camera.ground_truth(frame)
    return camera.frame(frame), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def scene_batch(seed: int, iteration: int, batch_size: int, size: int,
                camera_share: float = 0.0) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
    """Batch `iteration` of the training stream: RGB float images in [0, 1] and their targets."""
    images, targets = [], []
    for k in range(batch_size):
        index = iteration * batch_size + k
        if is_camera_scene(index, camera_share):
            image, boxes, labels = camera_scene(seed, index)
        else:
            image, boxes, labels = make_scene(seed, index, size, size)
        images.append(torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float() / 255.0)
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
    return images, targets


def half_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Float tensors as float16: the shipped file stays small, and loading converts back."""
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).clone() for k, v in model.state_dict().items()}


def save_checkpoint(model: torch.nn.Module, output: str, metadata: Dict[str, Any]) -> None:
    """Write the float16 state dict and its metadata next to it, each atomically (tmp + rename)."""
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    tmp = output + ".tmp"
    torch.save(half_state_dict(model), tmp)
    os.replace(tmp, output)
    meta_path = metadata_path(output)
    with open(meta_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
        f.write("\n")
    os.replace(meta_path + ".tmp", meta_path)


def metadata_path(checkpoint: str) -> str:
    return os.path.splitext(checkpoint)[0] + ".json"


def check_checkpoint_output(output: str, force: bool, init: Optional[str] = None) -> None:
    """Refuse, before any training, a checkpoint path that training would fail to write or would
    write wrongly: a directory, a .json name (its metadata would overwrite it), a missing parent
    folder, the --init checkpoint it starts from, or an existing checkpoint or metadata file
    without --force."""
    if os.path.isdir(output):
        raise EdgeFpnError(f"--output {output!r} is a directory; give a checkpoint file path (e.g. {output}/shapes.pt)")
    if metadata_path(output) == output:
        raise EdgeFpnError(f"--output {output!r} ends in .json, the name of the checkpoint's metadata file; give a "
                           ".pt path")
    if init and os.path.realpath(init) in (os.path.realpath(output), os.path.realpath(metadata_path(output))):
        raise EdgeFpnError(f"--output {output!r} would replace the --init checkpoint {init!r}; edge-fpn never writes "
                           "over its input: choose another output path")
    check_output_dir(output, force)  # a missing parent folder; an existing checkpoint without --force
    if os.path.exists(metadata_path(output)) and not force:
        raise EdgeFpnError(f"{metadata_path(output)!r} already exists; choose another --output or pass --force to "
                           "replace it")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: `iterations` batches of `batch_size` fresh scenes of `seed`, AdamW at base
    rate `lr` on `threads` CPU threads; a loss line every `log_every` iterations, a checkpoint every
    `save_every`."""
    iterations: int
    seed: int
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    threads: int = 2
    log_every: int = 50
    save_every: int = 250
    camera_share: float = DEFAULT_CAMERA_SHARE  # training scenes that are synthetic camera frames (camera_scene)
    rois_per_image: int = DEFAULT_ROIS_PER_IMAGE
    positive_fraction: float = DEFAULT_POSITIVE_FRACTION
    init: Optional[str] = None  # a shapes checkpoint to start from (fine-tuning), else random weights

    def __post_init__(self) -> None:
        # the CLI's options are these fields: its one-line errors are these (OptionError is a ValueError)
        if self.iterations < 1 or self.batch_size < 1:
            raise OptionError(f"--iterations and --batch-size must be at least 1, not {self.iterations} and "
                              f"{self.batch_size}")
        if self.batch_size > MAX_BATCH_SIZE:  # (100000 drew scenes for minutes, then ran out of memory)
            raise OptionError(f"--batch-size must be at most {MAX_BATCH_SIZE} on this CPU trainer, not {self.batch_size} "
                              f"(the default is {DEFAULT_BATCH_SIZE})")
        if not 0.0 <= self.camera_share <= 1.0:
            raise OptionError(f"--camera-share is a share of the training images, between 0 and 1, not "
                              f"{self.camera_share:g}")
        if self.rois_per_image < 1:
            raise OptionError(f"--rois-per-image must be at least 1, not {self.rois_per_image}")
        if not 0.0 < self.positive_fraction <= 1.0:
            raise OptionError(f"--positive-fraction is a share of the RoIs, above 0 and at most 1, not "
                              f"{self.positive_fraction:g}")
        if not (0 < self.lr <= MAX_LR):
            # (1e300 overflowed torch's float32 schedule: a traceback)
            raise OptionError(f"--lr must be a positive number, at most {MAX_LR:g}, not {self.lr:g} (the default is "
                              f"{DEFAULT_LR:g})")


def train(output: str, config: TrainConfig, progress: bool = True) -> str:
    """Train the shapes model as `config` says; returns `output`.

    Saves `output` (float16 state dict) and its metadata json every `config.save_every` iterations
    and at the end. On Ctrl-C it saves the last completed iteration, says where, and re-raises.
    Loss lines and the interruption notice go to this module's logger.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run = _Run(output, config, progress)
    try:
        for iteration in range(config.iterations):
            run.step(iteration)
    except KeyboardInterrupt:
        run.interrupted()
        raise
    run.finish()
    return output


def _initial_model(config: TrainConfig) -> torch.nn.Module:
    """Random weights, or `config.init`'s; with the RoI sampler `config` asks for (training only:
    the exported graphs never sample)."""
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

    from .loading import load_shipped_model

    # load_shipped_model turns a missing or foreign checkpoint into one line
    model = load_shipped_model("shapes", config.init)[0] if config.init else build_shapes_model(len(CLASS_NAMES))
    model.roi_heads.fg_bg_sampler = BalancedPositiveNegativeSampler(config.rois_per_image, config.positive_fraction)
    return model


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    # no weight decay on norms and biases: it only fights BatchNorm's scale
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


class _Run:
    """One training run's state: the model, its optimizer, the progress bar, the running losses,
    and what has been completed and saved."""

    def __init__(self, output: str, config: TrainConfig, progress: bool) -> None:
        self.output, self.config = output, config
        self.size = SHAPES_INPUT_SIZE
        self.model = _initial_model(config).train()
        self.optimizer = _optimizer(self.model, config.lr)
        self.metadata: Dict[str, Any] = {
            "architecture": "shapes", "class_names": list(CLASS_NAMES), "input_size": [self.size, self.size],
            "seed": int(config.seed), "iterations": int(config.iterations), "completed_iterations": 0,
            "batch_size": int(config.batch_size), "learning_rate": config.lr, "threads": int(config.threads),
            "camera_share": config.camera_share, "rois_per_image": int(config.rois_per_image),
            "positive_fraction": config.positive_fraction,
        }
        if config.init:
            self.metadata["init"] = os.path.basename(config.init)
            self.metadata["init_sha256"] = file_sha256(config.init)
        self.bar = progress_bar(config.iterations, "train", "it", enabled=progress, leave=True)
        self.completed = 0
        self.in_step = False
        self.saved = 0
        self.running: Dict[str, float] = {}
        self.counted = 0
        self.start, self.cpu_start = time.time(), time.process_time()

    def step(self, iteration: int) -> None:
        config, model, optimizer = self.config, self.model, self.optimizer
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(iteration, config.iterations, config.lr)
        images, targets = scene_batch(config.seed, iteration, config.batch_size, self.size, config.camera_share)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise RuntimeError(f"the loss became {float(loss)} at iteration {iteration}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        self.in_step = True  # an interrupted step leaves half-updated weights: keep the last save then
        optimizer.step()
        self.in_step = False
        self.completed = iteration + 1
        for name, value in losses.items():
            self.running[name] = self.running.get(name, 0.0) + float(value.detach())
        self.counted += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if self.completed % config.log_every == 0 or self.completed == config.iterations:
            self._log_losses()
        if self.completed % config.save_every == 0 and self.completed < config.iterations:
            self._save()
            self.model.train()
            self.saved = self.completed

    def _log_losses(self) -> None:
        completed, counted = self.completed, self.counted
        parts = " ".join(f"{k.replace('loss_', '')}={v / counted:.4f}" for k, v in self.running.items())
        line = (f"iter {completed}/{self.config.iterations} lr={self.optimizer.param_groups[0]['lr']:.2e} "
                f"loss={sum(self.running.values()) / counted:.4f} {parts} "
                f"({completed / (time.time() - self.start):.2f} it/s)")
        self.running, self.counted = {}, 0
        log_above_bars(logger, line)

    def _save(self, **extra: Any) -> None:
        self.metadata.update(completed_iterations=self.completed, train_seconds=round(time.time() - self.start, 1),
                             **extra)
        save_checkpoint(self.model.eval(), self.output, self.metadata)

    def interrupted(self) -> None:
        """Ctrl-C: save the last completed iteration (unless an update was cut in half) and say where."""
        self.bar.close()
        if self.completed and not self.in_step:
            self._save()
            logger.info(f"interrupted after {self.completed} of {self.config.iterations} iterations; saved the "
                     f"checkpoint to {self.output}")
        elif self.saved:
            logger.info(f"interrupted during an update; the last saved checkpoint ({self.saved} iterations) is {self.output}")
        else:
            logger.info("interrupted before a checkpoint could be saved; nothing was written")

    def finish(self) -> None:
        self.bar.close()
        # CPU seconds too: on a shared machine the wall time says more about the neighbours
        self._save(train_cpu_seconds=round(time.process_time() - self.cpu_start, 1))
