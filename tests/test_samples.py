"""The samples run (on test://, with the tiny bundle); the ROS 2 node runs on stand-ins for rclpy and
vision_msgs (not installable here), and says in one line where ROS 2 is missing."""
from __future__ import annotations

import os
import py_compile
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")


def _run(script, args, timeout=180):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(SAMPLES, script)] + args, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_live_camera_sample(tiny_bundle):
    done = _run("live_camera.py", ["--source", "test://?width=320&height=240", "--bundle", tiny_bundle,
                                   "--max-frames", "3", "--port", "0", "--score-threshold", "0.3"])
    assert done.returncode == 0, done.stderr
    assert re.search(r"^web viewer: http://127\.0\.0\.1:\d+/$", done.stdout, re.MULTILINE)
    assert len(re.findall(r"^frame \d+: \d+ objects", done.stdout, re.MULTILINE)) == 3
    assert "3 frames in" in done.stderr  # the pipeline's end summary


def test_live_camera_sample_bad_source(tiny_bundle):
    done = _run("live_camera.py", ["--source", "nope://", "--bundle", tiny_bundle, "--port", "0"])
    assert done.returncode == 2 and done.stderr.strip().startswith("live_camera: error: unknown source scheme")


def test_robot_embed_sample(shapes_bundle):
    # the shipped model: a trained detector whose objects the tracker can follow
    done = _run("robot_embed.py", ["--source", "test://?width=320&height=240", "--bundle", shapes_bundle("engine")[1],
                                   "--steps", "8", "--rate", "4", "--score-threshold", "0.3"])
    assert done.returncode == 0, done.stderr
    steps = re.findall(r"^step \d+: (.*)$", done.stdout, re.MULTILINE)
    assert len(steps) == 8
    # it saw detections and steered: the first results come well within the 2 s of 8 steps at 4 Hz
    # (a bound on a stall, not a speed goal: a stalled detector only holds)
    assert any(s.startswith("turn ") for s in steps)
    # it locks on one object by its track ID, and keeps it: once locked, the same ID to the end
    # (the synthetic scene's objects stay in view for these 2 s)
    locked = [m.group(1) for m in (re.search(r"towards #(\d+) ", s) for s in steps) if m]
    assert locked and len(set(locked)) == 1, steps
    match = re.search(r"done: 8 control steps, (\d+) detector frames \(callbacks: (\d+)\)", done.stdout)
    assert match and int(match.group(1)) >= 1 and int(match.group(2)) == int(match.group(1))


def test_robot_embed_refuses_a_bad_rate_in_one_line(tiny_bundle):
    for flag, value in (("--rate", "0"), ("--max-age", "-1")):
        done = _run("robot_embed.py", ["--source", "test://", "--bundle", tiny_bundle, "--steps", "1", flag, value])
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"{flag} must be above 0" in done.stderr.strip().splitlines()[-1]
    # a negative step count: one line (it ran until Ctrl-C, as 0 does)
    done = _run("robot_embed.py", ["--source", "test://", "--bundle", tiny_bundle, "--steps", "-1"])
    assert done.returncode == 2 and "--steps must be 0 (until Ctrl-C) or more" in done.stderr.strip().splitlines()[-1]
    # a class the bundle does not know: one line naming the ones it does (not a search that never ends)
    done = _run("robot_embed.py", ["--source", "test://", "--bundle", tiny_bundle, "--steps", "1", "--target", "unicorn"])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "--target 'unicorn' is not a class of this bundle; it knows" in done.stderr.strip().splitlines()[-1]


