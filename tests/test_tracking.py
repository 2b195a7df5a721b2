"""The tracker (runtime/tracking/): its assignment solver, track life, IDs, timestamps, state,
bad input; the synthetic camera's ground truth with object IDs; and MOTA / IDF1 / ID switches
measured with py-motmetrics against a published ByteTrack on the same detections; the wiring
(Pipeline, Detections, sinks, CLI). No timing here: speed is in benchmarks/tracking.py."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.tracking import Tracker, TrackerConfig, iou_matrix, linear_assignment


# ---------------------------------------------------------------- the assignment solver

def _brute_force(cost, limit):
    """The extended problem's optimum (unmatched rows and columns cost limit/2 each), by scipy."""
    from scipy.optimize import linear_sum_assignment
    n, m = cost.shape
    ext = np.full((n + m, n + m), limit / 2.0)
    ext[:n, :m] = np.where(cost < limit, cost, 1e9)
    ext[n:, m:] = 0.0
    r, c = linear_sum_assignment(ext)
    return ext[r, c].sum()


def test_linear_assignment_is_optimal_against_scipy():
    pytest.importorskip("scipy")  # the reference only: the tracker itself never imports scipy
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, m = (int(v) for v in rng.integers(1, 10, 2))
        cost = rng.random((n, m))
        if trial % 3 == 0:
            cost[rng.random((n, m)) < 0.5] = np.inf  # infeasible pairs (other classes)
        limit = float(rng.uniform(0.2, 1.0))
        rows, cols = linear_assignment(cost, limit)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert (cost[rows, cols] < limit).all()
        total = cost[rows, cols].sum() + (n + m - 2 * len(rows)) * limit / 2.0
        assert total == pytest.approx(_brute_force(cost, limit), abs=1e-9)


def test_linear_assignment_edge_cases():
    empty = linear_assignment(np.zeros((0, 3)), 0.5)
    assert empty[0].shape == (0,) and empty[1].shape == (0,)
    rows, cols = linear_assignment(np.array([[np.nan, 0.1]]), 0.5)  # NaN is never matched
    assert rows.tolist() == [0] and cols.tolist() == [1]
    # two rows competing for one column: the cheaper one wins, the other stays unmatched
    rows, cols = linear_assignment(np.array([[0.3], [0.1]]), 0.5)
    assert rows.tolist() == [1] and cols.tolist() == [0]
    # every pair alone (the quick path) and pairs competing (the solver): int64 rows in order either way
    for cost in (np.array([[0.1, 9.0], [9.0, 0.2]]), np.array([[0.1, 0.2], [0.2, 0.1]])):
        rows, cols = linear_assignment(cost, 0.5)
        assert rows.dtype == np.int64 and cols.dtype == np.int64
        assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]


# ---------------------------------------------------------------- the motion model

def test_prediction_of_a_batch_is_each_tracks_own_whether_straight_or_turning():
    from edge_fpn.runtime.tracking.kalman import initial_state, predict
    cfg = TrackerConfig()
    z = np.array([[100.0, 100.0, 20.0, 20.0], [300.0, 200.0, 30.0, 30.0], [50.0, 400.0, 25.0, 25.0]])
    x, P = initial_state(z, cfg)
    x[:, 4:6] = [[120.0, 0.0], [0.0, 90.0], [-60.0, 30.0]]
    q = np.array([1.0, 3.0, 1.5])
    turn = np.zeros((3, 6))
    turn[1, 0] = 2.0  # the middle one turns at 2 rad/s
    dt = 0.1
    bx, bP = x.copy(), P.copy()
    predict(bx, bP, q, turn, dt, cfg)
    for k in range(3):  # each alone gives what the batch gave it
        kx, kP = x[k:k + 1].copy(), P[k:k + 1].copy()
        predict(kx, kP, q[k:k + 1], turn[k:k + 1], dt, cfg)
        np.testing.assert_allclose(bx[k], kx[0], rtol=1e-12)
        np.testing.assert_allclose(bP[k], kP[0], rtol=1e-12)
    np.testing.assert_allclose(bx[0, :2], [112.0, 100.0])  # straight: x + v dt
    np.testing.assert_allclose(bx[2, :2], [44.0, 403.0])
    # turning: along the arc (the same speed, the velocity rotated by w dt, off the straight line)
    assert np.hypot(*bx[1, 4:6]) == pytest.approx(90.0)
    assert math.atan2(bx[1, 5], bx[1, 4]) == pytest.approx(math.pi / 2 + 0.2)
    assert bx[1, 0] < 300.0 - 0.5 and bx[1, 1] == pytest.approx(200.0 + 90.0 * math.sin(0.2) / 2.0)
    assert (np.linalg.eigvalsh(bP) > 0).all()  # still a covariance


def test_correction_is_the_textbook_kalman_update_after_turns_and_manoeuvres():
    """correct() inverts S by its blocks (centre 2x2, two sizes), trusting that the filter never
    couples a box's centre with its size: after turning predictions and updates the cross terms are
    still exactly zero, and the result is the generic update's, S solved as a whole."""
    from edge_fpn.runtime.tracking.kalman import correct, initial_state, measurement_std, predict
    cfg = TrackerConfig()
    rng = np.random.default_rng(3)
    z = np.c_[rng.uniform(50, 600, (6, 2)), rng.uniform(15, 80, (6, 2))]
    x, P = initial_state(z, cfg)
    q = np.ones(6)
    turn = np.zeros((6, 6))
    turn[::2, 0] = rng.uniform(-3, 3, 3)  # half of them turning
    for _ in range(12):
        predict(x, P, q, turn, 1 / 30, cfg)
        z = x[:, :4] + rng.normal(0, 3, (6, 4))
        x_before, P_before = x.copy(), P.copy()
        x, P, q = correct(x, P, q, z, cfg)
        # the generic update with the same measurement noise
        S = P_before[:, :4, :4] + np.eye(4) * (measurement_std(np.c_[z[:, 2:4], z[:, 2:4]], cfg) ** 2)[:, None, :]
        gain = np.swapaxes(np.linalg.solve(S, P_before[:, :4, :]), 1, 2)
        expected_x = x_before + np.einsum("kij,kj->ki", gain, z - x_before[:, :4])
        expected_x[:, 2:4] = np.maximum(expected_x[:, 2:4], 1.0)
        np.testing.assert_allclose(x, expected_x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(P, P_before - gain @ P_before[:, :4, :], rtol=1e-9, atol=1e-6)
    centre, size = [0, 1, 4, 5], [2, 3, 6, 7]
    assert np.count_nonzero(P[:, centre][:, :, size]) == 0  # never coupled, exactly


def test_frames_where_every_track_matches_give_what_the_gathered_rows_give(monkeypatch):
    """When every track takes a box, _apply_matches applies them in row order on the fields'
    views (no gathers): every frame's IDs and state are the same to the bit as through the rows
    gathered and scattered back, partial views made whole on those frames too (the "occlude" and
    "exit" scenes with their frames, noisy ground truth, tuning seed 4)."""
    from edge_fpn.runtime.tracking.table import TrackTable
    from edge_fpn.tracking_eval import ground_truth_sequence, noisy_detections

    def gathered(self, rows, dets, z, scores, now, hists=None):
        self._apply(rows, z[dets], scores[dets], now, None if hists is None else hists[dets])

    whole_frames = []
    real_apply = TrackTable._apply

    def counting_apply(self, rows, *args, **kwargs):
        whole_frames.append(isinstance(rows, slice))
        return real_apply(self, rows, *args, **kwargs)

    for motion in ("occlude", "exit"):
        truth, images = ground_truth_sequence(motion, 150, seed=4, images=True)
        detections = noisy_detections(truth, seed=4)
        fast, slow = Tracker(), Tracker()
        monkeypatch.setattr(slow, "_apply_matches", gathered.__get__(slow))
        monkeypatch.setattr(TrackTable, "_apply", counting_apply)
        for (t, boxes, scores, labels), image in zip(detections, images):
            ids = fast.update(boxes, scores, labels, t, image=image)
            np.testing.assert_array_equal(ids, slow.update(boxes, scores, labels, t, image=image))
            assert json.dumps(fast.get_state()) == json.dumps(slow.get_state())
        monkeypatch.undo()
    assert sum(whole_frames) >= 50  # (the row-order path ran, on the fast tracker's side)


def test_prediction_is_the_textbook_one_and_takes_a_covariance_that_is_a_view():
    """predict() adds Q through strided views of the flat P: the result is F P F' + Q written out
    entry by entry (white-noise acceleration on each coordinate's (position, velocity) pair plus a
    position random walk), also for a P that is not one C-ordered block (its flat form a copy)."""
    from edge_fpn.runtime.tracking.kalman import initial_state, predict
    cfg = TrackerConfig()
    rng = np.random.default_rng(5)
    z = np.c_[rng.uniform(50, 600, (5, 2)), rng.uniform(15, 80, (5, 2))]
    x, P = initial_state(z, cfg)
    x[:, 4:] = rng.normal(0, 40, (5, 4))
    q = rng.uniform(1, 3, 5)
    dt = 0.1
    F = np.eye(8) + dt * np.eye(8, k=4)
    x_pred = x @ F.T
    size2 = np.maximum(x_pred[:, 2:4], 1.0) ** 2
    expected = F @ P @ F.T
    for k in range(5):
        for i in range(4):
            s2 = size2[k, i % 2]
            a = s2 * (cfg.acceleration_noise * q[k] if i < 2 else cfg.size_acceleration_noise)
            expected[k, i, i] += a * dt ** 3 / 3 + cfg.position_noise * dt * s2
            expected[k, i, i + 4] += a * dt ** 2 / 2
            expected[k, i + 4, i] += a * dt ** 2 / 2
            expected[k, i + 4, i + 4] += a * dt
    strided = np.zeros((5, 8, 8)).transpose(0, 2, 1)  # (each matrix column-major: reshape to (5, 64) copies it)
    strided[:] = P
    assert not np.shares_memory(strided.reshape(5, 64), strided)
    for covariance in (P, strided):
        predicted = x.copy()
        predict(predicted, covariance, q, np.zeros((5, 6)), dt, cfg)
        np.testing.assert_allclose(predicted, x_pred, rtol=1e-12)
        np.testing.assert_allclose(covariance, expected, rtol=1e-9)



# ---------------------------------------------------------------- appearance

def _canvas(squares):
    """A grey 480x640 frame with solid squares: (cx, cy, size, (b, g, r)) each."""
    image = np.full((480, 640, 3), 128, np.uint8)
    for cx, cy, size, colour in squares:
        image[int(cy - size / 2):int(cy + size / 2), int(cx - size / 2):int(cx + size / 2)] = colour
    return image


def test_colour_histograms_of_boxes():
    from edge_fpn.runtime.tracking.appearance import BINS, colour_histograms, unlike
    image = _canvas([(100, 100, 40, (0, 0, 255)), (300, 200, 40, (255, 0, 0))])
    boxes = np.array([_box(100, 100, 30), _box(300, 200, 30), _box(100, 100, 50), [np.nan, 0, 1, 1], _box(-50, -50, 20)])
    h = colour_histograms(image, boxes)
    assert h.shape == (5, BINS)
    assert np.allclose(h[[0, 1, 2, 4]].sum(axis=1), 1.0) and (h[3] == 0).all()  # a box that is not finite: unknown
    assert h[0].max() == 1.0 and h[1].max() == 1.0 and h[0].argmax() != h[1].argmax()  # one colour each
    assert h[2, h[0].argmax()] == 1.0  # the same red square boxed wider: the grey around it is the background's
    veto = unlike(h[:3], h[:3], 0.3)
    assert not veto.diagonal().any()  # a box is like itself
    assert veto[0, 1] and veto[1, 0]  # red and blue are not alike
    assert not veto[0, 2]  # the red square, boxed wider: still alike
    grey = colour_histograms(image, np.array([_box(400, 300, 60)]))  # (nothing but the background: kept whole)
    assert grey.max() == 1.0 and unlike(h[:1], grey, 0.3)[0, 0]
    assert not unlike(h[:1], np.zeros((1, BINS)), 0.3).any()  # unknown: never a veto
    for bad in (np.zeros((480, 640), np.uint8), np.zeros((480, 640, 3), np.float32), np.zeros((0, 640, 3), np.uint8)):
        with pytest.raises(EdgeFpnError, match="H x W x 3 uint8 frame"):
            colour_histograms(bad, boxes)


def test_colour_histograms_leave_out_the_corners_of_a_box():
    # a red disc on a blue and on a green background: the corners outside its inscribed circle are
    # the background's; sampled inside it (and, since, less what the ring around the box shows),
    # the two boxes share all their colours (0.81 with the corners and nothing taken out)
    from edge_fpn.runtime.tracking.appearance import colour_histograms, shared
    images = []
    for background in ((255, 0, 0), (0, 255, 0)):
        image = np.zeros((200, 200, 3), np.uint8)
        image[:] = background
        yy, xx = np.mgrid[:200, :200]
        image[(xx - 100) ** 2 + (yy - 100) ** 2 <= 40 ** 2] = (0, 0, 255)
        images.append(image)
    box = np.array([[60.0, 60.0, 140.0, 140.0]])
    assert shared(colour_histograms(images[0], box)[0], colour_histograms(images[1], box)[0]) == pytest.approx(1.0)


def test_colour_histograms_leave_out_the_background_around_a_box():
    # two rings of one class, red and blue, over one green occluder: their boxes hold the green of
    # their holes and corners (half of what the ellipse samples), but the ring of samples around
    # each box sees that green too, and without it the two share nothing
    from edge_fpn.runtime.tracking.appearance import RING_MARGIN, colour_histograms, shared
    red_bin, blue_bin = 3, 48  # (BGR levels 0,0,3 and 3,0,0)
    image = np.full((240, 320, 3), 128, np.uint8)
    image[20:220, 20:300] = (0, 255, 0)
    yy, xx = np.mgrid[:240, :320]
    for cx, colour in ((100, (0, 0, 255)), (220, (255, 0, 0))):
        distance2 = (xx - cx) ** 2 + (yy - 120) ** 2
        image[(distance2 <= 30 ** 2) & (distance2 >= 18 ** 2)] = colour
    red, blue = colour_histograms(image, np.array([_box(100, 120, 60), _box(220, 120, 60)]))
    assert red[red_bin] == 1.0 and blue[blue_bin] == 1.0 and shared(red, blue) == 0.0
    # a partial view: the box ends 20 px short of a red disc (x 130-190), so the ring's right side
    # (RING_MARGIN x 40 px out) falls on the disc, but the disc fills more of the box than of the
    # ring: its colour is the object's and stays, the grey goes
    disc = np.full((240, 320, 3), 128, np.uint8)
    disc[(xx - 160) ** 2 + (yy - 120) ** 2 <= 30 ** 2] = (0, 0, 255)
    assert 170 + RING_MARGIN * 40 < 190
    assert colour_histograms(disc, np.array([[130.0, 90.0, 170.0, 150.0]]))[0, red_bin] == 1.0
    # an object the colour of what is around it keeps its box's colours (nothing would be left)
    same = np.full((240, 320, 3), 128, np.uint8)
    assert colour_histograms(same, np.array([_box(160, 120, 40)])).max() == 1.0


def test_colour_histograms_of_a_frame_that_is_a_view_and_of_boxes_past_its_edges():
    # a frame that is a view into a larger array (a crop, a flipped image) is read where it is, not
    # as the flat array it is not; a box whose ring lies wholly off the frame keeps its colours
    from edge_fpn.runtime.tracking.appearance import colour_histograms
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (300, 400, 3), np.uint8)
    view = big[50:250, 100:300][:, ::-1]
    assert not view.flags.c_contiguous
    boxes = np.array([[10.0, 20.0, 60.0, 90.0], [150.0, 150.0, 199.0, 199.0], [-30.0, -30.0, 240.0, 240.0]])
    hists = colour_histograms(view, boxes)
    assert np.array_equal(hists, colour_histograms(np.ascontiguousarray(view), boxes))
    assert np.allclose(hists.sum(axis=1), 1.0)
    whole = colour_histograms(big, np.array([[-100.0, -100.0, 500.0, 400.0]]))  # (no ring sample on the frame)
    assert np.allclose(whole.sum(), 1.0)


