"""The backend interface: check, load, predict, describe (plus the input preparation that goes with load)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

MEMORY_FORMATS = ("nchw", "channels_last")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "amp")
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "amp": torch.float32}
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


class Backend(ABC):
    """One way to execute a network. The engine calls check(), load(), prepare_input(), then predict() many times."""

    name: str
    device: torch.device
    precision: str  # fp32, tf32, fp16, bf16, amp or "none" (null backend)
    fused: bool = False  # True where layers are fused, so per-layer times come from elsewhere or not at all
    batch_agnostic: bool = False  # True where one load() serves every batch size (a sweep loads it once)
    loads_ahead: bool = False  # True where load() launches no kernel: a sweep's next worker loads while one measures
    runs_onnx: bool = False  # True where load() takes an ONNX file's model (models.OnnxModel) as it is
    runs_network: bool = True  # False for the harness (null): no accuracy, per-layer pass or diagnosis to make
    input_shape: tuple[int, ...] = (3, 224, 224)  # one input without the batch: set by the engine before load()
    layer_note: str = ""  # what a per-layer record means where it is not one module (fused blocks), said in the point

    @abstractmethod
    def check(self) -> None:
        """Raise errors.Unsupported with the reason when this backend cannot run here."""

    @abstractmethod
    def load(self, model: nn.Module, batch_size: int) -> None:
        """Take the fp32 CPU model and make it ready to run batches of `batch_size`."""

    @abstractmethod
    def prepare_input(self, images: torch.Tensor) -> object:
        """Move fp32 NCHW CPU images where and how predict() wants them (outside the timed loop)."""

    @abstractmethod
    def predict(self, inputs: object) -> torch.Tensor:
        """One forward pass over one batch; returns the logits (asynchronously on a GPU)."""

    @abstractmethod
    def unload(self) -> None:
        """Drop everything load() made (models, engines, sessions, graphs), so its memory can be freed."""

    def prepare_host(self) -> None:
        """Host-only work that may be done before the device is granted (a sweep's worker does it while the previous
        one measures), such as importing a compiler. Nothing by default."""

    def compile_ahead(self, inputs: object):
        """Begin what the first call on `inputs` needs that launches no kernel (torch.compile's compilation), for a
        sweep's next worker to do while another one measures; return a handle whose go() finishes that call on the
        device, or None where there is nothing to do ahead (the default)."""
        return None

    def shared_plans(self) -> tuple | None:
        """What decides the cuDNN plans this backend's convolutions get, where torch runs them through cuDNN with
        autotuning: PyTorch keeps the autotuned plans per process, keyed by the convolution, so backends with the same
        key, run in one process, autotune each convolution once. None (the default): it shares none."""
        return None

    def version(self) -> str:
        """The versions of what runs the network (recorded in the point's platform as backend_version)."""
        return f"torch {torch.__version__}"

    def describe(self) -> dict:
        """The settings that define this backend's run, for the point's choices."""
        return {"lib": self.name, "precision": self.precision, "device": self.device.type}

    def layer_model(self) -> nn.Module | None:
        """The module whose leaves the per-layer pass hooks, or None where layers are fused away."""
        return None

    def layer_forward(self, inputs: object) -> torch.Tensor:
        """The forward pass the per-layer hooks observe (eager, even where predict() replays a CUDA graph)."""
        return self.predict(inputs)


def import_compiler() -> None:
    """Import torch.compile's compiler (dynamo, inductor, Triton where installed), which the first compilation would
    otherwise import in its load: about 6 s per process on the H200 machine."""
    import torch._dynamo  # noqa: F401
    import torch._inductor.compile_fx  # noqa: F401
    try:
        import triton  # noqa: F401
    except ImportError:  # CPU builds of torch come without Triton
        pass


def capture_cuda_graph(forward, x: torch.Tensor, warmups: int = 3) -> tuple:
    """`forward(x)` captured in a CUDA graph after `warmups` calls on a side stream (cudnn.benchmark and cuDNN plans
    chosen before capture): (graph, output), replayed on the same static input `x`."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(warmups):
            forward(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        out = forward(x)
    return graph, out