def test_robot_embed_holds_its_lock_through_a_few_steps_without_it():
    import importlib.util
    from types import SimpleNamespace

    from edge_fpn.runtime.detector import Detections
    spec = importlib.util.spec_from_file_location("robot_embed", os.path.join(SAMPLES, "robot_embed.py"))
    robot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(robot)

    def seen(*ids):  # one circle per ID, the higher IDs further right and scoring higher
        n = len(ids)
        boxes = np.array([[10.0 + 40 * i, 10, 30 + 40 * i, 30] for i in range(n)], np.float32).reshape(n, 4)
        d = Detections(boxes, np.linspace(0.6, 0.9, n).astype(np.float32), np.ones(n, np.int64), ["circle"] * n,
                       np.array(ids, np.int64))
        return SimpleNamespace(detections=d, frame=np.zeros((40, 200, 3), np.uint8))

    command, locked, missed = robot.steer(seen(7), "circle")
    assert locked == 7 and "towards #7" in command
    # #7's ID waits a frame (or the detector missed it) while #9 is in view: the lock holds
    for step in range(3):
        command, locked, missed = robot.steer(seen(9, -1), "circle", locked, missed)
        assert locked == 7 and command.startswith("hold (#7"), command
    command, locked, missed = robot.steer(seen(7, 9), "circle", locked, missed)
    assert locked == 7 and missed == 0 and "towards #7" in command
    # gone for longer than its patience: the lock moves to the best confirmed circle
    for step in range(4):
        command, locked, missed = robot.steer(seen(9), "circle", locked, missed)
    assert locked == 9 and "towards #9" in command

    def with_tracks(result, lost_ids, hidden_ids):  # the tracker's view: #9 seen, the others lost
        every = [9] + list(lost_ids)
        result.tracks = {"ids": np.array(every, np.int64), "lost": np.array([i != 9 for i in every]),
                         "hidden": np.array([i in hidden_ids for i in every])}
        return result

    # hidden behind an object seen now: the lock holds past its patience, as long as the track lives
    command, locked, missed = robot.steer(seen(7), "circle")
    for step in range(6):
        command, locked, missed = robot.steer(with_tracks(seen(9), [7], [7]), "circle", locked, missed)
        assert locked == 7 and command == "hold (#7 hidden: behind an object or leaving the view)", command
    # its track ended: the lock moves at once, patience or not
    command, locked, missed = robot.steer(seen(7), "circle")
    command, locked, missed = robot.steer(with_tracks(seen(9), [], []), "circle", locked, missed)
    assert locked == 9 and "towards #9" in command
    # lost but not hidden (a missed frame): patience as before
    command, locked, missed = robot.steer(seen(7), "circle")
    command, locked, missed = robot.steer(with_tracks(seen(9), [7], []), "circle", locked, missed)
    assert locked == 7 and command == "hold (#7 not seen)"
    # its track took a box this frame that shows no ID (read as another class): steer by the track's box
    command, locked, missed = robot.steer(seen(7), "circle")
    flipped = with_tracks(seen(9), [], [])
    flipped.tracks = {"ids": np.array([9, 7]), "lost": np.array([False, False]), "hidden": np.array([False, False]),
                      "boxes": np.array([[10.0, 10, 30, 30], [150.0, 10, 170, 30]], np.float32)}
    command, locked, missed = robot.steer(flipped, "circle", locked, 2)
    assert locked == 7 and missed == 0 and command == "turn +0.60 towards #7 (its track's box: the detection shows no ID)", command


def test_ros2_node_compiles():
    py_compile.compile(os.path.join(SAMPLES, "ros2_detector_node.py"), doraise=True)