def test_a_box_that_looks_nothing_like_a_track_does_not_take_it():
    """A red square tracked, then missed while a blue square of its class appears just off its path
    (within the motion stage's reach, not overlapping its prediction): with the frames the blue one
    is another object; with boxes alone, motion gives it the red one's ID."""
    def run(with_frames):
        tracker = Tracker()
        ids = []
        for i in range(12):
            t = i / 30
            x = 100 + 60 * t
            if i < 10:
                squares, boxes = [(x, 100, 20, (0, 0, 255))], [_box(x, 100)]
            else:  # the red one is gone (out of sight); a blue one 25 px below where it would be
                squares, boxes = [(x, 125, 20, (255, 0, 0))], [_box(x, 125)]
            image = _canvas(squares) if with_frames else None
            ids.append(tracker.update(np.array(boxes), np.array([0.9]), np.array([1]), t, image)[0])
        return ids
    boxes_only, with_frames = run(False), run(True)
    red = boxes_only[9]
    assert red > 0 and with_frames[9] == red
    assert boxes_only[10] == red  # motion alone: the blue square takes the red one's ID
    assert with_frames[10] == -1 and with_frames[11] == -1  # with the frames: a new object, not confirmed yet
    with pytest.raises(EdgeFpnError, match="uint8 frame"):  # a bad frame is one sentence and changes nothing
        tracker = Tracker()
        tracker.update(np.array([_box(50, 50)]), np.array([0.9]), np.array([1]), 0.0, np.zeros((10, 10)))
    assert tracker.frames == 0 and tracker.active_tracks == 0



def test_two_objects_told_apart_by_colour_need_not_wait_when_they_pass():
    """A red and a blue square of one class pass each other at 10 FPS, a box apart, zig-zagging (no
    IoU with their predictions): on motion alone which box is whose waits a frame (IDs -1); with the
    frames their colours settle it at once and each keeps its ID."""
    def run(with_frames):
        tracker, out = Tracker(), []
        for i in range(12):
            t, wobble = i / 10, 16 * (1 if i % 2 else -1)
            red, blue = (100 + 300 * t, 100 + wobble), (400 - 300 * t, 110 - wobble)
            image = _canvas([(*red, 20, (0, 0, 255)), (*blue, 20, (255, 0, 0))]) if with_frames else None
            out.append(tracker.update(np.array([_box(*red), _box(*blue)]), np.array([0.9, 0.9]), np.array([1, 1]),
                                      t, image).tolist())
        return out
    boxes_only, with_frames = run(False), run(True)
    assert [-1, -1] in boxes_only[1:]  # the lookahead waited
    assert with_frames[1:] == [[1, 2]] * 11  # no wait, no switch



def test_a_sudden_change_of_light_costs_no_id():
    """Every colour of the frame changes at once (a lamp switched on): the tracks on their predicted
    boxes keep their IDs (IoU matches of tracks seen in the last frame are not vetoed) and their colours catch up."""
    tracker = Tracker()
    for i in range(20):
        t = i / 30
        lit = i >= 10
        image = _canvas([(100 + 30 * t, 100, 24, (0, 0, 250 if lit else 130)), (300, 200 + 30 * t, 24, (0, 200 if lit else 90, 0))])
        if lit:
            image[image == 128] = 220  # the grey background brighter too
        ids = tracker.update(np.array([_box(100 + 30 * t, 100, 24), _box(300, 200 + 30 * t, 24)]), np.array([0.9, 0.9]),
                             np.array([1, 1]), t, image)
        if i == 9:
            before = ids.tolist()
    assert before == [1, 2] and ids.tolist() == before


def test_a_lost_track_is_not_refound_by_iou_on_a_box_unlike_it():
    """A red square is missed for 0.3 s (behind something) and a blue one of its class comes out
    where the red one is predicted: by IoU alone the blue one takes the red one's ID; with the frames
    their colours refuse it (a lost track's IoU match is vetoed like a motion match), and the red
    one, back on its path, keeps its ID."""
    def run(with_frames):
        tracker, out = Tracker(), []
        for i in range(30):
            t = i / 30
            red = (100 + 60 * t, 100, 30, (0, 0, 255))
            squares = [red] if i < 10 else [(100 + 60 * t, 100, 30, (255, 0, 0))] if 19 <= i < 25 else [red] if i >= 25 else []
            image = _canvas(squares) if with_frames else None
            ids = tracker.update(np.array([_box(cx, cy, size) for cx, cy, size, _ in squares]).reshape(-1, 4),
                                 np.full(len(squares), 0.9), np.ones(len(squares), np.int64), t, image)
            out.append(ids.tolist())
        return out
    boxes_only, with_frames = run(False), run(True)
    assert boxes_only[9] == with_frames[9] == [1]
    assert boxes_only[19] == [1]  # (the blue square took the red one's ID)
    assert all(ids != [1] for ids in with_frames[19:25])  # the blue one never has it
    assert with_frames[26:] == [[1]] * 4  # the red one, back, has


def test_a_box_that_looks_like_another_lost_track_goes_to_that_one():
    """Two squares of a class, their upper halves the same green and their lower halves red and
    blue (sharing about half their colours: not unlike enough for the veto), pass each other while
    hidden; the red one comes out early, slowed down, where the blue one is predicted. By IoU the
    blue one's track takes it; by its colours (``rival_margin``: it shares far more with the red
    one's track, lost too) it is the red one's, and the blue one keeps its own ID when it comes out."""
    def image_of(objects):
        image = np.full((480, 640, 3), 128, np.uint8)
        for cx, cy, colour in objects:
            image[int(cy - 15):int(cy), int(cx - 15):int(cx + 15)] = (0, 200, 0)
            image[int(cy):int(cy + 15), int(cx - 15):int(cx + 15)] = colour
        return image

    def run(config):
        tracker, out = Tracker(config), []
        for i in range(50):
            t = i / 30
            red_x = 100 + 100 * t if i < 24 else 190 + 100 * (t - 1.2)  # hidden from 0.8 s, out at 1.2 s, slower
            blue_x = 300 - 100 * t
            objects = ([(red_x, 200, (0, 0, 255))] if not 24 <= i < 36 else []) + \
                      ([(blue_x, 200, (255, 0, 0))] if not 24 <= i < 40 else [])
            ids = tracker.update(np.array([_box(x, y, 30) for x, y, _ in objects]).reshape(-1, 4), np.full(len(objects), 0.9),
                                 np.ones(len(objects), np.int64), t, image_of(objects))
            out.append(ids.tolist())
        return out
    default, without = run(TrackerConfig()), run(TrackerConfig(rival_margin=0))
    assert default[23] == without[23] == [1, 2]  # red 1, blue 2, before they hide
    assert without[36] == [2]  # by IoU the blue one's track took the red square
    assert default[36:40] == [[1]] * 4  # with the rule the red one's track has it, at once (no other way to wait for)
    assert default[45] == [1, 2]  # and the blue one, out, is the blue one


def test_state_with_colours_restored_continues_identically():
    def frame(i):
        t = i / 30
        squares = [(100 + 90 * t, 100, 24, (0, 0, 255)), (400 - 90 * t, 110, 24, (255, 0, 0))]
        return t, np.array([_box(cx, cy, s) for cx, cy, s, _ in squares]), _canvas(squares)
    a = Tracker()
    for i in range(10):
        t, boxes, image = frame(i)
        a.update(boxes, np.array([0.9, 0.9]), np.array([1, 1]), t, image)
    state = json.loads(json.dumps(a.get_state()))
    assert np.asarray(state["tracks"]["hist"]).sum() > 0  # the colours are in the state
    b = Tracker()
    b.set_state(state)
    for i in range(10, 20):
        t, boxes, image = frame(i)
        ids_a = a.update(boxes, np.array([0.9, 0.9]), np.array([1, 1]), t, image)
        ids_b = b.update(boxes, np.array([0.9, 0.9]), np.array([1, 1]), t, image)
        assert ids_a.tolist() == ids_b.tolist()
    # a state saved before colours, cut times and class flips were kept still loads
    for name in ("hist", "cut", "flip"):
        del state["tracks"][name]
    old = Tracker()
    old.set_state(state)
    assert old.get_state()["tracks"]["flip"] == [0.0, 0.0]


def _leave_and_come_back(gap=3.0, back=(615.0, 210.0), colour=(0, 0, 255), label=1, with_frames=True, config=None,
                         restart=False):
    """A red square of class 1 drifts right out of the frame (30 FPS), nothing is seen for `gap`
    seconds (10 FPS of empty frames), then a square of `colour` and `label` comes in at `back`:
    (its ID before, its ID after 8 frames back)."""
    tracker = Tracker(config)
    frame = (lambda squares: _canvas(squares)) if with_frames else (lambda squares: None)
    t = 0.0
    for i in range(24):
        t = i / 30
        x = 560 + 60 * t
        before = tracker.update(np.array([_box(x, 200, 30)]), np.array([0.9]), np.array([1]), t,
                                frame([(x, 200, 30, (0, 0, 255))]))[0]
    end = t + gap
    while t < end - 1e-9:
        t = min(t + 0.1, end)
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), t, frame([]))
    if restart:  # (carried across a restart while it is away)
        state = json.loads(json.dumps(tracker.get_state()))
        assert state["remembered"]["ids"] == ([before] if with_frames else [])
        tracker = Tracker(config)
        tracker.set_state(state)
    for i in range(8):
        t += 1 / 30
        after = tracker.update(np.array([_box(*back, 30)]), np.array([0.9]), np.array([label]), t,
                               frame([(*back, 30, colour)]))[0]
    return before, after


def test_an_object_back_after_seconds_gets_its_id_back():
    """An object gone for 3 s (past the 1.5 s lost buffer: its track ended) comes back where it left,
    looking as it did: with the frames it gets its ID back (memory.py), also across a restart; an
    object of another colour or class there, one far from where it left, one back after
    recall_seconds, or any without the frames (no colours to know it by) gets a new one."""
    before, after = _leave_and_come_back()
    assert before > 0 and after == before
    assert _leave_and_come_back(restart=True) == (before, before)
    assert _leave_and_come_back(back=(590.0, 260.0))[1] == before  # in again 2 box sizes down and back from where it left
    for changed in ({"colour": (255, 0, 0)}, {"label": 2}, {"back": (400.0, 200.0)}, {"gap": 6.5},
                    {"with_frames": False}, {"config": TrackerConfig(recall_seconds=0)}):
        first, other = _leave_and_come_back(**changed)
        assert other > first, changed  # a new ID: the next one
    # class-agnostic tracking (a detector that flips classes) recalls across classes too
    first, other = _leave_and_come_back(label=2, config=TrackerConfig(per_class=False))
    assert other == first


def _second_reading(offset=(20.0, 20.0), size=30.0, colour=(0, 0, 255), with_frames=True):
    """A red square of class 1 moves right (30 FPS, box A); at frame 10 the detector also gives a
    second box of the class (B, `offset` from A, `size`, `colour`), and from frame 11 only B, which
    the tentative track started by B takes by IoU before the lost track can: B's IDs, frames 10-15."""
    tracker, out = Tracker(), []
    for i in range(16):
        t = i / 30
        a = (100 + 60 * t, 200, 30, (0, 0, 255))
        b = (a[0] + offset[0], a[1] + offset[1], size, colour)
        squares = [a] if i < 10 else [a, b] if i == 10 else [b]
        ids = tracker.update(np.array([_box(cx, cy, s) for cx, cy, s, _ in squares]), np.full(len(squares), 0.9),
                             np.ones(len(squares), np.int64), t, _canvas(squares) if with_frames else None)
        if i == 9:
            assert ids.tolist() == [1]
        if i >= 10:
            out.append(int(ids[-1]))
    return out


