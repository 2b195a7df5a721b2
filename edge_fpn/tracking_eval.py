"""Tracking measured against the synthetic camera's ground truth (MOTA, IDF1, ID switches).

Host and test side: the metrics come from py-motmetrics and the reference tracker is a published
ByteTrack from PyPI (cjm-byte-track, a port of the official ByteTrack update), both imported
only inside the functions that use them. The runtime's tracker itself (runtime/tracking/) needs
neither.

A sequence is the synthetic camera's frames with their ground truth (boxes, labels, object IDs)
and timestamps; detections come from a bundle (the shipped model's real detections) or from the
ground truth with controlled noise (jitter, misses, false positives). A tracker runs on every
`step`-th frame only (step 3 = a 10 FPS camera at a 30 FPS scene), and only the frames it saw
are scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import EdgeFpnError

# the sequences the tests and the benchmark score: every tracker-breaking motion, and the drift
TRACK_SEQUENCES = ("drift", "cross", "occlude", "exit", "fast", "hard")
# the seeds the tests, the benchmark and `eval --track` score: the tracker's defaults were tuned on 4-16
HELD_OUT_SEEDS = (1, 2, 3)

Frame = Tuple[float, np.ndarray, np.ndarray, np.ndarray]  # timestamp, boxes, labels, object IDs
Dets = Tuple[float, np.ndarray, np.ndarray, np.ndarray]  # timestamp, boxes, scores, labels
Hyp = Tuple[np.ndarray, np.ndarray]  # track IDs, boxes


def ground_truth_sequence(motion: str, frames: int, width: int = 640, height: int = 480, fps: float = 30.0,
                          seed: int = 1, images: bool = False) -> Tuple[List[Frame], List[np.ndarray]]:
    """The ground truth of `frames` frames of the test:// scene `motion` (and the images if asked)."""
    from .runtime.synthetic import SyntheticCamera
    camera = SyntheticCamera(width, height, fps, seed, motion=motion)
    truth: List[Frame] = []
    pictures: List[np.ndarray] = []
    for index in range(frames):
        boxes, labels, ids = camera.ground_truth_tracks(index)
        truth.append((camera.timestamp(index), boxes, labels, ids))
        if images:
            pictures.append(camera.frame(index))
    return truth, pictures


@dataclass(frozen=True)
class DetectionNoise:
    """How noisy_detections spoils the ground truth: each box corner moved by N(0, jitter) px,
    `miss` of the objects dropped, `false_positives` x the objects' count of random boxes added
    (random class of `num_classes`, scores 0.3-0.8), and `low_share` of the true detections given a
    low score (0.15-0.5, ByteTrack's second stage); the other true detections score 0.6-1.0."""
    jitter: float = 2.0
    miss: float = 0.1
    false_positives: float = 0.05
    low_share: float = 0.1
    num_classes: int = 5


def noisy_detections(truth: Sequence[Frame], noise: Optional[DetectionNoise] = None, width: int = 640,
                     height: int = 480, seed: int = 0) -> List[Dets]:
    """Detections made from the ground truth with `noise` (default DetectionNoise()); false
    positives fall inside a `width` x `height` frame."""
    noise = noise or DetectionNoise()
    jitter, miss, false_positives = noise.jitter, noise.miss, noise.false_positives
    low_share, num_classes = noise.low_share, noise.num_classes
    rng = np.random.default_rng(seed)
    out: List[Dets] = []
    for timestamp, boxes, labels, _ in truth:
        n = boxes.shape[0]
        keep = rng.random(n) >= miss
        b = boxes[keep].astype(np.float64) + rng.normal(0.0, jitter, (int(keep.sum()), 4))
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1.0)
        s = rng.uniform(0.6, 1.0, b.shape[0])
        low = rng.random(b.shape[0]) < low_share
        s[low] = rng.uniform(0.15, 0.5, int(low.sum()))
        lab = labels[keep]
        fp = int(rng.poisson(false_positives * max(n, 1)))
        if fp:
            size = rng.uniform(12, 80, (fp, 2))
            corner = rng.uniform(0, 1, (fp, 2)) * (np.array([width, height]) - size)
            b = np.concatenate([b, np.concatenate([corner, corner + size], axis=1)])
            s = np.concatenate([s, rng.uniform(0.3, 0.8, fp)])
            lab = np.concatenate([lab, rng.integers(1, num_classes + 1, fp)])
        out.append((timestamp, b.astype(np.float32), s.astype(np.float32), lab.astype(np.int64)))
    return out


