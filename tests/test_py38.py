"""Everything a Jetson runs must run on JetPack 5's Python 3.8: checked with vermin."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JETSON_FILES = ["edge_fpn/runtime", "edge_fpn/bundle.py", "edge_fpn/errors.py", "edge_fpn/cli.py",
                "edge_fpn/__init__.py", "edge_fpn/builder/tensorrt_builder.py", "samples"]


def test_jetson_code_is_python_3_8_compatible():
    pytest.importorskip("vermin")  # installed by the dev extra
    paths = [p for p in JETSON_FILES if os.path.exists(os.path.join(ROOT, p))]
    # vermin has no __main__ module: call its console entry point
    command = [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())",
               "-t=3.8-", "--no-tips", "--violations", "--no-parse-comments"] + paths
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