def test_a_detectors_second_box_of_an_object_takes_its_id_when_the_first_is_missed():
    """A detector that reads one object as two boxes of its class (A, then A and B, then B alone):
    the track loses A, B's tentative track is confirmed, and with the frames it takes the lost
    track's ID (a lost track's recall: near where it was last seen, its class, size and colours).
    Seen at once, two boxes are one object only near each other (1.5 box sizes): farther apart,
    of another colour or size, or without the frames, B is another object with a new ID."""
    assert _second_reading() == [-1, -1, 1, 1, 1, 1]
    for changed in ({"offset": (60.0, 0.0)}, {"colour": (255, 0, 0)}, {"size": 70.0}, {"with_frames": False}):
        assert _second_reading(**changed) == [-1, -1, 2, 2, 2, 2], changed


def test_remembered_tracks_are_bounded_and_forgotten_on_reset():
    from edge_fpn.runtime.tracking import memory
    tracker = Tracker(TrackerConfig(min_hits=1, lost_seconds=0.05))
    squares = [(20 + 30 * (k % 20), 20 + 30 * (k // 20), 10, (0, 0, 255)) for k in range(300)]
    boxes = np.array([_box(cx, cy, s) for cx, cy, s, _ in squares])
    for t in range(6):  # 300 new objects a frame, each ending 0.1 s later (1500 ended)
        tracker.update(boxes + 1000 * (t % 2), np.full(300, 0.9), np.ones(300, np.int64), t * 0.1, _canvas(squares))
    assert len(tracker._memory) == memory.LIMIT and tracker._memory.ids.max() == tracker.next_id - 301  # the newest kept
    tracker.reset()
    assert len(tracker._memory) == 0
    with pytest.raises(EdgeFpnError, match="not a tracker state"):
        state = tracker.get_state()
        state["remembered"]["hist"] = [[float("nan")] * 64]
        state["remembered"].update(ids=[1], label=[1], box=[[1, 1, 1, 1]], time=[0.0])
        Tracker().set_state(state)


# ---------------------------------------------------------------- the tracker

def _box(cx, cy, size=20.0):
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def _walk(tracker, frames, starts, velocity=(60.0, 0.0), labels=None, dt=1 / 30, t0=0.0):
    """Objects moving in straight lines; returns each frame's IDs."""
    out = []
    for i in range(frames):
        t = t0 + i * dt
        boxes = np.array([_box(x + velocity[0] * t, y + velocity[1] * t) for x, y in starts])
        scores = np.full(len(starts), 0.9)
        out.append(tracker.update(boxes, scores, labels if labels is not None else np.ones(len(starts), np.int64), t))
    return out


def test_ids_are_confirmed_after_min_hits_and_stay():
    tracker = Tracker(TrackerConfig(min_hits=3))
    ids = _walk(tracker, 10, [(50, 50), (200, 100), (300, 300)])
    assert ids[0].tolist() == [-1, -1, -1] and ids[1].tolist() == [-1, -1, -1]
    assert ids[2].tolist() == [1, 2, 3]
    assert all(frame.tolist() == [1, 2, 3] for frame in ids[2:])
    assert tracker.active_tracks == 3
    with_one = Tracker(TrackerConfig(min_hits=1))
    assert _walk(with_one, 1, [(50, 50)])[0].tolist() == [1]


def test_a_confident_object_at_10_fps_is_confirmed_at_its_second_frame():
    # at 10 FPS min_hits (3) is 0.2 s of an object in view with no ID: two matches 0.1 s apart with
    # a running score of early_confirm_score (0.85) confirm it; at 30 FPS two matches span 0.033 s,
    # and min_hits holds; a less confident object (0.75) waits for min_hits at any rate
    def first_id(fps, score, config=None):
        tracker = Tracker(config)
        for i in range(5):
            ids = tracker.update(np.array([_box(100 + 200 * i / fps, 200)]), np.array([score]), np.array([1]), i / fps)
            if ids[0] >= 0:
                return i
    assert first_id(10.0, 0.9) == 1 and first_id(30.0, 0.9) == 2 and first_id(10.0, 0.75) == 2
    assert first_id(10.0, 0.9, TrackerConfig(early_confirm_score=1.0)) == 2
    assert first_id(10.0, 0.9, TrackerConfig(min_hits=1)) == 0
    # a stricter min_hits stays stricter: one match sooner, not at 2
    assert first_id(10.0, 0.9, TrackerConfig(min_hits=5)) == 3 and first_id(30.0, 0.9, TrackerConfig(min_hits=5)) == 3


def test_a_star_never_takes_a_rings_id():
    # a star where a ring was: per class, the star never gets the ring's ID. For reid_seconds (0.45 s)
    # the ring's track takes the star's boxes as the detector's class flip (stage f), shown without
    # an ID; read as a star for longer, it is a star, with an ID of its own
    def ids(config):
        tracker = Tracker(config)
        out = [int(tracker.update(np.array([_box(100, 100)]), np.array([0.9]), np.array([5]), 0.0)[0])]
        for i in range(1, 30):
            out.append(int(tracker.update(np.array([_box(100, 100)]), np.array([0.9]), np.array([4]), i / 30)[0]))
        return out
    flipped = ids(TrackerConfig(min_hits=1))
    assert flipped[0] == 1 and 1 not in flipped[1:]
    first = next(i for i, track_id in enumerate(flipped) if i and track_id >= 0)
    assert flipped[1:first] == [-1] * (first - 1) and 0.45 <= first / 30 <= 0.45 + 2 / 30, flipped
    assert set(flipped[first:]) == {2}
    assert ids(TrackerConfig(min_hits=1, class_flip_iou=0))[1:] == [2] * 29  # (stage f off: a star at once)
    agnostic = Tracker(TrackerConfig(min_hits=1, per_class=False))
    agnostic.update(np.array([_box(100, 100)]), np.array([0.9]), np.array([5]), 0.0)
    assert agnostic.update(np.array([_box(100, 100)]), np.array([0.9]), np.array([4]), 1 / 30).tolist() == [1]


def test_an_id_survives_a_one_frame_class_flip():
    # the detector calls the ring a star for one frame: that detection gets no ID (never the ring's),
    # and the ring's track takes the ring again with the same ID; stage f keeps it on its object
    # through the flip (not lost, its filter fed the star's box), and no star track starts there
    def run(config):
        tracker, ids, lost, tentative = Tracker(config), [], [], []
        for i, label in enumerate([5, 5, 5, 5, 5, 4, 5, 5, 5]):
            ids.append(int(tracker.update(np.array([_box(100 + 3 * i, 100)]), np.array([0.9]), np.array([label]), i / 30)[0]))
            lost.append(bool(tracker.tracks()["lost"].any()))
            tentative.append(len(tracker._x) - len(tracker.tracks()["ids"]))  # (tracks without an ID yet)
        return ids, lost, tentative
    for config in (TrackerConfig(), TrackerConfig(class_flip_iou=0)):
        ids, _, _ = run(config)
        assert ids[2] > 0 and ids[5] == -1
        assert ids[2:5] == [ids[2]] * 3 and ids[6:] == [ids[2]] * 3
    _, lost, tentative = run(TrackerConfig())
    assert not any(lost) and tentative[5] == 0
    _, lost, tentative = run(TrackerConfig(class_flip_iou=0))
    assert lost[5] and tentative[5] == 1  # (off: lost for the frame, and a star track started)


def test_a_class_flip_is_not_taken_from_a_track_of_the_boxes_class():
    # a ring's track missed for a frame, and a star box on it that a star's own track overlaps: the
    # box is the star's (two objects of two classes, one passing the other), not the ring read as a star
    tracker = Tracker()
    for i in range(5):
        tracker.update(np.array([_box(100, 100), _box(112, 100)]), np.array([0.9, 0.9]), np.array([5, 4]), i / 30)
    ids = tracker.update(np.array([_box(112, 100), _box(104, 100)]), np.array([0.9, 0.9]), np.array([4, 4]), 5 / 30)
    # the star's own track takes its box; the second star box overlaps the star track by IoU >= 0.2,
    # so the lost ring's track does not take it by stage f
    tracks = tracker.tracks()
    ring = tracks["labels"] == 5
    assert ids[0] == tracks["ids"][~ring][0] and ids[1] == -1 and tracks["lost"][ring].all()


def test_clutter_scoring_low_never_gets_an_id():
    # a detector's clutter is found again and again but scores lower than a real object: the running
    # score keeps it tentative; a confirmed track whose scores fall keeps its ID but gives it to no
    # detection until they are back
    tracker = Tracker()
    boxes = np.array([_box(100, 100), _box(300, 300)])
    for i in range(60):
        clutter = 0.62 if i % 2 == 0 else 0.45  # found every frame, high every other one
        ids = tracker.update(boxes, np.array([0.95, clutter]), np.array([1, 1]), i / 30)
        assert ids[1] == -1, i
    real = int(ids[0])
    assert real > 0
    faded = [int(tracker.update(boxes[:1], np.array([0.3]), np.array([1]), (60 + i) / 30)[0]) for i in range(15)]
    assert faded[0] == real and faded[-1] == -1  # measured: the running score is under 0.5 after 4 frames
    assert tracker.tracks()["scores"][0] < tracker.config.report_score
    back = [int(tracker.update(boxes[:1], np.array([0.95]), np.array([1]), (75 + i) / 30)[0]) for i in range(10)]
    assert back[-1] == real  # the same ID, not a new one


def test_a_circling_fast_object_keeps_its_id():
    # the "fast" scene's motion: a circle of 150 px radius, 24 px a frame on a 20 px box (its boxes never
    # overlap), so a constant-velocity prediction is off by ~0.3-0.6 box sizes a frame: the track's own
    # acceleration noise follows its surprises (manoeuvre) and the motion stage keeps it
    for fps, frames in ((30.0, 90), (10.0, 30)):
        tracker = Tracker()
        omega = 24 * 30.0 / 150  # rad/s
        ids = []
        for i in range(frames):
            t = i / fps
            ids.append(int(tracker.update(np.array([_box(320 + 150 * math.cos(omega * t), 240 + 150 * math.sin(omega * t))]),
                                          np.array([0.9]), np.array([1]), t)[0]))
        assert len(set(ids[3:])) == 1 and ids[-1] > 0, (fps, ids)


def _circle(tracker, fps, frames, missed=(), omega=4.8, radius=150.0):
    """An object circling at `omega` rad/s seen at `fps`, missed on the frames in `missed`; its IDs."""
    ids = []
    for i in range(frames):
        t = i / fps
        boxes = np.array([_box(320 + radius * math.cos(omega * t), 240 + radius * math.sin(omega * t))]).reshape(-1, 4)
        if i in missed:
            boxes = np.zeros((0, 4))
        found = tracker.update(boxes, np.full(len(boxes), 0.9), np.ones(len(boxes), np.int64), t)
        ids.append(int(found[0]) if len(found) else None)
    return ids


def test_a_turning_object_at_10_fps_keeps_its_id_through_missed_frames():
    # 0.48 rad and 3.6 box sizes a frame at 10 FPS, missed for 0.4 s at a time: a constant-velocity
    # prediction runs off the circle (1.7 box sizes after one frame, ~15 after four). The coordinated
    # turn (the track's own turn rate) follows the circle, and a lost track is found again within the
    # reach of its speed; either keeps the ID. Without both, the object gets a new ID after each gap
    missed = {8, 14, 15, 16, 25, 26, 27}
    for config in (TrackerConfig(), TrackerConfig(turn_gain=0.0), TrackerConfig(reid_reach=0.0)):
        ids = _circle(Tracker(config), 10.0, 40, missed)
        seen = [i for i in ids[3:] if i is not None]
        assert len(set(seen)) == 1 and seen[0] > 0, (config, ids)
    old = _circle(Tracker(TrackerConfig(turn_gain=0.0, reid_reach=0.0)), 10.0, 40, missed)
    assert len({i for i in old[3:] if i is not None}) > 1, old


def test_the_turn_rate_is_learned_and_a_bounce_is_not_a_turn():
    tracker = Tracker(TrackerConfig(min_hits=1))
    _circle(tracker, 30.0, 30, omega=4.8)
    assert tracker.get_state()["tracks"]["turn"][0][0] == pytest.approx(4.8, rel=0.1)  # rad/s
    # a straight object reflected at a wall: the chord turns by pi at once, the rate goes back to 0
    tracker = Tracker(TrackerConfig(min_hits=1))
    for i in range(20):
        x = 100 + 300 * (i / 30) if i < 10 else 100 + 300 * (18 / 30) - 300 * ((i - 8) / 30)
        tracker.update(np.array([_box(x, 200)]), np.array([0.9]), np.array([1]), i / 30)
        if i == 10:
            assert tracker.get_state()["tracks"]["turn"][0][0] == 0.0
    assert tracker.get_state()["tracks"]["turn"][0][0] == 0.0  # and a straight path teaches no turn
    # a circling object seen again after two missed frames at 10 FPS: its chords turn 1.2 rad, past
    # max_turn_angle, but by as much as its own rate foresees over that time: still a turn, not a bounce
    # (the rate was reset there, and the prediction ran straight off the circle)
    tracker = Tracker(TrackerConfig(min_hits=1))
    _circle(tracker, 10.0, 13, missed={10, 11}, omega=6.0)
    assert tracker.get_state()["tracks"]["turn"][0][0] == pytest.approx(6.0, rel=0.15)


def test_a_box_read_as_cut_teaches_no_turn():
    # a straight mover at 10 FPS whose last box before it hides comes back short (jitter: top edge 5
    # px in, bottom 7 px): read as a partial view and made whole from the top edge, its centre is 5
    # px off the path, and the turn learned from that guess (0.55 rad/s; 1.4 on the "occlude" scene,
    # where it bent a hidden object's prediction out of the frame) turned the hidden track's
    # predicted path; learned from the box as measured (1 px off) it is a fifth of that
    def last_turn(cut):
        tracker = Tracker()
        for i in range(10):
            t, cx = i / 10, 100 + 30 * i
            top, bottom = cut if i == 9 else (0.0, 0.0)
            box = [cx - 15, 200 - 15 + top, cx + 15, 200 + 15 - bottom]
            tracker.update(np.array([box], np.float32), np.array([0.9], np.float32), np.array([1]), t)
        return tracker.get_state()["tracks"]["turn"][0][0], tracker._cut[0, 1]
    rate, cut_for = last_turn((5.0, 7.0))
    assert cut_for > 0  # (the last box was taken as a partial view)
    assert abs(rate) < 0.2
    assert last_turn((-1.0, 1.0)) == (pytest.approx(rate, abs=0.02), 0.0)  # the same box as measured, not cut


def _bounce(config, wall, jump=0.0):
    """An object at 300 px/s seen at 10 FPS, reflected at x = `wall` (and moved `jump` px down there); its IDs."""
    tracker = Tracker(config)
    ids = []
    for i in range(20):
        t = i / 10
        x, y = 400 + 300 * t, 200.0
        if x > wall:
            x, y = 2 * wall - x, 200.0 + jump
        ids.append(int(tracker.update(np.array([_box(x, y)]), np.array([0.9]), np.array([1]), t)[0]))
    return ids


def test_an_object_back_from_a_bounce_keeps_its_id_though_its_first_box_started_a_new_track():
    # at 10 FPS the box after a bounce is 2 box sizes behind the prediction, but within the object's
    # own speed of its last centre: the track takes it (by the speed of its last chord: the filter's
    # velocity was already slowed by a bounce inside the frame interval) and the ID never drops
    assert _bounce(TrackerConfig(), 630.0)[2:] == [1] * 18
    # thrown 55 px sideways at the wall, the first box is out of that reach: a new tentative track
    # takes it, and by IoU the next ones, before the lost track can; it takes the lost track's ID, as
    # it was born within the reach of that track's speed of where it was last seen
    ids = _bounce(TrackerConfig(), 630.0, jump=55.0)
    assert set(ids[2:]) == {1, -1} and ids[-1] == 1, ids
    # an object known, back: its new track takes the ID at its second box (inherit_hits), one frame
    # (0.1 s) before it would be confirmed as a new object (early confirmation off: it would too)
    plain = TrackerConfig(early_confirm_score=1.0)
    assert _bounce(plain, 630.0, jump=55.0).count(-1) == 3
    assert _bounce(TrackerConfig(early_confirm_score=1.0, inherit_hits=3), 630.0, jump=55.0).count(-1) == 4
    assert ids.count(-1) == 2  # (with it, the object's first track has its ID at its second box too)
    assert _bounce(TrackerConfig(inherit=False), 630.0, jump=55.0)[-1] == 2
    # one that appears farther than the lost object can have gone is another object
    assert _bounce(TrackerConfig(), 630.0, jump=150.0)[-1] == 2


def test_a_lost_track_is_found_again_only_within_its_speeds_reach():
    # an object at 60 px/s is missed for 0.3 s: a detection of its class 100 px from where it was last
    # seen is farther than it can have gone (1.2 x 60 x 0.3 + 1.5 box sizes = 52 px): a new object
    for distance, same in ((15.0, True), (100.0, False)):
        tracker = Tracker()
        first = _walk(tracker, 10, [(100, 100)], velocity=(60.0, 0.0), dt=1 / 10)[-1][0]
        t = 0.9 + 0.3
        found = tracker.update(np.array([_box(100 + 60 * 0.9, 100 + distance)]), np.array([0.9]), np.array([1]), t)
        assert first > 0 and (found[0] == first) == same, (distance, found)


def test_a_lost_track_does_not_take_a_new_object_elsewhere():
    # an object leaves the frame on the right; half a second later another one of its class enters
    # 150 px below where it left: a new object, not the lost track (its prediction is vague by then)
    tracker = Tracker()
    first = _walk(tracker, 20, [(440, 40)], velocity=(300.0, 0.0), dt=1 / 30)[-1][0]
    t = 20 / 30 + 0.5
    later = [int(tracker.update(np.array([_box(620 - 5 * i, 190)]), np.array([0.9]), np.array([1]), t + i / 30)[0])
             for i in range(5)]
    assert first > 0 and later[-1] > 0 and first not in later


def _behind_an_occluder(config, frames=40, speed=300.0, occluder=(300.0, 380.0)):
    """A 40 px object moving right at `speed` px/s behind an occluder: its boxes are the part still
    seen (cut at the occluder's edge; none under 8 px), as a detector gives them. Returns each frame's
    (IDs, the track's centre velocity in x or None)."""
    tracker = Tracker(config)
    out = []
    for i in range(frames):
        t = i / 30
        left, right = 100 + speed * t - 20, 100 + speed * t + 20
        seen = [(a, b) for a, b in ((left, min(right, occluder[0])), (max(left, occluder[1]), right)) if b - a >= 8]
        boxes = np.array([[seen[0][0], 100.0, seen[0][1], 140.0]]) if seen else np.zeros((0, 4))
        ids = tracker.update(boxes, np.full(len(boxes), 0.9), np.ones(len(boxes), np.int64), t)
        tracks = tracker.tracks()
        out.append((ids, float(tracks["velocities"][0, 0]) if len(tracks["ids"]) else None))
    return out


def test_a_partly_hidden_object_keeps_its_velocity_and_its_id():
    # the box of an object sliding behind an occluder shrinks towards the edge it still shows: taken as
    # it is, it drags the track's centre, velocity and size (here to 164 px/s and a 5 px box while
    # hidden) and the object comes back as a new one; taken whole from the edge that agrees with the
    # prediction, the track goes on behind the occluder and keeps its ID
    whole = _behind_an_occluder(TrackerConfig())
    hidden = [velocity for ids, velocity in whole if not len(ids)]
    assert hidden and min(hidden) >= 0.8 * 300, hidden  # measured 275 px/s
    assert {int(i) for ids, _ in whole for i in ids if i >= 0} == {1}
    as_seen = _behind_an_occluder(TrackerConfig(partial_edge=0))
    assert min(v for ids, v in as_seen if not len(ids) and v is not None) < 0.6 * 300
    assert {int(i) for ids, _ in as_seen for i in ids if i >= 0} == {1, 2}


def test_a_lost_track_behind_an_object_seen_now_or_out_of_the_frame_is_hidden():
    # a program that shows lost tracks' predicted boxes (coasting) should not show an object that is
    # behind another one or has left the view: in the "occlude" scene those were 3 of 4 coasted boxes
    # that covered no object
    tracker = Tracker(TrackerConfig())
    occluder, behind, free = _box(300, 200, 200), _box(310, 200, 20), _box(80, 80, 20)
    for i in range(12):
        t = i / 30
        leaving = _box(500 + 300 * t, 400, 30)
        tracker.update(np.array([occluder, behind, free, leaving]), np.full(4, 0.9), np.ones(4, np.int64), t)
    tracker.update(np.array([occluder]), np.array([0.9]), np.array([1]), 0.5)  # the others missed for 0.13 s
    tracks = tracker.tracks()
    by_id = dict(zip(tracks["ids"].tolist(), zip(tracks["lost"].tolist(), tracks["hidden"].tolist())))
    assert by_id == {1: (False, False), 2: (True, True), 3: (True, False), 4: (True, False)}, by_id
    framed = tracker.tracks(frame_size=(640, 480))
    assert framed["hidden"].tolist() == [False, True, False, True]  # 4's box is now mostly right of x = 640
    assert np.array_equal(framed["boxes"], tracks["boxes"])
    for bad in ("640x480", (0, 480), (640,), (float("nan"), 480)):
        with pytest.raises(EdgeFpnError, match="frame_size must be"):
            Tracker().tracks(frame_size=bad)  # (checked with no track to hide as well)


def test_a_lost_track_inside_another_ones_box_that_the_frame_still_shows_is_not_hidden():
    # a small red object in front of a large blue one, missed by the detector for a frame: its
    # predicted box is inside the blue one's, but the frame shows red there, so it is in sight (and a
    # box to show); where the frame shows blue it is behind. On noisy ground truth of "hard" (tuning
    # seeds 4-9) 167 of 544 hidden boxes covered their object; this shows 161 of them and 6 others
    blue, red = (300, 200, 200, (255, 0, 0)), (310, 200, 20, (0, 0, 255))
    in_front, behind = _canvas([blue, red]), _canvas([blue])

    def red_after_a_miss(image, config=TrackerConfig(), frames=True):
        tracker = Tracker(config)
        for i in range(12):
            tracker.update(np.array([_box(300, 200, 200), _box(310, 200, 20)]), np.full(2, 0.9), np.ones(2, np.int64),
                           i / 30, in_front if frames else None)
        ids = tracker.update(np.array([_box(300, 200, 200)]), np.array([0.9]), np.array([1]), 0.4,
                             image if frames else None)
        tracks = tracker.tracks((640, 480))
        assert ids.tolist() == [1] and tracks["ids"].tolist() == [1, 2] and tracks["lost"].tolist() == [False, True]
        return bool(tracks["hidden"][1])
    assert not red_after_a_miss(in_front)
    assert red_after_a_miss(behind)
    assert red_after_a_miss(in_front, TrackerConfig(in_sight_share=0))  # (off)
    assert red_after_a_miss(in_front, frames=False)  # (no frame: the boxes alone say hidden)
    assert red_after_a_miss(in_front, TrackerConfig(appearance_veto=0))  # (no colours kept)
    for bad in (-0.1, 1.5, "0.6"):
        with pytest.raises(EdgeFpnError, match="in_sight_share must be between 0 and 1"):
            TrackerConfig(in_sight_share=bad)


def test_a_lost_track_predicted_far_from_its_last_match_is_guessed():
    # at 10 FPS a fast object (here 3 box sizes a frame, the "fast" scene's) missed for a frame is
    # predicted 3 box sizes on: where it is now is a guess (on noisy ground truth of that scene 1 in 7
    # such boxes covered their object, and leaving them out of coasting took its IDF1 at 10 FPS
    # 0.861 -> 0.890, tuning seeds); a slow one missed for a frame is not
    def lost_after_a_miss(speed, config=TrackerConfig()):
        tracker = Tracker(config)
        for i in range(6):
            tracker.update(np.array([_box(100 + speed * i / 10, 200, 20)]), np.array([0.9]), np.array([1]), i / 10)
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.6)
        tracks = tracker.tracks(frame_size=(640, 480))
        assert tracks["lost"].tolist() == [True] and not tracks["hidden"].any()
        return bool(tracks["guessed"][0])
    assert lost_after_a_miss(600.0)  # 60 px a frame, 20 px box
    assert not lost_after_a_miss(300.0)  # 1.5 box sizes
    assert not lost_after_a_miss(600.0, TrackerConfig(coast_reach=0))  # (off)
    assert lost_after_a_miss(300.0, TrackerConfig(coast_reach=1))
    seen = Tracker()
    seen.update(np.array([_box(100, 200, 20)]), np.array([0.9]), np.array([1]), 0.0)
    assert seen.tracks()["guessed"].dtype == bool


def _edge_track(velocity: float, width: float = 40.0):
    """A tracker that followed a 40 px object leaving a 640 x 480 frame to the left at `velocity`
    (px/s, < 0), its boxes cut at x = 0 as a detector sees them until under half of it shows, then
    missed it for a frame. Returns the lost track's (box, hidden) from tracks(frame_size)."""
    tracker = Tracker(TrackerConfig())
    t, cx = 0.0, 120.0
    while cx + width / 2 - max(cx - width / 2, 0.0) >= width / 2:
        tracker.update(np.array([[max(cx - width / 2, 0.0), 200.0, cx + width / 2, 240.0]]), np.array([0.9]),
                       np.array([1]), t)
        t, cx = t + 1 / 30, cx + velocity / 30
    tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), t)
    tracks = tracker.tracks(frame_size=(640, 480))
    assert tracks["lost"].tolist() == [True]
    return tracks["boxes"][0], bool(tracks["hidden"][0])


