"""Shared fixtures: torchvision models with meaningful random weights, and bundles exported from them."""
from __future__ import annotations

import contextlib
import io
import os
import sys

# torch and ONNX Runtime share 2 cores in these tests: busy-waiting OpenMP threads slow both badly
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# TensorRT-RTX's parser aborts the process on a plugin layer unless a library link is made before
# anything loads it (edge_fpn/export/rtx_roialign.py): make it first, whichever test imports it
from edge_fpn.export.rtx_roialign import ensure_plugin_loading  # noqa: E402

ensure_plugin_loading()

TEST_SIZE = (320, 320)
TEST_CLASSES = ["__background__", "alpha", "beta", "gamma", "delta"]


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU (TensorRT, or cuda-python for the data-flow check; skipped elsewhere)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def reference_models():
    """Cache of (arch -> model) so that each architecture is built once per session."""
    return {}


def get_model(cache, arch):
    from reference_models import meaningful_model
    if arch not in cache:
        cache[arch] = meaningful_model(arch, len(TEST_CLASSES), TEST_SIZE, seed=0)
    return cache[arch]


@pytest.fixture(scope="session")
def bundle_factory(tmp_path_factory, reference_models):
    """Export (once per session) a bundle for an architecture and layout: returns (model, bundle_dir).

    The default layout here is "host" (the builder and host-layout tests); runtime tests use the
    engine layout, the default of `edge-fpn export`, through `tiny_bundle`.
    """
    bundles = {}

    def make(arch, layout="host"):
        if (arch, layout) not in bundles:
            from edge_fpn.export.onnx_export import ExportOptions, export_bundle
            model = get_model(reference_models, arch)
            out = str(tmp_path_factory.mktemp("bundles") / f"{arch}-{layout}")
            export_bundle(model, arch, TEST_CLASSES, TEST_SIZE, out, ExportOptions(progress=False, layout=layout))
            bundles[arch, layout] = out
        return reference_models[arch], bundles[arch, layout]
    return make


@pytest.fixture(scope="session")
def shapes_bundle(tmp_path_factory):
    """The shipped `shapes` model exported once per session per layout: layout -> (model, bundle dir)."""
    bundles = {}

    def make(layout="engine"):
        if layout not in bundles:
            from edge_fpn.cli import main
            from edge_fpn.model.loading import load_shipped_model

            # exported as a user does (`edge-fpn export --model shapes`); tests only read it
            out = str(tmp_path_factory.mktemp("shapes") / layout)
            # (its "wrote ..." line kept out of stdout: the first test to ask for the bundle may be
            # reading its own command's stdout, as the eval --json tests do when run alone)
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(["export", "--model", "shapes", "--postprocess", layout, "--output", out, "--quiet"]) == 0
            bundles[layout] = load_shipped_model("shapes")[0], out
        return bundles[layout]
    return make


@pytest.fixture(scope="session")
def tiny_bundle(bundle_factory):
    """A small engine-layout bundle (MobileNetV3 320 FPN, random but meaningful weights) for runtime tests."""
    return bundle_factory("fasterrcnn_mobilenet_v3_large_320_fpn", layout="engine")[1]


@pytest.fixture(scope="session")
def tiny_host_bundle(bundle_factory):
    """The same model in the host layout (stage 1 + numpy proposals + stage 2)."""
    return bundle_factory("fasterrcnn_mobilenet_v3_large_320_fpn", layout="host")[1]


def textured_image(seed: int, height: int, width: int) -> np.ndarray:
    """A BGR uint8 image with structure (blobs and edges), so random detectors respond to it."""
    import cv2
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur((rng.random((height, width, 3)) * 255).astype(np.uint8), (0, 0), 3)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(8, max(9, min(height, width) // 3)))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), r, color, -1)
        else:
            cv2.rectangle(image, (x - r, y - r), (x + r, y + r), color, -1)
    return image