def model_detections(bundle: str, truth: Sequence[Frame], images: Sequence[np.ndarray], device: str = "cpu",
                     detector: Any = None) -> List[Dets]:
    """The bundle's detections of each image (everything the model keeps, down to its own threshold)."""
    from .runtime.detector import Detector
    owned = detector is None
    detector = detector or Detector(bundle, device=device)
    try:
        out: List[Dets] = []
        for (timestamp, _, _, _), image in zip(truth, images):
            d = detector(image)
            out.append((timestamp, d.boxes, d.scores, d.labels))
        return out
    finally:
        if owned:
            detector.close()


def run_ours(detections: Sequence[Dets], step: int = 1, config: Any = None, coast_seconds: float = 0.0,
             frame_size: Tuple[int, int] = (640, 480),
             images: Optional[Sequence[np.ndarray]] = None) -> Tuple[List[int], List[Hyp], List[float]]:
    """edge-fpn's Tracker on every `step`-th frame: (frames seen, hypotheses, seconds per update);
    with `images` (the frames), as the pipeline runs it: its appearance veto sees each box's colours.

    The hypotheses are the detections with a track ID and, with `coast_seconds`, the predicted
    boxes of the tracks lost for at most that long, neither hidden nor guessed (``Tracker.tracks(frame_size)``:
    what a robot program can ask for when a detection is missed)."""
    import time

    from .runtime.tracking import Tracker, TrackerConfig
    tracker = Tracker(config or TrackerConfig())
    seen: List[int] = []
    hyps: List[Hyp] = []
    times: List[float] = []
    for index in range(0, len(detections), step):
        timestamp, boxes, scores, labels = detections[index]
        t0 = time.perf_counter()
        ids = tracker.update(boxes, scores, labels, timestamp, None if images is None else images[index])
        times.append(time.perf_counter() - t0)
        keep = ids >= 0
        seen.append(index)
        if coast_seconds > 0:
            tracks = tracker.tracks(frame_size)
            coast = tracks["lost"] & ~tracks["hidden"] & ~tracks["guessed"] & (timestamp - tracks["last_seen"] <= coast_seconds + 1e-9)
            hyps.append((np.concatenate([ids[keep], tracks["ids"][coast]]),
                         np.concatenate([boxes[keep], tracks["boxes"][coast]])))
        else:
            hyps.append((ids[keep], boxes[keep]))
    return seen, hyps, times


def run_reference(detections: Sequence[Dets], step: int = 1, fps: float = 30.0,
                  track_thresh: float = 0.5) -> Tuple[List[int], List[Hyp], List[float]]:
    """The published ByteTrack (cjm-byte-track, the official update ported; class-agnostic as the
    original; its buffer of 30 frames at 30 FPS is scaled to the frame rate it sees) on the same
    detections; its output boxes are its tracks' filtered boxes, as the original reports them."""
    import time
    try:
        from cjm_byte_track.byte_tracker import BYTETracker
    except ImportError:
        raise EdgeFpnError("the reference ByteTrack is not installed; pip install cjm-byte-track (in the dev extra)") from None
    tracker = BYTETracker(track_thresh=track_thresh, track_buffer=30, match_thresh=0.8, frame_rate=int(round(fps / step)))
    seen: List[int] = []
    hyps: List[Hyp] = []
    times: List[float] = []
    for index in range(0, len(detections), step):
        _, boxes, scores, _ = detections[index]
        results = np.concatenate([boxes.astype(np.float64), scores.astype(np.float64)[:, None]], axis=1).reshape(-1, 5)
        t0 = time.perf_counter()
        tracks = tracker.update(results, (1, 1), (1, 1))
        times.append(time.perf_counter() - t0)
        ids = np.asarray([t.track_id for t in tracks], np.int64)
        out_boxes = np.asarray([t.tlbr for t in tracks], np.float64).reshape(-1, 4)
        seen.append(index)
        hyps.append((ids, out_boxes))
    return seen, hyps, times