def test_a_lost_track_leaving_the_frame_is_hidden_though_mostly_inside():
    # the object has gone under half seen (no detection, and no ground-truth box), but its track was
    # measured cut by the edge on its way out, so its predicted box is smaller than the object and
    # still mostly inside: on the "exit" scene 427 of the 455 coasted boxes that covered no object were
    # such boxes (noisy ground truth, seeds 4-16), and hiding them took its IDF1 with coasting 0.945 -> 0.953
    box, hidden = _edge_track(-210.0)  # (the speed of the "exit" scene's objects)
    inside = (box[2] - max(box[0], 0.0)) / (box[2] - box[0])
    assert 0.5 <= inside < 0.9, box  # (the old rule, more than half out, would show it)
    assert hidden
    # the rule itself: poking out by a quarter is leaving only through an edge it moves towards
    from edge_fpn.runtime.tracking.geometry import out_of_frame
    boxes = np.array([[-10.0, 200, 30, 240]] * 3 + [[600.0, 460, 640, 490]] * 2 + [[-30.0, 200, 10, 240]])
    velocities = np.array([[-50.0, 0], [50, 0], [0, 80], [0, 60], [0, -60], [50, 0]])
    # 75% inside: leaving to the left, entering, along the edge; 67% inside: leaving at the bottom,
    # coming up; 25% inside: out, whichever way it moves
    assert out_of_frame(boxes, velocities, 640, 480).tolist() == [True, False, False, True, False, True]
    assert not out_of_frame(np.array([[5.0, 5, 45, 45]]), np.array([[-500.0, -500]]), 640, 480).any()


def test_tentative_seconds_are_seconds_whatever_the_float_error_of_the_timestamps():
    # 0.8 - 0.7 is 0.10000000000000009: a tentative track allowed 0.1 s of misses survives one missed
    # frame at 10 FPS; allowed 0.09 s (the default: two frames at 30 FPS) it does not
    def seen_after_a_miss(tentative_seconds):
        tracker = Tracker(TrackerConfig(min_hits=2, tentative_seconds=tentative_seconds))
        box, one = np.array([_box(100, 100)]), np.array([1])
        tracker.update(box, np.array([0.9]), one, 0.7)
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.8)
        return int(tracker.update(box, np.array([0.9]), one, 0.9)[0])
    assert seen_after_a_miss(0.1) == 1 and seen_after_a_miss(0.09) == -1


