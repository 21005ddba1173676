"""torch.compile (inductor) backends: fp32, fp16, bf16; layers are fused, so per-layer times come from eager."""
from __future__ import annotations

import functools
import threading

import torch

from .base import import_compiler
from .torch_eager import EagerBackend, EagerConfig

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class GatedInductor:
    """torch.compile's inductor (the backend `torch.compile(mode=...)` makes) with its compiled code behind a gate:
    compiling runs at once, a call of the compiled code waits while the gate is shut (`held` is set while one does).
    Open by default; open, it costs one flag test per call."""

    def __init__(self, mode: str, dynamic: bool | None):
        self.inner = torch._TorchCompileInductorWrapper(mode, None, dynamic)
        self.gate, self.held = threading.Event(), threading.Event()
        self.gate.set()

    def __call__(self, graph, example_inputs):
        compiled = self.inner(graph, example_inputs)
        gate, held = self.gate, self.held

        @functools.wraps(compiled, assigned=(), updated=("__dict__",))  # keeps dynamo's calling-convention flags
        def run(*args):
            if not gate.is_set():
                held.set()
                gate.wait()
            return compiled(*args)
        return run

    def __getattr__(self, name):  # what dynamo asks of the inductor wrapper (its config, reset)
        if name == "inner":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class Ahead:
    """The first call, compiling in a thread with the gate shut; go() opens the gate and waits for the call to end.
    Its errors are not kept: the measurement makes the same call and reports what it raises."""

    def __init__(self, backend: "CompiledBackend", inputs: torch.Tensor):
        self._inductor, self._ended = backend._inductor, threading.Event()
        self._inductor.gate.clear()
        self._inductor.held.clear()
        self._thread = threading.Thread(target=self._first_call, args=(backend.predict, inputs), daemon=True,
                                        name="compile-ahead")
        self._thread.start()

    def _first_call(self, predict, inputs: torch.Tensor) -> None:
        try:
            with torch.inference_mode():
                predict(inputs)
        except Exception:  # noqa: BLE001 (the measurement repeats this call and reports what it raises)
            pass
        finally:
            self._ended.set()
            self._inductor.held.set()  # wakes wait_held()

    def wait_held(self, timeout_s: float | None = None) -> bool:
        """True once the first call is compiled and waits at the gate; False if it ended first (it failed) or the
        time ran out."""
        return self._inductor.held.wait(timeout_s) and not self._ended.is_set()

    def go(self) -> None:
        self._inductor.gate.set()
        self._thread.join()


class CompiledBackend(EagerBackend):
    fused = True

    def __init__(self, name: str, config: EagerConfig, mode: str = "default", freezing: bool = False,
                 dynamic_batch: bool = False):
        super().__init__(name, config)
        self.mode, self.freezing, self.dynamic_batch = mode, freezing, dynamic_batch
        self.batch_agnostic = dynamic_batch  # a static compilation is specialised to one batch size
        self._compiled = None
        self._inductor: GatedInductor | None = None

    def prepare_host(self) -> None:
        import_compiler()

    def load(self, model, batch_size: int) -> None:
        super().load(model, batch_size)
        import torch._inductor.config as inductor_config

        inductor_config.freezing = self.freezing
        torch._dynamo.reset()
        dynamic = None if self.dynamic_batch else False
        self._inductor = GatedInductor(self.mode, dynamic)
        self._compiled = torch.compile(self.model, backend=self._inductor, dynamic=dynamic)

    def compile_ahead(self, inputs: torch.Tensor) -> Ahead:
        """Compile for `inputs` now, launching no kernel (a sweep's next worker does it while another one measures);
        the first call waits for the returned Ahead's go(), which runs it on the device and returns when it has."""
        return Ahead(self, inputs)

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        x = super().prepare_input(images)
        if self.dynamic_batch and len(x) > 1:  # batch 1 is specialised by dynamo whatever we ask: its own graph
            torch._dynamo.mark_dynamic(x, 0)
        return x

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._compiled(inputs)

    def unload(self) -> None:
        self._compiled = self._inductor = None
        torch._dynamo.reset()  # dynamo's caches hold the compiled graphs, and through them the weights
        super().unload()

    def version(self) -> str:
        try:
            import triton

            return f"{super().version()}, triton {triton.__version__}"
        except ImportError:
            return f"{super().version()} (inductor C++ on the CPU)"

    def describe(self) -> dict:
        return {**super().describe(), "compile_mode": self.mode, "freezing": self.freezing,
                "dynamic_batch": self.dynamic_batch}

    def layer_model(self):
        return None  # inductor fuses layers: per-layer hooks would time the eager model, not this one
