"""Which device an engine is built on: GPU name and compute capability (through the runtime's
device-memory layer, so that the builder records exactly what the runtime compares), and on a
Jetson the L4T and JetPack release. Python 3.8: this module runs on the device.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional


# Jetson modules by /proc/device-tree/model, and their GPU's compute capability (for a device where
# neither pycuda nor cuda-python can be imported: the runtime compares capabilities, not names)
_JETSON_CAPABILITY = (("orin", "8.7"), ("xavier", "7.2"), ("tx2", "6.2"), ("nano", "5.3"), ("tx1", "5.3"))


def device_info() -> Dict[str, Any]:
    """GPU name, compute capability and (on a Jetson) L4T/JetPack release: best effort, never raises.

    The GPU comes from the runtime's own device-memory layer (cuda-python, else pycuda: the name
    and capability the runtime compares an engine's provenance with), else from the Jetson's
    device-tree model string.
    """
    info: Dict[str, Any] = _cuda_device()
    if "gpu_name" not in info:
        model = _read_text("/proc/device-tree/model").strip("\x00 \n")
        if model:
            info["gpu_name"] = model
            for key, capability in _JETSON_CAPABILITY:
                if key in model.lower():
                    info["compute_capability"] = capability
                    break
    release = _read_text("/etc/nv_tegra_release")
    if release:
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        if match:
            l4t = f"{match.group(1)}.{match.group(2)}"
            info["l4t"] = l4t
            jetpack = jetpack_of_l4t(l4t)
            if jetpack:
                info["jetpack"] = jetpack
    return info


def _cuda_device() -> Dict[str, Any]:
    try:
        from ..runtime.backends.cuda_memory import CudaSession

        session = CudaSession.acquire("auto", 0)
    except Exception:  # no binding, no driver, no device: the device tree may still tell
        return {}
    try:
        major, minor = session.compute_capability
        return {"gpu_name": str(session.name), "compute_capability": f"{major}.{minor}"}
    finally:
        session.release()


def jetpack_of_l4t(l4t: str) -> Optional[str]:
    """JetPack release of a Jetson Linux (L4T) version, for the releases edge-fpn targets."""
    parts = [int(p) for p in re.findall(r"\d+", l4t)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    if major == 35:
        return "5.1"
    if major == 36:
        if minor <= 2:
            return "6.0 DP"
        if minor == 3:
            return "6.0"
        return "6.2" if patch >= 3 else "6.1"
    if major == 38:
        return "7.0"
    return None


def _read_text(path: str) -> str:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