def _twins_and_an_occluder(config):
    """At 10 FPS object A (class 4) goes left behind a big occluder (class 2) and comes out on its
    left 0.9 s later; 0.2 s after A went behind, object B of A's class comes out on the occluder's
    right, 100 px from where A was last seen. Returns A's IDs and B's IDs."""
    tracker = Tracker(config)
    a_ids, b_ids = [], []
    for i in range(20):
        t = i / 10
        boxes, labels, who = [[200.0, 100.0, 440.0, 380.0]], [2], ["occluder"]
        ax = 600 - 300 * t
        if ax >= 450 or ax <= 190:
            boxes.append(_box(ax, 190, 30)); labels.append(4); who.append("a")
        if t >= 0.7 - 1e-9:
            boxes.append(_box(440 + 300 * (t - 0.7), 290, 30)); labels.append(4); who.append("b")
        ids = tracker.update(np.array(boxes), np.full(len(boxes), 0.9), np.array(labels), t)
        a_ids += [int(k) for k, w in zip(ids, who) if w == "a"]
        b_ids += [int(k) for k, w in zip(ids, who) if w == "b"]
    return a_ids, b_ids


def test_a_track_hidden_behind_an_object_seen_now_is_not_refound_off_its_path():
    # B is within the reach of A's speed of where A was last seen, so re-finding (stage e) would give
    # it A's ID, and A would come back as a new object; but A is predicted behind the occluder, seen
    # now: out of sight, not off its path. B is another object, and A keeps its ID through 0.9 s behind
    a_ids, b_ids = _twins_and_an_occluder(TrackerConfig())
    assert a_ids[2:] == [2] * 10 and b_ids[2:] == [3] * 11, (a_ids, b_ids)
    a_ids, b_ids = _twins_and_an_occluder(TrackerConfig(hidden_cover=0))  # (never hidden)
    assert b_ids == [2] * 13 and a_ids[-1] == 3, (a_ids, b_ids)


def test_low_score_detection_keeps_a_track_but_never_starts_one():
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(np.array([_box(100, 100)]), np.array([0.9]), None, 0.0)
    # half hidden: the score drops under the high threshold, the second stage keeps the ID
    assert tracker.update(np.array([_box(102, 100)]), np.array([0.3]), None, 1 / 30).tolist() == [1]
    # a low-score detection elsewhere starts nothing
    assert tracker.update(np.array([_box(400, 400)]), np.array([0.3]), None, 2 / 30).tolist() == [-1]
    assert tracker.update(np.array([_box(400, 400)]), np.array([0.3]), None, 3 / 30).tolist() == [-1]


def test_lost_buffer_is_in_seconds_not_frames():
    config = TrackerConfig(min_hits=1, lost_seconds=0.5)
    for fps in (30.0, 5.0):  # the same 0.4 s gap is kept, the same 0.7 s gap is not, at any frame rate
        for gap, same in ((0.4, True), (0.7, False)):
            tracker = Tracker(config)
            first = _walk(tracker, 3, [(100, 100)], velocity=(0.0, 0.0), dt=1 / fps)[-1]
            t = 2 / fps
            while t + 1 / fps < 2 / fps + gap:  # frames with nothing detected
                t += 1 / fps
                tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), t)
            after = tracker.update(np.array([_box(100, 100)]), np.array([0.9]), np.array([1]), 2 / fps + gap)
            assert (after[0] == first[0]) == same, (fps, gap)


def test_timestamps_drive_the_motion_model():
    # an object at 300 px/s seen at irregular intervals (a live source dropping frames) keeps its ID,
    # and its velocity is measured in pixels per second
    tracker = Tracker(TrackerConfig(min_hits=1))
    rng = np.random.default_rng(0)
    t, ids = 0.0, []
    for _ in range(30):
        ids.append(int(tracker.update(np.array([_box(50 + 300 * t, 200)]), np.array([0.9]), None, t)[0]))
        t += float(rng.choice([1 / 30, 2 / 30, 4 / 30]))
    assert set(ids) == {1}
    # measured 300.0; 5% is room for the filter's settling, a velocity per frame (10-20 here) is far off
    assert tracker.tracks()["velocities"][0][0] == pytest.approx(300, rel=0.05)


def test_fast_object_whose_boxes_never_overlap_keeps_its_id():
    # 20 px box moving 30 px a frame: IoU with the last box is 0 every frame
    tracker = Tracker(TrackerConfig(min_hits=3))
    ids = _walk(tracker, 15, [(30, 200)], velocity=(900.0, 0.0))
    assert ids[-1][0] > 0 and len({int(i[0]) for i in ids[2:]}) == 1


def test_ids_unique_for_the_trackers_life_and_reset():
    tracker = Tracker(TrackerConfig(min_hits=1))
    first = _walk(tracker, 3, [(50, 50), (200, 200)])[-1]
    tracker.reset()
    assert tracker.active_tracks == 0
    # after a reset time may start again, and IDs go on: never one given twice
    second = _walk(tracker, 3, [(50, 50), (200, 200)])[-1]
    assert set(first.tolist()).isdisjoint(second.tolist())
    tracker.reset(restart_ids=True)
    assert _walk(tracker, 1, [(50, 50)])[0].tolist() == [1]


def test_state_saved_as_json_and_restored_continues_identically():
    a = Tracker()
    _walk(a, 8, [(50, 50), (200, 100), (300, 300)])
    state = json.loads(json.dumps(a.get_state()))  # through JSON, as a program would store it
    b = Tracker()
    b.set_state(state)
    later_a = _walk(a, 5, [(50, 50), (200, 100), (300, 300), (500, 400)], t0=8 / 30)
    later_b = _walk(b, 5, [(50, 50), (200, 100), (300, 300), (500, 400)], t0=8 / 30)
    for x, y in zip(later_a, later_b):
        assert x.tolist() == y.tolist()
    assert a.next_id == b.next_id
    with pytest.raises(EdgeFpnError, match="not a tracker state"):
        Tracker().set_state({"version": 1})
    with pytest.raises(EdgeFpnError, match="version"):
        Tracker().set_state(dict(state, version=99))


def test_a_box_cut_for_long_keeps_its_size():
    # an object that grew (coming nearer), then slides behind something on its right for a second:
    # its box, made whole from the edge it still shows, keeps the size it had, and does not go on
    # growing by the size velocity it had (the filter fed its own predicted size: twice the object)
    tracker = Tracker()
    dt = 1 / 30
    for i in range(40):
        t = i * dt
        left = 100 + 60 * t
        width = 40 + 60 * t if i < 10 else 20  # growing, then cut on the right
        tracker.update(np.array([[left, 200, left + width, 240]]), np.array([0.9]), None, t)
    tracks = tracker.tracks()
    assert tracks["ids"].tolist() == [1]
    box = tracks["boxes"][0]
    full = 40 + 60 * 9 * dt  # its last whole width
    assert abs((box[2] - box[0]) - full) < 0.15 * full, box
    # cut for longer than partial_seconds (2 s): what it shows is its size now (or the size the
    # track held was wrong): the box is taken as it is
    for i in range(40, 100):
        t = i * dt
        tracker.update(np.array([[100 + 60 * t, 200, 120 + 60 * t, 240]]), np.array([0.9]), None, t)
    box = tracker.tracks()["boxes"][0]
    assert abs((box[2] - box[0]) - 20) < 5, box
    state = json.loads(json.dumps(tracker.get_state()))  # (the time each axis has been cut is in the state)
    assert len(state["tracks"]["cut"]) == 1


def _moving(t):
    """Three objects on straight lines at time t (seconds): boxes, scores, labels."""
    boxes = np.array([_box(x + 60.0 * t, y) for x, y in [(50, 50), (200, 100), (300, 300)]])
    return boxes, np.full(3, 0.9), np.ones(3, np.int64)


def test_state_resumed_on_a_new_clock_continues_identically():
    # a restart: the frames' clock starts again (a video from 0, a camera after a reboot); the
    # state says how long it was saved (resume_after) and every time it holds moves with the clock
    a = Tracker()
    for i in range(8):
        a.update(*_moving(100 + i / 30), timestamp=100 + i / 30)
    state = json.loads(json.dumps(a.get_state()))
    b = Tracker()
    with pytest.raises(EdgeFpnError, match="before the last frame"):  # without resume_after: the old clock
        b.set_state(state)
        b.update(*_moving(100 + 8 / 30), timestamp=0.0)
    b.set_state(state, resume_after=1 / 30)
    for i in range(8, 20):
        t = 100 + i / 30
        assert a.update(*_moving(t), timestamp=t).tolist() == b.update(*_moving(t), timestamp=t - 100 - 8 / 30).tolist()
    assert a.next_id == b.next_id == 4
    # saved for longer than lost_seconds: the objects are let go, and new IDs follow the old ones
    c = Tracker()
    c.set_state(state, resume_after=60.0)
    ids = [c.update(*_moving(100 + i / 30), timestamp=i / 30) for i in range(8, 14)]
    assert ids[0].tolist() == [-1, -1, -1] and sorted(ids[-1].tolist()) == [4, 5, 6]
    for bad in (-1.0, float("nan"), "soon"):
        with pytest.raises(EdgeFpnError, match="resume_after"):
            Tracker().set_state(state, resume_after=bad)


def test_state_resumed_while_an_ambiguity_waits_continues_identically():
    from edge_fpn.tracking_eval import ground_truth_sequence, noisy_detections
    truth, images = ground_truth_sequence("hard", 300, seed=2, images=True)
    frames, images = noisy_detections(truth, seed=2)[::3], images[::3]
    a = Tracker()
    for index, ((t, boxes, scores, labels), image) in enumerate(zip(frames, images)):
        a.update(boxes, scores, labels, t, image)
        if a.get_state()["waiting"] and a.get_state()["remembered"]["time"]:
            break  # (an ambiguity waiting and ended tracks remembered: their times move too)
    else:
        pytest.fail("no ambiguity with ended tracks remembered in this sequence: the test needs one")
    b = Tracker()
    start = frames[index + 1][0]
    b.set_state(json.loads(json.dumps(a.get_state())), resume_after=start - frames[index][0])
    for (t, boxes, scores, labels), image in list(zip(frames, images))[index + 1:]:
        assert a.update(boxes, scores, labels, t, image).tolist() == b.update(boxes, scores, labels, t - start, image).tolist()
    # every time b holds is a's on the new clock: last and first sightings, the memory of ended tracks
    sa, sb = a.get_state(), b.get_state()
    assert sb["time"] == pytest.approx(sa["time"] - start)
    for name in ("last_seen", "born"):
        assert np.allclose(np.asarray(sb["tracks"][name]), np.asarray(sa["tracks"][name]) - (start if name == "last_seen" else [start, 0, 0]))
    assert np.allclose(sb["remembered"]["time"], np.asarray(sa["remembered"]["time"]) - start)


def test_bad_input_is_one_sentence_and_loses_nothing():
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(np.array([_box(100, 100)]), np.array([0.9]), None, 1.0)
    before = json.dumps(tracker.get_state())
    bad = [
        ((np.array([_box(100, 100)]), np.array([0.9]), None, 0.5), "before the last frame"),
        ((np.array([_box(100, 100)]), np.array([0.9]), None, float("nan")), "not finite"),
        ((np.array([_box(100, 100)]), np.array([0.9]), None, None), "timestamp"),
        ((np.array([[np.nan, 0, 10, 10]]), np.array([0.9]), None, None), "timestamp"),  # (its NaN box not counted)
        ((np.zeros((2, 3)), np.array([0.9, 0.8]), None, 2.0), "shapes do not agree"),
        ((np.array([_box(100, 100)]), np.array([0.9, 0.8]), None, 2.0), "shapes do not agree"),
        ((np.array([_box(100, 100)]), np.array([0.9]), np.array([1.5]), 2.0), "integers"),
        ((np.array([_box(100, 100)]), np.array([0.9]), np.array([True]), 2.0), "not bool"),  # a mask passed as labels
        ((np.array([_box(100, 100)]), np.array(["a"]), None, 2.0), "not numeric"),
        ((None, None, None, 2.0), "boxes"),
        ((np.array([_box(100, 100)]), np.array([0.9]), None, "2.0"), "not a number of seconds"),
        # nanoseconds, or a jump that overflowed the filter (dt ** 3) after the time was taken
        ((np.array([_box(100, 100)]), np.array([0.9]), None, 1.7e18), "nanoseconds"),
        ((np.array([_box(100, 100)]), np.array([0.9]), None, 1e110), "beyond"),
    ]
    for args, message in bad:
        with pytest.raises(EdgeFpnError, match=message) as info:
            tracker.update(*args)
        assert "\n" not in str(info.value)
        assert json.dumps(tracker.get_state()) == before  # nothing changed, nothing lost
    # NaN and empty boxes are left out (ID -1) and counted; the good detection next to them keeps its ID
    boxes = np.array([[np.nan, 0, 10, 10], _box(101, 100), [5, 5, 5, 9]])
    ids = tracker.update(boxes, np.array([0.9, 0.9, 0.9]), None, 1.1)
    assert ids.tolist() == [-1, 1, -1] and tracker.skipped_detections == 2
    # a box far out (its area overflows at 1e154) is garbage like NaN; a score over 1 is taken as 1:
    # either, taken as it was, left a state that set_state refused
    boxes = np.array([_box(102, 100), [1e300, 1e300, 1.1e300, 1.1e300], [-2e6, 0, 30, 30], _box(300, 300)])
    ids = tracker.update(boxes, np.array([0.9, 0.9, 0.9, 7.0]), None, 1.15)
    assert ids.tolist() == [1, -1, -1, 2] and tracker.skipped_detections == 4
    assert tracker.get_state()["tracks"]["score"][-1] == 1.0
    Tracker().set_state(json.loads(json.dumps(tracker.get_state(), allow_nan=False)))
    # empty frames, in any shape numpy gives them
    assert tracker.update(np.zeros((0, 4)), np.zeros(0), None, 1.2).shape == (0,)
    assert tracker.update([], [], None, 1.3).shape == (0,)
    for field, value in (("min_hits", 0), ("low_threshold", 0.9), ("lost_seconds", -1.0), ("high_threshold", 2.0),
                         ("partial_ratio", 1.5), ("partial_edge", float("nan")), ("inherit_hits", 0),
                         ("early_confirm_score", 1.2), ("early_confirm_seconds", -0.1), ("filter_first", "yes"), ("per_class", 1),
                         ("acceleration_noise", 1e308), ("initial_velocity", 1e7), ("max_manoeuvre", 1e300),
                         ("max_manoeuvre", "x"),
                         # (found by test_tracking_fuzz.py: each overflowed, or left a state set_state refused)
                         ("manoeuvre", 1e30), ("turn_gain", 2.0), ("max_size_ratio", float("inf")),
                         ("measurement_noise", 1e-9), ("motion_gate", 1e300), ("reid_reach", 1e7)):
        with pytest.raises(EdgeFpnError, match=field):
            TrackerConfig(**{field: value})


