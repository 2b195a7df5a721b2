#!/usr/bin/env python3
"""A ROS 2 node that publishes edge-fpn detections as vision_msgs/Detection2DArray.

    ros2 run ... or: python3 samples/ros2_detector_node.py --ros-args -p bundle:=engines/shapes \
        -p source:=csi://0 -p topic:=detections -p score_threshold:=0.5

Needs a ROS 2 installation (rclpy, vision_msgs); detection runs on edge-fpn's pipeline threads
and each result is published as it comes (a live source keeps only the newest frame).
"""
from __future__ import annotations

import sys

try:  # ROS 2 is not installable everywhere: the module still imports (and compiles) without it
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import Header
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # pragma: no cover - exercised only where ROS 2 is installed
    rclpy = None
    Node = object


class DetectorNode(Node):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("edge_fpn_detector")
        from edge_fpn import Detector
        from edge_fpn.runtime.pipeline import Pipeline

        bundle = self.declare_parameter("bundle", "engines/shapes").value
        source = self.declare_parameter("source", "csi://0").value
        topic = self.declare_parameter("topic", "detections").value
        threshold = float(self.declare_parameter("score_threshold", 0.5).value)
        self.frame_id = self.declare_parameter("frame_id", "camera").value
        track = bool(self.declare_parameter("track", True).value)  # persistent IDs in Detection2D.id
        self.publisher = self.create_publisher(Detection2DArray, topic, 10)
        self.detector = Detector(bundle, score_threshold=threshold)
        self.pipeline = Pipeline(self.detector, source, quiet=True, on_result=self.publish,
                                 tracker=True if track else None)
        self.pipeline.start()
        self.get_logger().info(f"edge-fpn: {bundle} on {source} -> {topic}")

    def publish(self, result) -> None:
        header = Header()
        header.stamp = self.get_clock().now().to_msg()
        header.frame_id = self.frame_id
        message = Detection2DArray()
        message.header = header
        d = result.detections
        ids = d.track_ids if d.track_ids is not None else [-1] * len(d)
        for box, score, name, track_id in zip(d.boxes, d.scores, d.names, ids):
            x1, y1, x2, y2 = (float(v) for v in box)
            detection = Detection2D()
            detection.header = header
            if track_id >= 0 and hasattr(detection, "id"):  # vision_msgs >= 3: the object's persistent ID
                detection.id = str(int(track_id))
            bbox = BoundingBox2D()
            if hasattr(bbox.center, "position"):  # vision_msgs >= 4 (Humble): vision_msgs/Pose2D
                bbox.center.position.x, bbox.center.position.y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
            else:  # vision_msgs 3 (Foxy, Galactic): geometry_msgs/Pose2D
                bbox.center.x, bbox.center.y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
            bbox.size_x, bbox.size_y = x2 - x1, y2 - y1
            detection.bbox = bbox
            hypothesis = ObjectHypothesisWithPose()
            if hasattr(hypothesis, "hypothesis"):  # vision_msgs >= 4
                hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = str(name), float(score)
            else:
                hypothesis.id, hypothesis.score = str(name), float(score)
            detection.results.append(hypothesis)
            message.detections.append(detection)
        self.publisher.publish(message)

    def destroy_node(self) -> None:
        self.pipeline.close()
        self.detector.close()
        super().destroy_node()


def main(argv=None) -> int:
    if rclpy is None:
        print("ros2_detector_node: error: rclpy and vision_msgs are not installed; source your ROS 2 setup.bash first",
              file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    node = DetectorNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