def test_ros2_node_without_ros_is_one_line(tmp_path):
    # ROS 2 hidden wherever it is installed: modules of its names that raise ImportError come first
    for name in ("rclpy", "std_msgs", "vision_msgs"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    done = subprocess.run([sys.executable, os.path.join(SAMPLES, "ros2_detector_node.py")], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("ros2_detector_node: error: rclpy and vision_msgs are not installed; "
                                   "source your ROS 2 setup.bash first")


class _Message:
    """A ROS message stand-in: fields as attributes, lists where ROS has sequences."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def _fake_ros(parameters, published, spin_until, nodes):
    """rclpy, std_msgs and vision_msgs (its 4.x layout, ROS 2 Humble) as modules: what the node uses."""
    import threading
    import types

    class Node:
        def __init__(self, name):
            self.name, self.destroyed = name, False
            nodes.append(self)

        def declare_parameter(self, name, default):
            return types.SimpleNamespace(value=parameters.get(name, default))

        def create_publisher(self, kind, topic, depth):
            outer = self

            class Publisher:
                def publish(self, message):
                    assert isinstance(message, kind)
                    with ready:
                        published.append((topic, message))
                        ready.notify_all()
            outer.publisher_args = (kind, topic, depth)
            return Publisher()

        def get_logger(self):
            return types.SimpleNamespace(info=lambda text: None)

        def get_clock(self):
            return types.SimpleNamespace(now=lambda: types.SimpleNamespace(to_msg=lambda: "stamp"))

        def destroy_node(self):
            self.destroyed = True

    ready = threading.Condition()

    def spin(node):  # until enough messages came (the timeout bounds a hang only), then Ctrl-C
        with ready:
            assert ready.wait_for(lambda: len(published) >= spin_until, 60.0), len(published)
        raise KeyboardInterrupt

    calls = []
    rclpy = types.ModuleType("rclpy")
    rclpy.init = lambda args=None: calls.append("init")
    rclpy.spin = spin
    rclpy.shutdown = lambda: calls.append("shutdown")
    rclpy.calls = calls
    node_module = types.ModuleType("rclpy.node")
    node_module.Node = Node
    std_msgs, std_msg = types.ModuleType("std_msgs"), types.ModuleType("std_msgs.msg")
    std_msg.Header = lambda: _Message(stamp=None, frame_id="")
    vision_msgs, vision_msg = types.ModuleType("vision_msgs"), types.ModuleType("vision_msgs.msg")

    class Detection2DArray(_Message):
        def __init__(self):
            super().__init__(header=None, detections=[])
    vision_msg.Detection2DArray = Detection2DArray
    vision_msg.Detection2D = lambda: _Message(header=None, id="", bbox=None, results=[])
    vision_msg.BoundingBox2D = lambda: _Message(center=_Message(position=_Message(x=0.0, y=0.0), theta=0.0),
                                                size_x=0.0, size_y=0.0)
    vision_msg.ObjectHypothesisWithPose = lambda: _Message(hypothesis=_Message(class_id="", score=0.0), pose=None)
    return {"rclpy": rclpy, "rclpy.node": node_module, "std_msgs": std_msgs, "std_msgs.msg": std_msg,
            "vision_msgs": vision_msgs, "vision_msgs.msg": vision_msg}


def test_ros2_node_publishes_the_pipelines_detections(tiny_bundle, monkeypatch):
    """The node's own code on stand-ins for rclpy and vision_msgs: three frames of test:// become
    three Detection2DArray messages holding the Detector's detections (centre, size, class, score)
    and track IDs; Ctrl-C closes the pipeline and shuts rclpy down."""
    import importlib.util
    from edge_fpn import Detector
    from edge_fpn.runtime.synthetic import SyntheticCamera
    from edge_fpn.runtime.tracking import Tracker
    source = "test://?width=320&height=240&realtime=0&frames=3"
    published, created = [], []
    parameters = {"bundle": tiny_bundle, "source": source, "topic": "objects", "score_threshold": 0.3,
                  "frame_id": "cam0"}
    for name, module in _fake_ros(parameters, published, 3, created).items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("ros2_detector_node_under_test",
                                                  os.path.join(SAMPLES, "ros2_detector_node.py"))
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    assert sample.main([]) == 0
    node, = created
    assert sys.modules["rclpy"].calls == ["init", "shutdown"] and node.destroyed and not node.pipeline.running
    assert [topic for topic, _ in published] == ["objects"] * 3 and node.publisher_args[1:] == ("objects", 10)
    # what the pipeline computes: the Detector on test://'s frames, tracked at 30 fps timestamps
    # with each frame (the tracker's appearance veto sees its colours)
    camera, tracker = SyntheticCamera(320, 240, 30.0, 1), Tracker()
    with Detector(tiny_bundle, score_threshold=0.3) as detector:
        frames = [camera.frame(i) for i in range(3)]
        expected = [tracker.track(detector(frame), i / 30.0, frame) for i, frame in enumerate(frames)]
    assert (expected[2].track_ids > 0).any()  # confirmed after 3 frames (min_hits): IDs to publish
    for (_, message), want in zip(published, expected):
        assert message.header.frame_id == "cam0" and message.header.stamp == "stamp"
        assert len(message.detections) == len(want) > 0
        for detection, box, score, name, track_id in zip(message.detections, want.boxes, want.scores, want.names,
                                                         want.track_ids):
            x1, y1, x2, y2 = (float(v) for v in box)
            center = detection.bbox.center.position  # the same float32 numbers: equal to rounding
            np.testing.assert_allclose([center.x, center.y, detection.bbox.size_x, detection.bbox.size_y],
                                       [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], atol=1e-3)
            (hypothesis,) = detection.results
            assert hypothesis.hypothesis.class_id == name and abs(hypothesis.hypothesis.score - float(score)) < 1e-6
            assert detection.id == (str(track_id) if track_id >= 0 else "")  # the persistent ID, once confirmed