@pytest.mark.parametrize("field, value, message", [
    ("time", float("inf"), "non-finite"), ("time", -1e300, "beyond"), ("score", float("nan"), "non-finite"),
    ("score", 5.0, "outside 0-1"), ("q", float("nan"), "non-finite"), ("q", 0.0, "noise scales"),
    ("turn", float("nan"), "non-finite"), ("last_seen", 1e200, "beyond"), ("born", float("inf"), "non-finite"),
    # (found by test_tracking_fuzz.py: each, taken, put inf and NaN into the tracks on the next frames)
    ("x", 1e30, "boxes beyond"), ("P", 1e45, "variances beyond"), ("P", -1.0, "not positive semi-definite"),
    ("ids", 2.0 ** 70, "not a tracker state")])
def test_state_with_bad_numbers_is_refused_and_loses_nothing(field, value, message):
    # (each of these, taken, broke the tracker for good: every ID withheld, every frame refused, an
    # OverflowError from the filter on every frame)
    source = Tracker()
    for i in range(4):
        source.update(np.array([_box(100 + i, 100)]), np.array([0.9]), None, i / 30)
    state = json.loads(json.dumps(source.get_state()))
    if field == "time":
        state["time"] = value
    else:
        values = np.array(state["tracks"][field], np.float64)
        values.flat[0] = value
        state["tracks"][field] = values.tolist()
    tracker = Tracker()
    tracker.update(np.array([_box(10, 10)]), np.array([0.9]), None, 0.0)
    before = json.dumps(tracker.get_state())
    with pytest.raises(EdgeFpnError, match=message) as info:
        tracker.set_state(state)
    assert "\n" not in str(info.value) and json.dumps(tracker.get_state()) == before


def test_state_that_is_not_a_dict_says_what_to_pass():
    state = json.dumps(Tracker().get_state())
    with pytest.raises(EdgeFpnError, match="json.loads"):
        Tracker().set_state(state)
    with pytest.raises(EdgeFpnError, match="not NoneType"):
        Tracker().set_state(None)


def test_a_thousand_detections_in_one_frame():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1900, (1000, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (1000, 2))], axis=1)
    scores = rng.uniform(0.05, 1.0, 1000)
    tracker = Tracker()  # max_detections 300: the best 300 take part, the rest get -1
    labels = rng.integers(1, 6, 1000)
    for i in range(4):
        ids = tracker.update(boxes + i, scores, labels, i / 30)
    assert ids.shape == (1000,)
    taking_part = np.argsort(-scores)[:300]
    confident = taking_part[scores[taking_part] >= tracker.config.new_track_threshold]
    assert (ids[confident] > 0).mean() > 0.9  # measured: all 300 of them
    outside = np.setdiff1d(np.arange(1000), taking_part)
    assert (ids[outside] == -1).all()
    assert len(set(ids[ids > 0].tolist())) == int((ids > 0).sum())  # one ID, one detection


def test_tracker_imports_no_scipy():
    import subprocess
    import sys
    code = ("import sys, numpy as np; from edge_fpn.runtime.tracking import Tracker; "
            "Tracker().update(np.zeros((1,4))+[0,0,9,9], np.ones(1), None, 0.0); "
            "print(any(m.split('.')[0] in ('scipy', 'lap', 'filterpy', 'torch') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- ground truth from the synthetic camera

def test_ground_truth_ids_and_motions():
    from edge_fpn.runtime.synthetic import MOTIONS, SyntheticCamera
    for motion in MOTIONS:
        camera = SyntheticCamera(320, 240, 30.0, seed=3, motion=motion)
        boxes, labels, ids = camera.ground_truth_tracks(10)
        np.testing.assert_array_equal(boxes, camera.ground_truth(10)[0])
        assert ids.shape == labels.shape and len(set(ids.tolist())) == len(ids)
    # drift keeps every ID for good (the default scene is unchanged: same frames as before)
    camera = SyntheticCamera(320, 240, 30.0, seed=3)
    assert set(camera.ground_truth_tracks(0)[2].tolist()) == set(camera.ground_truth_tracks(90)[2].tolist())


def _track_history(camera, frames):
    seen = {}
    for i in range(frames):
        boxes, labels, ids = camera.ground_truth_tracks(i)
        for box, label, oid in zip(boxes, labels, ids.tolist()):
            seen.setdefault(oid, []).append((i, box, int(label)))
    return seen


def test_motions_break_trackers_as_advertised():
    from edge_fpn.runtime.synthetic import SyntheticCamera
    # occlude: an object disappears for >= 0.3 s, then shows again under the same ID
    seen = _track_history(SyntheticCamera(640, 480, 30.0, seed=1, motion="occlude"), 150)
    gaps = [b[0] - a[0] for frames in seen.values() for a, b in zip(frames, frames[1:])]
    assert max(gaps) >= 9
    # exit: objects leave and new ones enter
    camera = SyntheticCamera(640, 480, 30.0, seed=1, motion="exit")
    seen = _track_history(camera, 150)
    assert max(seen) > len(camera._motions)
    # fast: consecutive boxes of one object do not overlap
    seen = _track_history(SyntheticCamera(640, 480, 30.0, seed=1, motion="fast"), 30)
    overlaps = [iou_matrix(a[1][None].astype(float), b[1][None].astype(float))[0, 0]
                for frames in seen.values() for a, b in zip(frames, frames[1:]) if b[0] == a[0] + 1]
    assert np.mean(np.asarray(overlaps) == 0) > 0.9
    # cross: two objects of one class overlap at some time
    seen = _track_history(SyntheticCamera(640, 480, 30.0, seed=1, motion="cross"), 90)
    crossed = False
    for a in seen:
        for b in seen:
            if a < b and seen[a][0][2] == seen[b][0][2]:
                boxes_a = {i: box for i, box, _ in seen[a]}
                crossed |= any(iou_matrix(boxes_a[i][None].astype(float), box[None].astype(float))[0, 0] > 0
                               for i, box, _ in seen[b] if i in boxes_a)
    assert crossed


def test_test_uri_motion_option():
    from edge_fpn.runtime.sources import open_source
    with open_source("test://?width=160&height=120&realtime=0&frames=2&motion=cross") as source:
        assert source.camera.motion == "cross"
    with pytest.raises(EdgeFpnError, match="unknown motion"):
        open_source("test://?motion=teleport")


# ---------------------------------------------------------------- measured: MOTA, IDF1, ID switches

def test_the_mean_over_seeds_keeps_the_spread_of_idf1():
    # a mean of three seeds hides one seed's ID switch (held out, the model's "fast" at 10 FPS: 0.42,
    # 0.96, 0.95): the benchmark shows the lowest and highest seed beside it
    from edge_fpn.tracking_eval import format_scores, mean_scores
    runs = [{"ours": {"mota": m, "idf1": i, "id_switches": w, "precision": 0.9, "recall": 0.8}}
            for m, i, w in ((0.5, 0.42, 4), (0.9, 0.96, 0), (0.8, 0.95, 1))]
    scores = mean_scores(runs)["ours"]
    assert scores["idf1"] == pytest.approx((0.42 + 0.96 + 0.95) / 3, abs=1e-4)
    assert (scores["idf1_min"], scores["idf1_max"]) == (0.42, 0.96)
    assert scores["id_switches"] == pytest.approx(5 / 3, abs=1e-4)
    assert "IDF1 0.777 (0.420-0.960)" in format_scores("fast@10fps ours", scores)
    one = mean_scores(runs[1:2])["ours"]
    assert "(" not in format_scores("one seed", one)  # (no spread to show for one seed)


motmetrics = pytest.importorskip("motmetrics")


def _mean_scores(motion, step, seeds=(1, 2, 3), coast=0.15, config=None, **noise):
    from edge_fpn.tracking_eval import DetectionNoise, compare, ground_truth_sequence, noisy_detections
    runs = []
    for seed in seeds:
        truth, _ = ground_truth_sequence(motion, 300, seed=seed)
        runs.append(compare(truth, noisy_detections(truth, DetectionNoise(**noise), seed=seed), step,
                            coast_seconds=coast, config=config))
    return {name: {key: float(np.mean([r[name][key] for r in runs])) for key in ("mota", "idf1", "id_switches")}
            for name in runs[0]}


def test_noisy_ground_truth_goals():
    # the issue's goal on noisy ground truth (2 px jitter, 10% misses, 5% false positives), measured
    # with the coasted tracks a robot program reads (Tracker.tracks()): on the detection boxes alone
    # 10% misses cap IDF1 near 0.947 (perfect IDs on every detection: 0.935-0.954 by scene, run_ideal). Seeds
    # 1-3 are held out: the tracker's defaults were tuned on others
    for motion in ("cross", "exit", "drift", "fast", "occlude"):
        scores = _mean_scores(motion, 1)["ours+coast"]
        # measured 0.99/0.98, 0.978/0.96, 0.954/0.94, 0.958/0.92, 0.973/0.95 (fast was 0.90 before partly
        # hidden boxes were taken whole: its objects pass over one another; occlude was 0.945 while the
        # boxes of tracks hidden behind the occluder were coasted too)
        assert scores["idf1"] >= 0.95 and scores["mota"] >= 0.85, (motion, scores)
    # (drift was 0.92 before a new track took the ID of the lost one its object left: on seed 2 one of
    # its objects is a 13 px box, on which 2 px of jitter puts 16% of the detections under IoU 0.5)


def test_the_ideal_is_a_ceiling_no_tracker_passes():
    from edge_fpn.tracking_eval import compare, ground_truth_sequence, noisy_detections, run_ideal, score
    truth, _ = ground_truth_sequence("hard", 150, seed=1)
    # on the ground truth itself, perfect IDs are perfect
    exact = [(t, boxes, np.ones(len(boxes), np.float32), labels) for t, boxes, labels, _ in truth]
    perfect = score(truth, *run_ideal(truth, exact))
    assert perfect["idf1"] == 1.0 and perfect["mota"] == 1.0 and perfect["id_switches"] == 0
    # with 10% misses it is near 0.95, and our tracker on the same boxes scores at most that
    scores = compare(truth, noisy_detections(truth, seed=1), 1, reference=False, ideal=True)
    assert 0.92 <= scores["ideal"]["idf1"] <= 0.97 and scores["ideal"]["false_positives"] == 0, scores
    assert scores["ours"]["idf1"] <= scores["ideal"]["idf1"] + 1e-6, scores


def test_the_ideal_with_a_memory_forgets_an_object_away_longer_than_it():
    # the ceiling of a tracker without appearance: object 1 away for 2 s comes back as a new one
    # when the memory is 1.5 s (one ID switch), not when it is 3 s; object 2 stays and keeps its ID
    from edge_fpn.tracking_eval import run_ideal, score
    truth = []
    for i in range(120):
        t = i / 30
        here = [1, 2] if not 30 <= i < 90 else [2]
        boxes = np.array([_box(100, 100), _box(300, 300)], np.float32)[[k - 1 for k in here]]
        truth.append((t, boxes, np.ones(len(here), np.int64), np.array(here, np.int64)))
    detections = [(t, boxes, np.ones(len(boxes), np.float32), labels) for t, boxes, labels, _ in truth]
    assert score(truth, *run_ideal(truth, detections))["id_switches"] == 0
    assert score(truth, *run_ideal(truth, detections, forget_seconds=3.0))["id_switches"] == 0
    seen, hyps = run_ideal(truth, detections, forget_seconds=1.5)
    assert score(truth, seen, hyps)["id_switches"] == 1
    assert hyps[100][0].tolist() == [-1, 2]  # (a new ID that no ground-truth object has)


def test_occluded_objects_keep_their_ids_at_10_fps():
    # every third frame only: an object back from behind the occluder, or from a bounce at the border,
    # is often first seen off its predicted path and starts a new track, which takes the lost one's ID
    scores = _mean_scores("occlude", 3)["ours+coast"]
    # measured 0.86, 0.7 (0.83, 1.0 before a returning object's track took its ID at its second box; before
    # the ID was handed on at all: 0.73, 4.3)
    assert scores["idf1"] >= 0.82 and scores["id_switches"] <= 2.5, scores


def test_ours_against_the_reference_bytetrack_on_hard_motion():
    pytest.importorskip("cjm_byte_track")
    # crossings, occlusions, exits and fast objects at once: the timestamps, the per-class matching,
    # the adaptive filter and the motion stage must keep beating the published ByteTrack
    for step in (1, 3):
        scores = _mean_scores("hard", step, coast=0.0)
        ours, reference = scores["ours"], scores["reference"]
        assert ours["idf1"] >= reference["idf1"] + 0.15, (step, scores)  # measured 0.83 vs 0.61 (30 FPS), 0.80 vs 0.40 (10 FPS)
        assert ours["mota"] >= reference["mota"] + 0.15, (step, scores)  # measured 0.87 vs 0.66, 0.81 vs 0.43
        assert ours["id_switches"] <= reference["id_switches"] / 2, (step, scores)  # measured 6.7 vs 60, 10 vs 75 (mean of 3 seeds)


def test_lower_frame_rate_costs_little_on_crossings():
    # every third frame only (a 10 FPS camera): the timestamp-driven filter keeps crossing objects apart
    at30, at10 = _mean_scores("cross", 1, coast=0.0), _mean_scores("cross", 3, coast=0.0)
    assert at30["ours"]["idf1"] - at10["ours"]["idf1"] <= 0.20, (at30, at10)  # measured 0.94 -> 0.87 (reference: 0.59 -> 0.10)
    assert at10["ours"]["idf1"] >= 0.75, at10


def test_fast_objects_are_tracked_on_noisy_ground_truth():
    # small objects circling at more than their own size a frame: lost at once before the adaptive
    # filter (IDF1 0.29, 36 ID switches); the reference ByteTrack, on IoU alone, keeps none (0.02)
    scores = _mean_scores("fast", 1, coast=0.0)["ours"]
    assert scores["idf1"] >= 0.85 and scores["id_switches"] <= 5, scores  # measured 0.94, 0 switches
    # every third frame only: 0.5 rad and 3.5 box sizes a frame; before the coordinated turn and stage e
    # IDF1 0.34 with 47 ID switches (a missed frame lost the object for good)
    scores = _mean_scores("fast", 3, coast=0.0)["ours"]
    assert scores["idf1"] >= 0.8 and scores["id_switches"] <= 6, scores  # measured 0.86, 2.7 switches


def test_objects_passing_each_other_at_10_fps_are_settled_by_the_next_frame():
    # two same-class objects passing a box apart at 3.5 box sizes a frame: which box is whose is a coin
    # toss on one frame; the lookahead lets their IDs wait a frame and keeps the way that the next
    # frame's boxes fit (seeds 1-3, held out; fast objects on crossing ellipses)
    on = _mean_scores("fast", 3, coast=0.0, config=TrackerConfig(filter_first=False))["ours"]
    off = _mean_scores("fast", 3, coast=0.0, config=TrackerConfig(filter_first=False, lookahead=False))["ours"]
    assert on["idf1"] >= off["idf1"] + 0.05, (on, off)  # measured 0.81 vs 0.74
    assert on["id_switches"] <= off["id_switches"] / 2, (on, off)  # measured 4.0 vs 11.3
    # with stage d's filter first (below) fewer of those tosses are lost, and the lookahead still settles some
    on = _mean_scores("fast", 3, coast=0.0)["ours"]
    off = _mean_scores("fast", 3, coast=0.0, config=TrackerConfig(lookahead=False))["ours"]
    assert on["idf1"] >= off["idf1"] + 0.01 and on["id_switches"] < off["id_switches"], (on, off)  # measured 0.86 vs 0.845, 2.7 vs 4.0


def test_stage_d_takes_the_box_the_filter_foresaw_before_one_only_within_turn_reach():
    # an object at 1000 px/s (10 FPS, 20 px boxes), missed once, comes back 26 px off its straight
    # path (no IoU with the prediction, inside the filter's gate); a box of its class 35 px from
    # where it was last seen is inside the turn reach's disc (240 px) and cheaper there. The track
    # takes the box its filter foresaw; with one assignment for both, it took the clutter
    for filter_first, taken in ((True, [1, -1]), (False, [-1, 1])):
        tracker = Tracker(TrackerConfig(filter_first=filter_first))
        for k in range(6):
            tracker.update(np.array([_box(100 + 100 * k, 240)]), np.array([0.9]), np.array([1]), 0.1 * k)
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.6)
        ids = tracker.update(np.array([_box(800, 266), _box(565, 240)]), np.array([0.9, 0.9]), np.array([1, 1]), 0.7)
        assert ids.tolist() == taken, (filter_first, ids)


