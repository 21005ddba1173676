"""A sweep's next worker loads, and a compile lib's compiles, while another one measures: the compilation runs ahead,
the compiled code only once the device is granted (go), and the measurement then reuses that load and compilation."""
import pytest
import torch
from torch import nn

from ck_plugins import backends, engine, measure
from ck_plugins.backends.compiled import CompiledBackend
from ck_plugins.backends.torch_eager import EagerConfig


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_a_compile_lib_compiles_ahead_holds_its_first_call_until_go_then_reuses_the_compilation():
    from torch._dynamo.utils import counters

    model, images = tiny(), torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    backend = CompiledBackend("torch-compile-cpu", EagerConfig("cpu", "fp32"), dynamic_batch=True)
    backend.load(model, 2)
    counters.clear()
    ahead = backend.compile_ahead(backend.prepare_input(images[:2]))
    assert ahead.wait_held(timeout_s=300), "the first call should be compiled and held at the gate"
    assert counters["stats"]["unique_graphs"] == 1
    ahead.go()
    with torch.inference_mode():
        out = backend.predict(backend.prepare_input(images))  # another batch size: the same (dynamic) compilation
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(out, model(images).detach(), rtol=1e-4, atol=1e-5)


def test_a_first_call_that_fails_ahead_is_not_held_and_go_returns():
    backend = CompiledBackend("torch-compile-cpu", EagerConfig("cpu", "fp32"), dynamic_batch=True)
    backend.load(tiny(), 2)
    ahead = backend.compile_ahead(torch.randn(2, 5, 8, 8))  # 5 channels for a 3-channel convolution
    assert ahead.wait_held(timeout_s=300) is False
    ahead.go()


def test_what_cannot_run_here_is_not_prepared_ahead_and_is_reported_by_the_measurement():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, where torch-compile-fp16 runs: the test needs one without")
    session = engine.Session("squeezenet-1.1", backends.create("torch-compile-fp16"), 1, input_shape=(3, 32, 32))
    session.prepare_host()
    assert session.prepare_ahead(1) is None
    measured = session.measure(engine.RunPlan("squeezenet-1.1", 1, 1, 1, 1, input_shape=(3, 32, 32)))
    assert not measured.run_success and "CUDA" in measured.error


def test_eager_libs_load_ahead_compile_nothing_and_measure_on_that_load():
    backend = backends.create("torch-cpu")
    session = engine.Session("squeezenet-1.1", backend, 2, input_shape=(3, 32, 32))
    session.prepare_host()
    assert session.prepare_ahead(1) is None and session._loaded_batch == 1
    loaded = backend.model
    measured = session.measure(engine.RunPlan("squeezenet-1.1", 2, 1, 1, 1, per_layer=False, input_shape=(3, 32, 32)))
    assert measured.run_success and backend.model is loaded  # batch-agnostic: not loaded again


def test_a_lib_whose_load_may_launch_kernels_is_not_loaded_ahead():
    session = engine.Session("squeezenet-1.1", backends.create("null"), 1, input_shape=(3, 32, 32))
    session.prepare_host()
    assert session.prepare_ahead(1) is None and session._loaded_batch is None


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: runs on the device machine (benchmarks/on-gpu.sh parity)")
@pytest.mark.parametrize("lib", ["torch-compile-fp16", "torch-compile-fp32", "torch-cudnn-fp16", "torch-amp",
                                 "torch-cublas-fp32"])
def test_on_a_gpu_loading_and_compiling_ahead_launch_no_kernel(lib):
    from torch.profiler import ProfilerActivity, profile

    backend = backends.create(lib, backends.Options(memory_format=backends.default_memory_format(lib),
                                                    dynamic_batch=True))
    session = engine.Session("resnet50", backend, 8)
    session.prepare_host()
    measure.open_device(backend.device)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ahead = session.prepare_ahead(4)
        held = ahead.wait_held(timeout_s=600) if ahead else None
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.startswith("Memcpy")]
    assert kernels == [] and session._loaded_batch == 4
    assert held if backend.fused else ahead is None  # compile libs compile ahead, eager ones only load
    if ahead:
        ahead.go()
    measured = session.measure(engine.RunPlan("resnet50", 4, 2, 5, 1, per_layer=False, profile=False))
    assert measured.run_success and measured.accuracy.top1_agreement > 0.5
