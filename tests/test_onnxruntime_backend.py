"""ONNX Runtime backend: the execution provider choice (device auto | cpu | cuda, the TensorRT
provider only where it loads), checked with fake ``onnxruntime`` namespaces, and real CPU sessions."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from edge_fpn.bundle import StageSpec, TensorSpec
from edge_fpn.errors import EdgeFpnError
from edge_fpn.runtime.backends import open_stage
from edge_fpn.runtime.backends import onnxruntime_backend as orb
from edge_fpn.runtime.backends.onnxruntime_backend import (CPU, CUDA, TENSORRT, OnnxRuntimeBackend, profile_shapes,
                                                           provider_options, select_providers)


def fake_ort(providers, version="1.20.1"):
    return types.SimpleNamespace(get_available_providers=lambda: list(providers), __version__=version)


def never_called():
    raise AssertionError("the TensorRT libraries were probed although the TensorRT provider is not wanted")


# ---------------------------------------------------------------- the choice, pure

def test_auto_takes_the_cpu_where_only_the_cpu_is_listed():
    plan = select_providers(fake_ort([CPU]), "auto", tensorrt_loads=never_called)
    assert plan.providers == (CPU,)
    assert "no CUDA provider" in plan.note


def test_auto_takes_cuda_where_listed():
    assert select_providers(fake_ort([CUDA, CPU]), "auto", tensorrt_loads=never_called).providers == (CUDA, CPU)
    # onnxruntime-gpu also lists Azure and others: they are never asked for
    assert select_providers(fake_ort(["AzureExecutionProvider", CUDA, CPU]), "auto",
                            tensorrt_loads=never_called).providers == (CUDA, CPU)


def test_cuda_where_listed():
    assert select_providers(fake_ort([CUDA, CPU]), "cuda", tensorrt_loads=never_called).providers == (CUDA, CPU)


def test_cuda_where_not_listed_is_one_line_saying_to_install_onnxruntime_gpu():
    with pytest.raises(EdgeFpnError) as info:
        select_providers(fake_ort(["AzureExecutionProvider", CPU], version="1.32.0"), "cuda")
    message = str(info.value)
    assert "\n" not in message
    assert "onnxruntime-gpu" in message and "CUDA version" in message and "1.32.0" in message


def test_cpu_never_takes_a_gpu_provider():
    plan = select_providers(fake_ort([TENSORRT, CUDA, CPU]), "cpu", tensorrt_loads=never_called)
    assert plan.providers == (CPU,)


def test_bad_device_is_refused():
    with pytest.raises(EdgeFpnError, match="auto, cpu, cuda"):
        select_providers(fake_ort([CPU]), "gpu")


def test_tensorrt_provider_only_where_its_libraries_load():
    listed = fake_ort([TENSORRT, CUDA, CPU])
    assert select_providers(listed, "auto", tensorrt_loads=lambda: True).providers == (TENSORRT, CUDA, CPU)
    assert select_providers(listed, "cuda", tensorrt_loads=lambda: True).providers == (TENSORRT, CUDA, CPU)
    # onnxruntime-gpu lists it even without libnvinfer: then CUDA alone, and the plan says why
    plan = select_providers(listed, "auto", tensorrt_loads=lambda: False)
    assert plan.providers == (CUDA, CPU)
    assert "libnvinfer" in plan.note


def test_tensorrt_provider_when_asked():
    listed = fake_ort([TENSORRT, CUDA, CPU])
    assert select_providers(listed, "auto", tensorrt=False, tensorrt_loads=never_called).providers == (CUDA, CPU)
    assert select_providers(listed, "auto", tensorrt=True, tensorrt_loads=lambda: True).providers == (TENSORRT, CUDA, CPU)
    with pytest.raises(EdgeFpnError, match="libnvinfer"):
        select_providers(listed, "auto", tensorrt=True, tensorrt_loads=lambda: False)
    with pytest.raises(EdgeFpnError, match="not in this onnxruntime-gpu"):
        select_providers(fake_ort([CUDA, CPU]), "auto", tensorrt=True)
    with pytest.raises(EdgeFpnError, match="onnxruntime-gpu"):
        select_providers(fake_ort([CPU]), "auto", tensorrt=True)
    with pytest.raises(EdgeFpnError, match="device 'cpu'"):
        select_providers(listed, "cpu", tensorrt=True)


def test_tensorrt_library_probe(monkeypatch, tmp_path):
    """libnvinfer by soname, else from pip's tensorrt_libs folder by full path (RTLD_GLOBAL, so that
    ONNX Runtime's later dlopen of the soname finds it), else False; an OSError is never raised."""
    import ctypes
    loadable, tried = set(), []

    def cdll(name, mode=0):
        tried.append((name, mode))
        if name not in loadable:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setitem(sys.modules, "tensorrt_libs", None)  # no pip TensorRT
    assert orb.tensorrt_libraries_load() is False
    assert [name for name, _ in tried] == list(orb.TENSORRT_LIBRARIES)
    loadable.add("libnvinfer.so.8")  # JetPack 5's TensorRT
    tried.clear()
    assert orb.tensorrt_libraries_load() is True
    assert [name for name, _ in tried] == ["libnvinfer.so.10", "libnvinfer.so.8"]  # the first that loads
    # pip's wheels: off the loader's path, loaded by full path from the package's folder
    loadable.clear()
    wheel = tmp_path / "tensorrt_libs"
    wheel.mkdir()
    (wheel / "libnvinfer.so.10").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorrt_libs", types.SimpleNamespace(__path__=[str(wheel)]))
    assert orb.tensorrt_libraries_load() is False  # there, but it does not load
    loadable.add(str(wheel / "libnvinfer.so.10"))
    tried.clear()
    assert orb.tensorrt_libraries_load() is True
    assert tried[-1] == (str(wheel / "libnvinfer.so.10"), ctypes.RTLD_GLOBAL)