def test_stage_d_takes_a_high_detection_before_a_low_one_nearer_the_prediction():
    # an object zigzagging at 1000 px/s (10 FPS) has a wide gate; the detector gives it a box 77 px
    # below the prediction (0.95) and a smaller second box inside it nearer the prediction (0.2):
    # neither overlaps the predicted box. As in stages a and b, the high box goes first: the track takes
    # it, and the low one is left (in one assignment with both, the nearer low box took the track and
    # the object's real box started a new track)
    tracker = Tracker()
    for k in range(8):
        tracker.update(np.array([_box(100 + 100 * k, 240 + (12 if k % 2 else -12), 26.0)]), np.array([0.9]),
                       np.array([1]), 0.1 * k)
    ids = tracker.update(np.array([_box(896, 374, 30.0), _box(896, 357, 20.0)]), np.array([0.95, 0.2]),
                         np.array([1, 1]), 0.8)
    assert ids.tolist() == [1, -1], ids


def test_filter_first_keeps_fast_objects_at_10_fps():
    # fast objects on crossing ellipses, every third frame, noisy ground truth (seeds 1-3, held out):
    # a track missed for a frame took a false positive near its last centre by turn reach, and
    # clutter near one track's last centre took it from the object its filter had foreseen
    on = _mean_scores("fast", 3, coast=0.0)["ours"]
    off = _mean_scores("fast", 3, coast=0.0, config=TrackerConfig(filter_first=False))["ours"]
    assert on["idf1"] >= off["idf1"] + 0.03, (on, off)  # measured 0.86 vs 0.81


def test_state_saved_while_an_ambiguity_waits_continues_identically():
    from edge_fpn.tracking_eval import ground_truth_sequence, noisy_detections
    truth, _ = ground_truth_sequence("fast", 300, seed=3)
    frames = noisy_detections(truth, seed=3)[::3]
    a = Tracker()
    for index, (t, boxes, scores, labels) in enumerate(frames):
        a.update(boxes, scores, labels, t)
        if a.get_state()["waiting"]:
            break
    else:
        pytest.fail("no ambiguity in this sequence: the test needs one")
    b = Tracker()
    b.set_state(json.loads(json.dumps(a.get_state())))
    for t, boxes, scores, labels in frames[index + 1:index + 30]:
        assert a.update(boxes, scores, labels, t).tolist() == b.update(boxes, scores, labels, t).tolist()
    assert a.get_state() == b.get_state()



def _lost_for_a_second_then(first_box, later_path):
    """A square moving right at 100 px/s seen for 1 s, missed for 1 s, then `first_box`, then its own
    box on `later_path(frame)`: the IDs of the boxes from there on."""
    tracker, fps = Tracker(), 30.0
    for i in range(30):
        assert tracker.update(np.array([_box(100 + 100 * i / fps, 240, 30)]), np.array([0.9]), np.array([0]),
                              i / fps).tolist() == ([1] if i >= 2 else [-1])
    for i in range(30, 60):
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), i / fps)
    ids = [int(tracker.update(np.array([first_box]), np.array([0.9]), np.array([0]), 60 / fps)[0])]
    for i in range(61, 70):
        ids.append(int(tracker.update(np.array([later_path(i)]), np.array([0.9]), np.array([0]), i / fps)[0]))
    return ids


def test_a_false_positive_in_a_long_lost_tracks_gate_does_not_take_it_off_its_object():
    # (a track lost 1 s, its gate grown wide, took a false positive of its class 120 px off its path,
    # seen once; the object, back on its path, got a new ID. The match is in doubt until the next frame)
    on_path = lambda i: _box(100 + 100 * i / 30, 240, 30)
    assert _lost_for_a_second_then(_box(300, 360, 30), on_path) == [1] * 10  # (its ID shown meanwhile)
    # and an object that comes back off its path, and goes on from there, keeps its ID as before
    off_path = lambda i: _box(100 + 100 * i / 30, 300, 30)
    assert _lost_for_a_second_then(off_path(60), off_path) == [1] * 10

def test_a_subclass_with_its_own_init_settles_ambiguities_as_a_tracker():
    # (the lookahead replays the other way on a Tracker of its own: a program that subclasses
    # Tracker, e.g. to log its IDs, and changes __init__'s signature must still run)
    from edge_fpn.tracking_eval import ground_truth_sequence, noisy_detections

    class LoggingTracker(Tracker):
        def __init__(self, name: str, log: list):
            super().__init__(TrackerConfig())
            self.name, self.log = name, log

    truth, _ = ground_truth_sequence("fast", 300, seed=3)
    plain, logging_ = Tracker(), LoggingTracker("cam0", [])
    waited = False
    for t, boxes, scores, labels in noisy_detections(truth, seed=3)[::3]:
        assert plain.update(boxes, scores, labels, t).tolist() == logging_.update(boxes, scores, labels, t).tolist()
        waited |= bool(logging_.get_state()["waiting"])
    assert waited, "no ambiguity in this sequence: the test needs one"


# ---------------------------------------------------------------- wiring

def test_detections_track_ids_through_filter_annotate_and_jsonl(tmp_path):
    from edge_fpn.runtime.detector import Detections
    from edge_fpn.runtime.pipeline import filter_scores
    from edge_fpn.runtime.sinks import annotate
    detections = Detections(np.array([_box(30, 30), _box(70, 70)], np.float32), np.array([0.9, 0.3], np.float32),
                            np.array([1, 2]), ["circle", "square"], np.array([7, -1]))
    kept = filter_scores(detections, 0.5)
    assert kept.track_ids.tolist() == [7]
    assert kept.to_list()[0]["track_id"] == 7
    untracked = Detections(detections.boxes, detections.scores, detections.labels, detections.names)
    assert "track_id" not in untracked.to_list()[0]
    drawn = annotate(np.zeros((100, 100, 3), np.uint8), kept)
    plain = annotate(np.zeros((100, 100, 3), np.uint8), filter_scores(untracked, 0.5))
    assert not np.array_equal(drawn, plain)  # "#7" is drawn


class _FakeDetector:
    """Boxes straight from the synthetic camera's ground truth, as a Detector would give them."""
    engine_steps = ("engine",)
    class_names = ["__background__", "circle", "square", "triangle", "star", "ring"]
    score_threshold = None

    def __init__(self, camera):
        self.camera = camera

    def preprocess(self, frame):
        return frame, None

    def infer(self, inputs, letterbox):
        return inputs, {"engine": 0.0}

    def finish(self, outputs, letterbox):
        from edge_fpn.runtime.detector import Detections
        index = int(outputs[0, 0, 0])  # the frame index, written into the frame by the source below
        boxes, labels = self.camera.ground_truth(index)
        names = [self.class_names[i] for i in labels]
        return Detections(boxes, np.full(len(labels), 0.9, np.float32), labels, names)


def test_pipeline_tracks_in_frame_order_and_survives_a_tracker_error(tmp_path):
    from edge_fpn.runtime.pipeline import Pipeline
    from edge_fpn.runtime.sources import END, OK, FrameRead, Source
    from edge_fpn.runtime.synthetic import SyntheticCamera
    camera = SyntheticCamera(160, 120, 30.0, seed=2)

    class Frames(Source):
        def __init__(self):
            super().__init__("frames://")
            self.fps, self.i = 30.0, 0

        def read(self, timeout=None):
            if self.i >= 40:
                return FrameRead(END)
            frame = np.full((120, 160, 3), self.i, np.uint8)
            self.i += 1
            return FrameRead(OK, frame, 0.0, self.i - 1)

    class Flaky(Tracker):
        def track(self, detections, timestamp):
            if abs(timestamp - 20 / 30) < 1e-9:
                raise EdgeFpnError("a tracker that fails on frame 20")
            return super().track(detections, timestamp)

    sink = str(tmp_path / "out.jsonl")
    with Pipeline(_FakeDetector(camera), Frames(), [sink], quiet=True, tracker=Flaky()) as pipeline:
        results = list(pipeline)
        stats = pipeline.stats.snapshot()
    assert [r.index for r in results] == list(range(40))
    assert stats["bad_frames"] == 1 and "tracking" in stats["stages"]
    assert (results[20].detections.track_ids == -1).all()
    # the failed frame does not end tracking: 10 frames later at least half the detections have IDs
    assert (results[30].detections.track_ids > 0).mean() >= 0.5
    assert set(results[30].detections.track_ids.tolist()) - {-1} <= set(results[29].detections.track_ids.tolist())
    lines = [json.loads(line) for line in open(sink)]
    assert all("track_id" in d for d in lines[30]["detections"])
    # each result carries the tracker's tracks after its frame (a program's view of objects not seen
    # this frame too); none for the frame the tracker failed on
    assert results[20].tracks is None
    tracks = results[30].tracks
    shown = set(results[30].detections.track_ids.tolist()) - {-1}
    assert shown and shown <= set(tracks["ids"][~tracks["lost"]].tolist())
    assert tracks["hidden"].dtype == bool and not tracks["hidden"][~tracks["lost"]].any()
    with pytest.raises(EdgeFpnError, match="tracker must be"):
        Pipeline(_FakeDetector(camera), Frames(), tracker="bytetrack")


def test_the_pipeline_gives_its_tracker_the_frames():
    from edge_fpn.runtime.pipeline import Pipeline
    from edge_fpn.runtime.sources.synthetic import SyntheticSource
    from edge_fpn.runtime.synthetic import SyntheticCamera
    camera = SyntheticCamera(160, 120, 30.0, seed=2)
    seen = []

    class Seeing(Tracker):
        def update(self, boxes, scores, labels=None, timestamp=None, image=None):
            seen.append(None if image is None else image.shape)
            return super().update(boxes, scores, labels, timestamp, image)

    source = SyntheticSource(width=160, height=120, realtime=False)
    with Pipeline(_FakeDetector(camera), source, [], quiet=True, max_frames=5, tracker=Seeing()) as pipeline:
        results = list(pipeline)
    assert len(results) == 5 and seen == [(120, 160, 3)] * 5


def test_track_flag_on_detect_and_demo():
    from edge_fpn.cli import build_parser
    parser = build_parser()
    assert parser.parse_args(["detect", "b", "test://", "--track"]).track is True
    assert parser.parse_args(["detect", "b", "test://"]).track is False
    assert parser.parse_args(["demo", "--track"]).track is True