def run_ideal(truth: Sequence[Frame], detections: Sequence[Dets], step: int = 1, iou: float = 0.5,
              forget_seconds: Optional[float] = None) -> Tuple[List[int], List[Hyp]]:
    """The ceiling of any tracker that reports detection boxes: on every `step`-th frame each ground-
    truth object takes its best detection (an optimal assignment by IoU, >= `iou`, any class and score)
    with the object's own ID; the other detections are dropped. What it misses, no tracker finds
    without predicting boxes (the detector's misses); what a tracker scores below it is the tracker's.

    With `forget_seconds`, an object out of the frames seen for longer than that comes back with a
    new ID: the ceiling of a tracker that keeps a lost track that long and has no appearance to
    know an object again after it (ours: ``TrackerConfig.lost_seconds``)."""
    from .runtime.tracking import iou_matrix, linear_assignment
    seen: List[int] = []
    hyps: List[Hyp] = []
    last_seen: Dict[int, float] = {}
    renamed: Dict[int, int] = {}
    next_name = -1  # (new IDs below zero never meet the ground truth's)
    for index in range(0, len(detections), step):
        timestamp, gt_boxes, _, gt_ids = truth[index]
        if forget_seconds is not None:
            for object_id in np.asarray(gt_ids).tolist():
                if object_id in last_seen and timestamp - last_seen[object_id] > forget_seconds + 1e-6:
                    renamed[object_id], next_name = next_name, next_name - 1
                last_seen[object_id] = timestamp
        boxes = np.asarray(detections[index][1], np.float64).reshape(-1, 4)
        overlap = iou_matrix(np.asarray(gt_boxes, np.float64).reshape(-1, 4), boxes)
        rows, cols = linear_assignment(1.0 - overlap, 1.0 - iou + 1e-9)
        ids = [renamed.get(object_id, object_id) for object_id in np.asarray(gt_ids)[rows].tolist()]
        seen.append(index)
        hyps.append((np.asarray(ids, np.int64), boxes[cols]))
    return seen, hyps


def score(truth: Sequence[Frame], seen: Sequence[int], hyps: Sequence[Hyp], iou: float = 0.5) -> Dict[str, float]:
    """MOTA, IDF1, ID switches (py-motmetrics) over the frames seen; a pair matches at IoU >= `iou`."""
    import motmetrics as mm

    from .runtime.tracking import iou_matrix
    acc = mm.MOTAccumulator(auto_id=True)
    for index, (ids, boxes) in zip(seen, hyps):
        _, gt_boxes, _, gt_ids = truth[index]
        # the distance matrix by our own IoU: motmetrics' iou_matrix uses np.asfarray, gone in numpy 2
        overlap = iou_matrix(gt_boxes.astype(np.float64).reshape(-1, 4), np.asarray(boxes, np.float64).reshape(-1, 4))
        distance = np.where(overlap >= iou, 1.0 - overlap, np.nan)
        acc.update(gt_ids.tolist(), np.asarray(ids).tolist(), distance)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "precision", "recall",
                                                         "num_false_positives", "num_misses", "num_objects"],
                                          name="all")
    row = summary.loc["all"]
    return {"mota": round(float(row["mota"]), 4), "idf1": round(float(row["idf1"]), 4),
            "id_switches": int(row["num_switches"]), "precision": round(float(row["precision"]), 4),
            "recall": round(float(row["recall"]), 4), "false_positives": int(row["num_false_positives"]),
            "misses": int(row["num_misses"]), "objects": int(row["num_objects"])}


def compare(truth: Sequence[Frame], detections: Sequence[Dets], step: int = 1, reference: bool = True,
            config: Any = None, coast_seconds: float = 0.0, ideal: bool = False,
            images: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Dict[str, float]]:
    """Our tracker's scores (given the `images`, with their colours as in the pipeline) and (if
    `reference`) the reference ByteTrack's on the same detections (a 30 FPS sequence seen every
    `step`-th frame); with `coast_seconds`, also ours with coasted tracks ("ours+coast"); with
    `ideal`, the ceiling of perfect IDs on the same detection boxes ("ideal", ``run_ideal``)."""
    seen, hyps, times = run_ours(detections, step, config, images=images)
    result = {"ours": score(truth, seen, hyps)}
    result["ours"]["update_ms_median"] = round(float(np.median(times)) * 1000, 4)
    if coast_seconds > 0:
        seen, hyps, _ = run_ours(detections, step, config, coast_seconds, images=images)
        result["ours+coast"] = score(truth, seen, hyps)
    if reference:
        seen, hyps, times = run_reference(detections, step)
        result["reference"] = score(truth, seen, hyps)
        result["reference"]["update_ms_median"] = round(float(np.median(times)) * 1000, 4)
    if ideal:
        result["ideal"] = score(truth, *run_ideal(truth, detections, step))
    return result


