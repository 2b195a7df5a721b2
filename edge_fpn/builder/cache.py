"""TensorRT's native INT8 calibration cache: written from calibration ranges, and parsed back.

The format, as TensorRT's calibrators write it (and ``IInt8Calibrator.read_calibration_cache``
returns it): a header line ``TRT-<version>-<algorithm>``, then one line per tensor,
``<tensor name>: <scale>``, where the scale (amax / 127) is the big-endian hex of its float32 bits,
8 lowercase digits (1.0 is ``3f800000``). ``<version>`` is TensorRT's integer version, which
changed form in TensorRT 10: major*1000 + minor*100 + patch up to 8.x (8.6.1 -> 8601), major*10000
+ minor*100 + patch from 9/10 on (10.3.0 -> 100300). TensorRT refuses a cache whose header names
another version or algorithm and then recalibrates (with no data here), so the builder rewrites the
header to the local version (`retarget`).

Python 3.8: this module runs on the device.
"""
from __future__ import annotations

import re
import struct
from typing import Dict, Iterable, Mapping, Optional, Tuple

from ..errors import EdgeFpnError
from ..versions import parse_version

# calibration method -> the implicit-path calibrator whose cache it is written as
ALGORITHMS = {"entropy": "EntropyCalibration2", "percentile": "EntropyCalibration2", "mse": "EntropyCalibration2",
              "minmax": "MinMaxCalibration"}
# the TensorRT version written when calibrating where TensorRT is absent: JetPack 6.1/6.2's
DEFAULT_TENSORRT_VERSION = "10.3.0"
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_LINE = re.compile(r"^(.*): ([0-9a-fA-F]{1,8})$")


def version_number(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION for a version string, as cache headers carry it."""
    major, minor, patch = parse_version(version, width=3)
    if major >= 9:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    """The float32 bits of `scale`, big-endian, as 8 lowercase hex digits."""
    return struct.pack(">f", float(scale)).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", int(text, 16).to_bytes(4, "big"))[0]


def amax_to_scale(amax: float) -> float:
    """TensorRT's symmetric INT8 scale; a tensor that was always 0 gets the scale of amax 1."""
    amax = float(amax)
    return (amax if amax > 0.0 else 1.0) / 127.0


def header(version: str, method: str) -> str:
    if method not in ALGORITHMS:
        raise EdgeFpnError(f"unknown calibration method {method!r}; choose one of {', '.join(sorted(ALGORITHMS))}")
    return f"TRT-{version_number(version)}-{ALGORITHMS[method]}"


def format_cache(amax: Mapping[str, float], version: str, method: str) -> str:
    """The cache text for tensors -> amax (order kept)."""
    lines = [header(version, method)]
    for name, value in amax.items():
        if "\n" in name or ": " in name:
            raise EdgeFpnError(f"tensor name {name!r} cannot be written to a TensorRT calibration cache")
        lines.append(f"{name}: {scale_to_hex(amax_to_scale(value))}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> Tuple[str, Dict[str, float]]:
    """Cache text -> (header, tensor -> scale); a malformed cache is an EdgeFpnError."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not _HEADER.match(lines[0]):
        raise EdgeFpnError("the calibration cache does not start with a TRT-<version>-<algorithm> line; "
                           "it is not a TensorRT calibration cache (re-run `edge-fpn calibrate`)")
    scales: Dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        match = _LINE.match(line)
        if not match:
            raise EdgeFpnError(f"line {number} of the calibration cache ({line[:60]!r}) is not 'tensor: hexscale'; "
                               "re-run `edge-fpn calibrate`")
        scales[match.group(1)] = hex_to_scale(match.group(2))
    return lines[0], scales


def parse_header(line: str) -> Tuple[int, str]:
    match = _HEADER.match(line.strip())
    if not match:
        raise EdgeFpnError(f"{line!r} is not a TensorRT calibration cache header")
    return int(match.group(1)), match.group(2)


def retarget(text: str, version: str, algorithm: Optional[str] = None) -> str:
    """The same cache with its header naming `version` (and `algorithm` if given)."""
    first, _, rest = text.partition("\n")
    _, old_algorithm = parse_header(first)
    return f"TRT-{version_number(version)}-{algorithm or old_algorithm}\n{rest}"


def merge_stage_ranges(stages: Iterable[Tuple[str, Mapping[str, float]]]) -> Dict[str, float]:
    """One name -> amax table for the stages of a layout; a name seen twice keeps its first value.

    The engine layout has one stage ("detector"). The host layout's two stages share only the
    feature tensors (stage 1's outputs are stage 2's inputs, the same values); every other name is
    scoped by its module and appears in one stage only.
    """
    merged: Dict[str, float] = {}
    for _, table in stages:
        for name, value in table.items():
            merged.setdefault(name, float(value))
    return merged