STAGE2 = StageSpec(file="stage2.onnx", backend="onnxruntime", precision="fp32",
                   inputs=[TensorSpec("feature_0", [1, 64, 80, 80]), TensorSpec("proposals", ["num_proposals", 4])],
                   outputs=[TensorSpec("class_logits", ["num_proposals", 5])],
                   dynamic_axes={"num_proposals": [1, 1000]})


def test_provider_options():
    ort = fake_ort([CUDA, CPU], version="1.20.1")
    # an FP32 stage runs strict FP32 on CUDA: no TF32 convolutions
    assert provider_options(ort, CUDA, STAGE2)["use_tf32"] == "0"
    assert provider_options(ort, CUDA, None)["use_tf32"] == "0"
    fp16 = StageSpec(file="s.onnx", backend="onnxruntime", precision="fp16", inputs=[], outputs=[])
    assert "use_tf32" not in provider_options(ort, CUDA, fp16)
    # onnxruntime before the option existed refuses unknown options: not passed there
    assert "use_tf32" not in provider_options(fake_ort([CUDA, CPU], version="1.14.1"), CUDA, STAGE2)
    trt = provider_options(ort, TENSORRT, STAGE2, cache_dir="/tmp/cache")
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == "/tmp/cache"
    assert trt["trt_profile_min_shapes"] == "proposals:1x4"
    assert trt["trt_profile_max_shapes"] == trt["trt_profile_opt_shapes"] == "proposals:1000x4"
    assert provider_options(ort, CPU, STAGE2) == {}


def test_profile_shapes():
    assert profile_shapes(None) is None
    assert profile_shapes(StageSpec(file="s", backend="onnxruntime", precision="fp32",
                                    inputs=[TensorSpec("images", [1, 3, 320, 320])], outputs=[])) is None
    two = StageSpec(file="s", backend="onnxruntime", precision="fp32",
                    inputs=[TensorSpec("a", ["n", 4]), TensorSpec("b", [2, "n", "m"])], outputs=[],
                    dynamic_axes={"n": [1, 10], "m": [3, 5]})
    assert profile_shapes(two) == ("a:1x4,b:2x1x3", "a:10x4,b:2x10x5", "a:10x4,b:2x10x5")
    undeclared = StageSpec(file="s", backend="onnxruntime", precision="fp32",
                           inputs=[TensorSpec("a", ["k", 4])], outputs=[], dynamic_axes={"n": [1, 10]})
    assert profile_shapes(undeclared) is None


