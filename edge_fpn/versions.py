"""TensorRT version strings, read and compared in one place (check, builder, cache, backends).

"10.3.0.30" -> (10, 3, 0, 30); "8.6.1.post1" -> (8, 6, 1): the leading dotted numbers. Callers
that compare a fixed number of parts ask for `width` (missing parts are 0). Python 3.8: this runs
on the device.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence, Tuple

from .errors import EdgeFpnError

Version = Tuple[int, ...]


def parse_version(text: Any, width: Optional[int] = None) -> Version:
    """The leading dotted numbers of a version string, padded with 0 or cut to `width` parts."""
    numbers = []
    for part in str(text).strip().split("."):
        match = re.match(r"^(\d+)", part)
        if not match:
            break
        numbers.append(int(match.group(1)))
        if match.group(1) != part:  # "1.post1": the number, then stop
            break
    if not numbers:
        raise EdgeFpnError(f"cannot read the TensorRT version {text!r} (expected MAJOR.MINOR.PATCH, like 10.3.0)")
    if width is not None:
        numbers = (numbers + [0] * width)[:width]
    return tuple(numbers)


def format_version(version: Sequence[int]) -> str:
    return ".".join(str(v) for v in version)
