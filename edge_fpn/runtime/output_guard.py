"""Outputs that would write over a run's inputs, refused before anything is written.

People point `edge-fpn detect` at their only copy of a recording or a photo folder; an output that
is, or resolves to (through ``..`` or a symlink), an input must never be opened. Checked on real
paths (os.path.realpath), once the source has listed its files and before any sink opens:

- a file sink (.jsonl, video) that is one of the source's files;
- an image-directory sink that is the folder of any of the source's files (annotated images keep
  the source images' names, so they would replace them);
- two sinks on one path;
- an existing output file, unless ``force`` (as export, calibrate and build do).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Sequence

from ..errors import EdgeFpnError
from .sinks import sink_path


def refuse_outputs_over_inputs(inputs: Sequence[str], sinks: Sequence[Any], force: bool = False) -> None:
    """Raise EdgeFpnError (one sentence) for the first sink that would write over an input, share a
    path with another sink, or replace an existing file without `force`."""
    real_inputs = {os.path.realpath(path): path for path in inputs}
    input_dirs = {os.path.dirname(real): path for real, path in real_inputs.items()}
    seen: Dict[str, Any] = {}
    for spec in sinks:
        kind, path = sink_path(spec)
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise EdgeFpnError(f"sinks {seen[real]!r} and {path!r} are the same path; give each output its own path")
        seen[real] = path
        if kind == "file" and real in real_inputs:
            raise EdgeFpnError(f"sink {path!r} is the source file {real_inputs[real]!r} itself; edge-fpn never writes "
                               "over its input: choose another output path")
        if kind == "dir" and real in input_dirs:
            raise EdgeFpnError(f"sink {path!r} is the folder of the source image {input_dirs[real]!r}; annotated images "
                               "would replace the originals: choose another directory")
        if kind == "dir" and real in real_inputs:
            raise EdgeFpnError(f"sink {path!r} is the source file {real_inputs[real]!r}; choose a directory for "
                               "annotated images")
        if kind == "file" and os.path.exists(path) and not force:
            raise EdgeFpnError(f"sink {path!r} exists; pass --force to replace it, or choose another path")
