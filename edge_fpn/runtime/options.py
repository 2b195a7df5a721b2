"""Command-line options shared by the CLI's subcommands and the runtime's own (``bench``): one
definition each, imported by both ``edge_fpn/cli.py`` and ``runtime/commands.py``."""
from __future__ import annotations

import argparse


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    from .backends import DEVICES

    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where an ONNX Runtime bundle runs: auto (the GPU where onnxruntime-gpu has one, "
                             "else the CPU), cpu, or cuda (default auto)")


def add_cuda_argument(parser: argparse.ArgumentParser) -> None:
    from .backends import CUDA_BINDINGS

    parser.add_argument("--cuda", default="auto", choices=CUDA_BINDINGS,
                        help="what moves a TensorRT bundle's memory: auto (cuda-python, else pycuda), cuda-python "
                             "or pycuda (default auto)")