# ---------------------------------------------------------------- the backend on a fake onnxruntime

class _FakeOrt(types.ModuleType):
    """Just enough of onnxruntime for the backend: the session fails with the providers in `fails`
    and silently drops those in `dropped`, as onnxruntime-gpu does when a library is missing."""

    def __init__(self, available, fails=(), dropped=()):
        super().__init__("onnxruntime")
        self.__version__ = "1.20.1"
        self.available, self.fails, self.dropped = list(available), set(fails), set(dropped)
        self.created = []
        self.GraphOptimizationLevel = types.SimpleNamespace(ORT_ENABLE_ALL=99)
        ort = self

        class SessionOptions:
            def add_session_config_entry(self, key, value):
                pass

        class InferenceSession:
            def __init__(self, path, sess_options=None, providers=None, **kwargs):
                names = [p[0] if isinstance(p, tuple) else p for p in providers]
                ort.created.append((names, kwargs))
                failing = [n for n in names if n in ort.fails]
                if failing:
                    raise RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : {failing[0]} could not be created\nmore")
                self.providers = [n for n in names if n not in ort.dropped]
                self.fallback = True

            def get_providers(self):
                return self.providers

            def disable_fallback(self):
                self.fallback = False

            def get_inputs(self):
                return [types.SimpleNamespace(name="x")]

            def get_outputs(self):
                return [types.SimpleNamespace(name="y")]

            def run(self, names, feeds):
                return [feeds["x"] + 1]

        self.SessionOptions = SessionOptions
        self.InferenceSession = InferenceSession

    def get_available_providers(self):
        return list(self.available)


@pytest.fixture
def use_fake_ort(monkeypatch, tmp_path):
    def install(*args, **kwargs):
        fake = _FakeOrt(*args, **kwargs)
        monkeypatch.setitem(sys.modules, "onnxruntime", fake)
        monkeypatch.setattr(orb, "tensorrt_libraries_load", lambda: True)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        return fake
    model = tmp_path / "model.onnx"
    model.write_bytes(b"fake")
    return install, str(model)


def test_backend_runs_on_cuda_and_records_it(use_fake_ort):
    install, path = use_fake_ort
    fake = install([CUDA, CPU])
    backend = OnnxRuntimeBackend(path, device="auto")
    assert backend.provider == CUDA and backend.providers == [CUDA, CPU]
    names, kwargs = fake.created[-1]
    assert names == [CUDA, CPU] and kwargs.get("enable_fallback") == 0  # ONNX Runtime's own printing retry off
    assert backend.session.fallback is False  # a failing GPU run raises instead of moving to the CPU
    np.testing.assert_array_equal(backend({"x": np.zeros(2)})["y"], np.ones(2))


def test_tensorrt_provider_failing_at_session_creation_falls_back_to_cuda(use_fake_ort, caplog):
    install, path = use_fake_ort
    fake = install([TENSORRT, CUDA, CPU], fails=[TENSORRT])
    backend = OnnxRuntimeBackend(path, device="auto", stage=STAGE2)
    assert [names for names, _ in fake.created] == [[TENSORRT, CUDA, CPU], [CUDA, CPU]]
    assert backend.provider == CUDA
    assert "TensorrtExecutionProvider failed" in backend.note
    assert caplog.text.count("edge-fpn:") == 1  # one warning, not one per check


def test_tensorrt_provider_dropped_silently_is_noted(use_fake_ort):
    install, path = use_fake_ort
    install([TENSORRT, CUDA, CPU], dropped=[TENSORRT])
    backend = OnnxRuntimeBackend(path, device="cuda", stage=STAGE2)
    assert backend.provider == CUDA and "TensorRT provider did not load" in backend.note