def mean_scores(runs: Sequence[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """The mean of several ``compare`` results (seeds of one sequence), tracker by tracker, with the
    lowest and highest IDF1 of the seeds (``idf1_min``, ``idf1_max``: one seed's ID switch can move
    a mean of three by several points)."""
    means = {name: {key: round(float(np.mean([run[name][key] for run in runs])), 4) for key in runs[0][name]}
             for name in runs[0]}
    for name, scores in means.items():
        idf1 = [run[name]["idf1"] for run in runs]
        scores["idf1_min"], scores["idf1_max"] = round(float(min(idf1)), 4), round(float(max(idf1)), 4)
    return means


def format_scores(name: str, scores: Dict[str, float]) -> str:
    spread = (f" ({scores['idf1_min']:.3f}-{scores['idf1_max']:.3f})"
              if "idf1_min" in scores and scores["idf1_min"] != scores["idf1_max"] else "")
    # (precision is undefined, NaN, where a tracker reported nothing)
    precision = "-" if np.isnan(scores["precision"]) else f"{scores['precision']:.3f}"
    return (f"{name:<28} MOTA {scores['mota']:.3f}  IDF1 {scores['idf1']:.3f}{spread}  ID switches {scores['id_switches']:>5.1f}  "
            f"precision {precision}  recall {scores['recall']:.3f}")


def idf1_drops(report: Dict[str, Any], name: str = "ours") -> Dict[str, float]:
    """Each scene's IDF1 drop in points from 30 FPS to every third frame (a 10 FPS camera) of a
    report keyed "motion@30fps" / "motion@10fps" (the issue's goal: at most 5)."""
    return {motion: round(100 * (report[f"{motion}@30fps"][name]["idf1"] - report[f"{motion}@10fps"][name]["idf1"]), 1)
            for motion in TRACK_SEQUENCES if f"{motion}@30fps" in report and f"{motion}@10fps" in report}


def format_drops(drops: Dict[str, float], label: str) -> str:
    """One line of idf1_drops for a person."""
    return f"IDF1 drop at every third frame, points ({label}; goal <= 5): " + ", ".join(
        f"{motion} {drop:.1f}" for motion, drop in drops.items())


def evaluate_bundle_tracking(bundle: str, frames: int = 300, sequences: Sequence[str] = TRACK_SEQUENCES, frame_size: Tuple[int, int] = (640, 480),
                             device: str = "cpu", reference: bool = True, seeds: Sequence[int] = HELD_OUT_SEEDS,
                             progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """The bundle's real detections on each synthetic sequence (frames of `frame_size`, width x
    height), tracked by ours (and the reference), beside the ceiling of perfect IDs on them
    ("ideal"): the mean over `seeds` (``mean_scores``: with each tracker's lowest and highest IDF1;
    one seed's background can hide most objects from a detector)."""
    from .runtime.detector import Detector
    width, height = frame_size
    report: Dict[str, Any] = {}
    with Detector(bundle, device=device) as detector:
        for motion in sequences:
            runs: Dict[int, List[Dict[str, Dict[str, float]]]] = {1: [], 3: []}
            for seed in seeds:
                truth, images = ground_truth_sequence(motion, frames, width, height, seed=seed, images=True)
                detections = model_detections(bundle, truth, images, detector=detector)
                for step in runs:  # (30 FPS, and every third frame: a 10 FPS camera)
                    runs[step].append(compare(truth, detections, step, reference=reference, ideal=True, images=images))
            for step, scores_of_seeds in runs.items():
                key = f"{motion}@{30 // step}fps"
                report[key] = mean_scores(scores_of_seeds)
                if progress:
                    for name, scores in report[key].items():
                        progress(format_scores(f"{key} {name}", scores))
    return report