def test_track_options_set_the_tracker_from_the_command_line(shapes_bundle, tmp_path):
    from edge_fpn.cli import main
    from edge_fpn.runtime.tracking.config import tracker_config_from_options
    config = tracker_config_from_options(["min_hits=1", "lost-seconds=2.5", "per_class=no", "high_threshold=0.6"])
    assert (config.min_hits, config.lost_seconds, config.per_class, config.high_threshold) == (1, 2.5, False, 0.6)
    assert config.new_track_threshold == TrackerConfig().new_track_threshold  # the rest: defaults
    bundle = shapes_bundle("engine")[1]
    first_ids = {}
    for name, extra in (("default", []), ("at_once", ["--track-option", "min_hits=1"])):
        out = tmp_path / f"{name}.jsonl"
        assert main(["detect", bundle, "test://?realtime=0", str(out), "--track", "--max-frames", "2", "--quiet",
                     "--device", "cpu"] + extra) == 0
        first = json.loads(out.read_text().splitlines()[0])
        first_ids[name] = [d["track_id"] for d in first["detections"]]
    assert first_ids["default"] and all(i == -1 for i in first_ids["default"])  # min_hits 3: no ID at frame 0
    assert any(i >= 1 for i in first_ids["at_once"])  # min_hits 1: IDs at once


def test_track_state_carries_ids_across_runs_of_detect(shapes_bundle, tmp_path, capsys):
    import cv2
    from edge_fpn.cli import main
    from edge_fpn.runtime.synthetic import SyntheticCamera
    bundle = shapes_bundle("engine")[1]
    frames = tmp_path / "frames"
    frames.mkdir()
    image = SyntheticCamera(width=320, height=240, seed=5).frame(0)
    for index in range(4):  # a still scene: the same objects in every frame, and in the next run
        cv2.imwrite(str(frames / f"{index}.png"), image)
    state = tmp_path / "tracks.json"
    common = [str(frames), "--track", "--quiet", "--device", "cpu", "--track-option", "lost_seconds=600"]

    def first_and_last_ids(out, extra):
        assert main(["detect", bundle] + common + [str(out)] + extra) == 0
        records = [json.loads(line) for line in out.read_text().splitlines()]
        return [sorted(d["track_id"] for d in record["detections"]) for record in (records[0], records[-1])]

    capsys.readouterr()
    first, last = first_and_last_ids(tmp_path / "a.jsonl", ["--track-state", str(state)])
    last = [i for i in last if i >= 1]
    assert first and all(i == -1 for i in first) and len(last) >= 3  # confirmed during the run
    out = capsys.readouterr().out  # (it said nothing: was the state read, or written?)
    assert "resumed" not in out and f"tracker state saved to {state} ({len(last)} tracks, next ID {max(last) + 1})" in out
    saved = state.read_text()
    # the next run resumes: the objects have their IDs from its first frame, and the file is saved again
    resumed, _ = first_and_last_ids(tmp_path / "b.jsonl", ["--track-state", str(state)])
    assert [i for i in resumed if i >= 1] == last
    assert f"tracker state resumed ({len(last)} tracks, next ID {max(last) + 1}" in capsys.readouterr().out
    assert state.read_text() != saved and json.loads(state.read_text())["trackers"][0]["next_id"] == max(last) + 1
    # without the state: fresh tracks, no ID at the first frame
    fresh, _ = first_and_last_ids(tmp_path / "c.jsonl", [])
    assert all(i == -1 for i in fresh)
    capsys.readouterr()
    # bad state files: one line, exit 2, the file left as it was
    for content, message in (("not json", "is not a tracker state file"), ('{"a": 1}', "is not a tracker state file edge-fpn wrote"),
                             (saved.replace('"next_id": ', '"next_id": -'), "is damaged")):
        state.write_text(content)
        assert main(["detect", bundle] + common + [str(tmp_path / "d.jsonl"), "--force", "--track-state", str(state)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert state.read_text() == content and not (tmp_path / "d.jsonl").exists()
    for args, message in (([str(tmp_path / "a.jsonl"), "--force", "--track-state", str(tmp_path / "a.jsonl")], "is also the output"),
                          ([str(tmp_path / "e.jsonl"), "--track-state", str(tmp_path / "no" / "t.json")], "does not exist"),
                          ([str(tmp_path / "e.jsonl"), "--track-state", str(tmp_path)], "is a directory"),
                          ([str(tmp_path / "e.jsonl"), "--track-state", ""], "needs a file name"),
                          # (found at the end of the run, after it all)
                          ([str(tmp_path / "e.jsonl"), "--track-state", "/proc/tracks.json"], "cannot write in the folder")):
        assert main(["detect", bundle] + common + args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert main(["detect", bundle, str(frames), "--track-state", str(state)]) == 2
    assert "it needs --track" in capsys.readouterr().err


def test_track_state_file_is_replaced_whole_or_not_at_all(tmp_path):
    from edge_fpn.runtime.tracking.state_file import read_state_file, write_state_file
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(np.array([_box(50, 50)]), np.array([0.9]), None, 1.0)
    path = tmp_path / "tracks.json"
    path.write_text("{}")
    path.chmod(0o640)
    write_state_file(str(path), [tracker], ["test://"])
    assert (path.stat().st_mode & 0o777) == 0o640  # the mode of the file it replaced
    assert read_state_file(str(path), ["test://"])["trackers"][0]["next_id"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.json"]  # no temporary left
    with pytest.raises(EdgeFpnError, match="cannot save the tracker state"):
        write_state_file(str(tmp_path / "gone" / "tracks.json"), [tracker], ["test://"])


def test_track_state_of_other_sources_is_resumed_with_a_warning(tmp_path):
    import logging
    from edge_fpn.runtime.tracking.state_file import logger, read_state_file, write_state_file
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(np.array([_box(50, 50)]), np.array([0.9]), None, 1.0)
    path = tmp_path / "tracks.json"
    write_state_file(str(path), [tracker], ["test://?motion=fast"])
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger.addHandler(handler)  # (the command's console handler may have stopped propagation: caplog sees nothing)
    try:
        assert read_state_file(str(path), ["test://?motion=fast"]) is not None and not warnings
        assert read_state_file(str(path), ["rtsp://camera/2"])["trackers"][0]["next_id"] == 2
    finally:
        logger.removeHandler(handler)
    assert len(warnings) == 1 and "was saved for test://?motion=fast; resuming its IDs on rtsp://camera/2" in warnings[0]


@pytest.mark.parametrize("options, message", [
    (["min_hit=2"], "no tracker option 'min_hit'; did you mean min_hits?"),
    (["min_hits=two"], "tracker option min_hits takes an integer, not 'two'"),
    (["per_class=maybe"], "tracker option per_class is true or false"),
    (["lost_seconds=-1"], "tracker lost_seconds must be a finite number >= 0"),
    (["lost_seconds"], "is not KEY=VALUE"),
])
def test_bad_track_options_are_one_sentence(options, message):
    from edge_fpn.runtime.tracking.config import tracker_config_from_options
    with pytest.raises(EdgeFpnError, match=message.replace("?", r"\?")):
        tracker_config_from_options(options)


def test_the_appearance_veto_and_the_memory_on_noisy_ground_truth():
    """The frames' colours on two held-out sequences where motion alone goes wrong. Measured: the
    veto alone (no memory), "hard" at 30 FPS IDF1 0.869 -> 0.884 (ID switches 4 -> 3; 0.852 -> 0.884
    and 5 -> 3 before a long-lost track's motion match was in doubt until the next frame, which
    helps motion alone there), "fast" at 10 FPS 0.730 -> 0.892 (8 -> 1); the memory of ended tracks
    then takes "hard" to 0.930 (3 -> 0: objects back after 1.5 s or more, out of the frame or
    behind another)."""
    from edge_fpn.tracking_eval import ground_truth_sequence, noisy_detections, run_ours, score
    no_memory = TrackerConfig(recall_seconds=0)
    for motion, step in (("hard", 1), ("fast", 3)):
        truth, images = ground_truth_sequence(motion, 300, seed=3, images=True)
        detections = noisy_detections(truth, seed=3)
        boxes_only = score(truth, *run_ours(detections, step)[:2])
        with_frames = score(truth, *run_ours(detections, step, no_memory, images=images)[:2])
        assert with_frames["idf1"] >= boxes_only["idf1"] + 0.01, (motion, boxes_only, with_frames)
        assert with_frames["id_switches"] < boxes_only["id_switches"], (motion, boxes_only, with_frames)
        if motion == "hard":
            remembered = score(truth, *run_ours(detections, step, images=images)[:2])
            assert remembered["idf1"] >= with_frames["idf1"] + 0.02, (with_frames, remembered)
            assert remembered["id_switches"] < with_frames["id_switches"], (with_frames, remembered)


def test_noisy_ground_truth_goal_on_hard_with_the_frames():
    """The issue's goal on noisy ground truth (IDF1 >= 0.95, MOTA >= 0.85, coasting) on "hard", held
    out, is met with the frames' colours, as the pipeline runs the tracker. Measured 0.969 / 0.947
    since the colours leave out the background around each box, 0.965 / 0.946 since they leave out
    the boxes' corners (0.958 / 0.945 before); 0.952 / 0.93 while a lost
    track inside a seen one's box was hidden though the frame showed it there (``in_sight_share``:
    every coasted box of it was left out), and 0.922 / 0.93 before a box that looks like another
    lost or unmatched track of its class (by ``rival_margin``) was refused to the track it was
    nearer (seed 1: two squares of a class crossed behind an occluder and came out each with the
    other's ID); without the corners the veto alone tells those two apart."""
    from edge_fpn.tracking_eval import ground_truth_sequence, noisy_detections, run_ours, score
    default, before, hidden = [], [], []
    for seed in (1, 2, 3):
        truth, images = ground_truth_sequence("hard", 300, seed=seed, images=True)
        detections = noisy_detections(truth, seed=seed)
        default.append(score(truth, *run_ours(detections, 1, coast_seconds=0.15, images=images)[:2]))
        before.append(score(truth, *run_ours(detections, 1, TrackerConfig(rival_margin=0), 0.15, images=images)[:2]))
        hidden.append(score(truth, *run_ours(detections, 1, TrackerConfig(in_sight_share=0), 0.15, images=images)[:2]))
    idf1, mota = np.mean([s["idf1"] for s in default]), np.mean([s["mota"] for s in default])
    assert idf1 >= 0.95 and mota >= 0.85, (idf1, mota)
    assert np.mean([s["idf1"] for s in before]) >= 0.95
    # the same IDs either way (tracks() only): each seed's coasting gains, measured +0.003 to +0.009
    assert all(s["id_switches"] == h["id_switches"] for s, h in zip(default, hidden))
    assert all(s["idf1"] >= h["idf1"] + 0.002 for s, h in zip(default, hidden)), (default, hidden)


def test_tracker_ab_loads_each_side_whole(tmp_path):
    """benchmarks/tracker_ab.py times two versions' trackers: each must be its own package (an A/B
    that reloaded only the tracking package under another edge_fpn once timed one version twice)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    same, changed = tmp_path / "same", tmp_path / "changed"
    for side in (same, changed):
        shutil.copytree(repo / "edge_fpn", side / "edge_fpn", ignore=shutil.ignore_patterns("__pycache__"))
    tracker = changed / "edge_fpn" / "runtime" / "tracking" / "tracker.py"
    source = tracker.read_text()
    assert "        return result\n" in source
    tracker.write_text(source.replace("        return result\n", "        return result + 1000\n", 1))  # other IDs

    def run(a, b):
        done = subprocess.run([sys.executable, str(repo / "benchmarks" / "tracker_ab.py"), str(a), str(b), "--frames", "8",
                               "--rounds", "2", "--boxes-only"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "IDs on every frame: the same" in run(same, repo)
    assert "IDs on every frame: the same" in run("HEAD", "HEAD")  # (one revision twice: the order effect)
    out = run(same, changed)
    assert "IDs on every frame: DIFFERENT" in out and "(A first)" in out and "(B first)" in out
    # a version that imports one of its own modules while it runs (the lookahead once did) finds its
    # own, not the side loaded last
    lazy = tmp_path / "lazy"
    shutil.copytree(same, lazy)
    tracker = lazy / "edge_fpn" / "runtime" / "tracking" / "tracker.py"
    step = "        boxes, scores, labels, usable = checked_detections(boxes, scores, labels)\n"
    assert step in tracker.read_text()
    tracker.write_text(tracker.read_text().replace(step, "        from .tracker import Tracker as own\n"
                                                         "        assert isinstance(self, own), 'the other side'\n" + step, 1))
    assert "IDs on every frame: the same" in run(lazy, same)


def test_tracking_benchmark_takes_seed_ranges_and_times_alone(capsys, monkeypatch):
    """benchmarks/tracking.py --seeds 300-339 (forty fresh scenes) and --speed-only (the update()
    goal checked without minutes of quality runs); bad values are its usage line, exit 2."""
    # (imported from the benchmarks folder, as test_tensorrt_data_flow imports its script)
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    import tracking as bench
    assert bench.parse_seeds("1,2,3") == [1, 2, 3]
    assert bench.parse_seeds("300-303") == [300, 301, 302, 303]
    assert bench.parse_seeds("1-3, 10,2") == [1, 2, 3, 10]
    for bad in ("3-1", "a", "1-", "-1", ""):
        with pytest.raises(ValueError):
            bench.parse_seeds(bad)
    assert bench.main(["--speed-only", "--updates", "30", "--rounds", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "noisy_ground_truth" not in report and len(report["speed_rounds"]) == 2
    assert report["speed"] == report["speed_rounds"][0]
    assert all(run["tracks"] > 0 and run["ours_ms"]["median"] > 0 and run["ours_alone_ms"]["median"] > 0
               for run in report["speed_rounds"])
    assert bench.main(["--speed-only", "--updates", "30"]) == 0
    assert "ours alone (nothing between the calls): min " in capsys.readouterr().out
    for argv in (["--seeds", "5-2"], ["--speed-only", "some-bundle"], ["--rounds", "0"]):
        with pytest.raises(SystemExit) as stop:
            bench.main(argv)
        assert stop.value.code == 2
        assert "error:" in capsys.readouterr().err

