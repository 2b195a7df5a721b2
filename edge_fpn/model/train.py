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
import math
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..runtime.synthetic import CLASS_NAMES, make_scene
from .shapes import SHAPES_INPUT_SIZE, build_shapes_model, load_shapes_model  # noqa: F401 (re-export)

DEFAULT_BATCH_SIZE = 4
DEFAULT_LR = 2e-3
WARMUP_ITERATIONS = 300


def learning_rate(iteration: int, iterations: int, base_lr: float = DEFAULT_LR) -> float:
    """Linear warmup, then cosine decay to 2% of the base rate."""
    warmup = min(WARMUP_ITERATIONS, max(1, iterations // 10))
    if iteration < warmup:
        return base_lr * (0.01 + 0.99 * iteration / warmup)
    progress = (iteration - warmup) / max(1, iterations - warmup)
    return base_lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def scene_batch(seed: int, iteration: int, batch_size: int, size: int) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]]]:
    """Batch `iteration` of the training stream: RGB float images in [0, 1] and their targets."""
    images, targets = [], []
    for k in range(batch_size):
        image, boxes, labels = make_scene(seed, iteration * batch_size + k, size, size)
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


def train(output: str, iterations: int, seed: int, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
          log_every: int = 50, save_every: int = 250, lr: float = DEFAULT_LR, threads: int = 2,
          log=print) -> str:
    """Train the shapes model for `iterations` batches of fresh scenes of `seed`; returns `output`.

    Saves `output` (float16 state dict) and its metadata json every `save_every` iterations and at
    the end. On Ctrl-C it saves the last completed iteration, says where, and re-raises.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, not {iterations}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    size = SHAPES_INPUT_SIZE
    model = build_shapes_model(len(CLASS_NAMES)).train()
    # no weight decay on norms and biases: it only fights BatchNorm's scale
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    metadata: Dict[str, Any] = {
        "architecture": "shapes", "class_names": list(CLASS_NAMES), "input_size": [size, size],
        "seed": int(seed), "iterations": int(iterations), "completed_iterations": 0,
        "batch_size": int(batch_size), "learning_rate": lr, "threads": int(threads),
    }
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=iterations, desc="train", unit="it", dynamic_ncols=True)
    completed = 0
    in_step = False
    saved = 0
    running: Dict[str, float] = {}
    counted = 0
    start, cpu_start = time.time(), time.process_time()
    try:
        for iteration in range(iterations):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(iteration, iterations, lr)
            images, targets = scene_batch(seed, iteration, batch_size, size)
            losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise RuntimeError(f"the loss became {float(loss)} at iteration {iteration}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            in_step = True  # an interrupted step leaves half-updated weights: keep the last save then
            optimizer.step()
            in_step = False
            completed = iteration + 1
            for name, value in losses.items():
                running[name] = running.get(name, 0.0) + float(value.detach())
            counted += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if completed % log_every == 0 or completed == iterations:
                parts = " ".join(f"{k.replace('loss_', '')}={v / counted:.4f}" for k, v in running.items())
                line = (f"iter {completed}/{iterations} lr={optimizer.param_groups[0]['lr']:.2e} "
                        f"loss={sum(running.values()) / counted:.4f} {parts} "
                        f"({completed / (time.time() - start):.2f} it/s)")
                running, counted = {}, 0
                if bar is not None:
                    bar.write(line)
                else:
                    log(line)
            if completed % save_every == 0 and completed < iterations:
                metadata.update(completed_iterations=completed, train_seconds=round(time.time() - start, 1))
                save_checkpoint(model.eval(), output, metadata)
                model.train()
                saved = completed
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if completed and not in_step:
            metadata.update(completed_iterations=completed, train_seconds=round(time.time() - start, 1))
            save_checkpoint(model.eval(), output, metadata)
            log(f"interrupted after {completed} of {iterations} iterations; saved the checkpoint to {output}")
        elif saved:
            log(f"interrupted during an update; the last saved checkpoint ({saved} iterations) is {output}")
        else:
            log("interrupted before a checkpoint could be saved; nothing was written")
        raise
    if bar is not None:
        bar.close()
    # CPU seconds too: on a shared machine the wall time says more about the neighbours
    metadata.update(completed_iterations=completed, train_seconds=round(time.time() - start, 1),
                    train_cpu_seconds=round(time.process_time() - cpu_start, 1))
    save_checkpoint(model.eval(), output, metadata)
    return output