def test_cuda_dropped_silently(use_fake_ort):
    install, path = use_fake_ort
    install([CUDA, CPU], dropped=[CUDA])
    backend = OnnxRuntimeBackend(path, device="auto")
    assert backend.provider == CPU and "did not load" in backend.note
    with pytest.raises(EdgeFpnError, match="onnxruntime-gpu") as info:
        OnnxRuntimeBackend(path, device="cuda")
    assert "\n" not in str(info.value)


def test_cuda_failing_at_session_creation(use_fake_ort):
    install, path = use_fake_ort
    fake = install([CUDA, CPU], fails=[CUDA])
    assert OnnxRuntimeBackend(path, device="auto").provider == CPU
    assert [names for names, _ in fake.created] == [[CUDA, CPU], [CPU]]
    with pytest.raises(EdgeFpnError, match="CUDAExecutionProvider .*FAIL") as info:
        OnnxRuntimeBackend(path, device="cuda")
    assert "\n" not in str(info.value)


def test_cuda_without_the_cuda_provider(use_fake_ort):
    install, path = use_fake_ort
    install([CPU])
    with pytest.raises(EdgeFpnError, match="install onnxruntime-gpu"):
        OnnxRuntimeBackend(path, device="cuda")
    assert OnnxRuntimeBackend(path, device="auto").provider == CPU


# ---------------------------------------------------------------- real CPU sessions

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
                              "tiny", [x], [y], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_real_session(tiny_onnx, device):
    import onnxruntime as ort
    x = np.array([[-5, 0, 1, 2], [1, 1, 1, 1]], dtype=np.float32)
    with OnnxRuntimeBackend(tiny_onnx, device=device) as backend:
        if device == "cpu" or CUDA not in ort.get_available_providers():
            assert backend.provider == CPU
        else:  # a GPU machine: the provider planned first, or a fallback that says why
            plan = select_providers(ort, device)
            assert backend.provider in plan.providers, (backend.provider, plan)
            assert backend.provider == plan.providers[0] or backend.note, (backend.provider, plan)
        assert backend.input_names == ["x"] and backend.output_names == ["y"]
        np.testing.assert_array_equal(backend({"x": x})["y"], np.maximum(x + [1, 2, 3, 4], 0))


def test_real_session_cuda_where_there_is_none(tiny_onnx):
    import onnxruntime as ort
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(EdgeFpnError, match="onnxruntime-gpu"):
        OnnxRuntimeBackend(tiny_onnx, device="cuda")


def test_real_session_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(EdgeFpnError, match="corrupt"):
        OnnxRuntimeBackend(str(bad), device="cpu")


def test_open_stage_passes_the_device(tiny_onnx):
    import os
    stage = StageSpec(file=os.path.basename(tiny_onnx), backend="onnxruntime", precision="fp32",
                      inputs=[TensorSpec("x", ["n", 4])], outputs=[TensorSpec("y", ["n", 4])],
                      dynamic_axes={"n": [1, 100]})
    import types
    engine = StageSpec(file="stage1.engine", backend="tensorrt", precision="fp16", inputs=[], outputs=[])
    manifest = types.SimpleNamespace(stages={"stage2": stage, "stage1": engine}, provenance={})  # what it reads
    backend = open_stage(os.path.dirname(tiny_onnx), manifest, "stage2", device="cpu")
    assert backend.provider == CPU
    with pytest.raises(EdgeFpnError, match="auto, cpu, cuda"):
        open_stage(os.path.dirname(tiny_onnx), manifest, "stage2", device="gpu")
    with pytest.raises(EdgeFpnError, match="GPU only"):
        open_stage(os.path.dirname(tiny_onnx), manifest, "stage1", device="cpu")


# ---------------------------------------------------------------- the CLI flag

@pytest.mark.parametrize("argv", [["detect", "b", "s"], ["bench", "b"], ["demo"], ["eval", "b"]])
def test_cli_device_flag(argv):
    from edge_fpn.cli import build_parser
    parser = build_parser()
    assert parser.parse_args(argv).device == "auto"
    assert parser.parse_args(argv + ["--device", "cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--device", "gpu"])
