#!/usr/bin/env python3
"""Live camera -> detections -> web viewer, the core loop of an edge-fpn program (about ten lines).

    python3 samples/live_camera.py --bundle engines/shapes --source csi://0 --host 0.0.0.0
    python3 samples/live_camera.py --bundle engines/shapes --source test:// --port 0 --max-frames 30

then open the printed URL in a browser (any machine on the network with --host 0.0.0.0).
Sources: csi://0, /dev/video0, rtsp://..., a video file, a directory of images, test://.
"""
from __future__ import annotations

import argparse
import sys

from edge_fpn import Detector
from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.pipeline import Pipeline


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--bundle", default="engines/shapes", help="bundle directory (default engines/shapes)")
    parser.add_argument("--source", default="csi://0", help="camera or stream URI (default csi://0)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: the whole network)")
    parser.add_argument("--port", type=int, default=8080, help="web viewer port (0: any free port)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="drop weaker detections")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames (default: run until Ctrl-C)")
    args = parser.parse_args(argv)
    try:
        # ---- the core loop ------------------------------------------------------------
        detector = Detector(args.bundle, score_threshold=args.score_threshold)
        viewer = f"http://{args.host}:{args.port}"
        with Pipeline(detector, args.source, [viewer], max_frames=args.max_frames) as pipeline:
            print(f"web viewer: {pipeline.sinks[0].url}", flush=True)
            for result in pipeline:
                best = ", ".join(f"{n} {s:.2f}" for n, s in zip(result.detections.names[:5], result.detections.scores))
                print(f"frame {result.index}: {len(result.detections)} objects ({best})", flush=True)
        # --------------------------------------------------------------------------------
    except EdgeFpnError as exc:
        print(f"live_camera: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
