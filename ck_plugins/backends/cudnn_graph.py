"""cuDNN graphs (nvidia-cudnn-frontend): every fused block of fusion.py (conv + bias [+ residual add] [+ ReLU],
batch norm folded in) runs as one cuDNN graph whose epilogue does the bias, the add and the ReLU; what cuDNN cannot
run stays torch; NHWC throughout; the whole forward pass is replayed as one CUDA graph. Each graph's execution plan
is chosen by timing cuDNN's heuristic candidates, and the choice is kept on disk (plancache) for the next run.
fp8: each block's input and weights are quantised per tensor to E4M3, the input scales calibrated on the seeded
images; the convolution accumulates in fp32 and its epilogue writes fp16."""
from __future__ import annotations

import copy
import statistics

import torch

from .. import caches, fusion, measure
from ..errors import Unsupported
from ..plancache import PlanCache, PlanChoice, block_key
from .base import Backend, capture_cuda_graph

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # its largest finite value
CANDIDATES = 8  # execution plans timed per graph (cuDNN's heuristics rank them; the best is rarely past the 8th)
TUNE_ITERATIONS = 10
TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.float16}  # fp8: torch parts in fp16


class CudnnGraphBackend(Backend):
    fused = True
    layer_note = fusion.LAYER_NOTE

    def __init__(self, name: str, precision: str, cuda_graph: bool = True, candidates: int = CANDIDATES):
        self.name, self.precision, self.cuda_graph, self.candidates = name, precision, cuda_graph, candidates
        self.device = torch.device("cuda")
        self._dtype = TORCH_DTYPES[precision]
        self.model = self._fp32 = self._blocks = self._graph = None
        self.fallbacks: list[str] = []

    def check(self) -> None:
        if not torch.cuda.is_available():
            raise Unsupported(f"{self.name} needs a CUDA GPU and torch.cuda.is_available() is False on this machine")
        try:
            import cudnn  # noqa: F401
        except ImportError as error:
            raise Unsupported(f"{self.name}: the cuDNN frontend is not installed (pip install "
                              f"nvidia-cudnn-frontend; import cudnn: {error})") from None
        if self.precision == "fp8" and torch.cuda.get_device_capability(self.device) < (8, 9):
            raise Unsupported(f"{self.name}: fp8 convolutions need compute capability 8.9 or later (Ada, Hopper); "
                              f"this GPU has {torch.cuda.get_device_capability(self.device)}")

    def load(self, model, batch_size: int) -> None:
        self.check()
        self._fp32 = fusion.fuse(model)
        self.model = copy.deepcopy(self._fp32).to(self.device, self._dtype, memory_format=torch.channels_last)
        self._graph = self._blocks = None

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, self._dtype).contiguous(memory_format=torch.channels_last)
        scales = self._calibrate(images) if self.precision == "fp8" else {}
        self._blocks = BlockGraphs(self.precision, self.candidates)
        self.fallbacks = self._blocks.attach(self.model, x, scales)
        if self.cuda_graph:
            self._capture(x)
        return x

    def _calibrate(self, images: torch.Tensor) -> dict[str, float]:
        """Each block's input scale: the largest |value| its input takes on the seeded images (fp32), over FP8_MAX."""
        reference = copy.deepcopy(self._fp32).to(self.device, memory_format=torch.channels_last)
        amax: dict[str, float] = {}
        hooks = [block.register_forward_pre_hook(_amax_recorder(amax, label))
                 for label, block in fusion.blocks_of(reference)]
        with torch.inference_mode():
            reference(images.to(self.device).contiguous(memory_format=torch.channels_last))
        for hook in hooks:
            hook.remove()
        return {label: max(value, 1e-12) / FP8_MAX for label, value in amax.items()}

    def _capture(self, x: torch.Tensor) -> None:
        graph, out = capture_cuda_graph(self.model, x, warmups=2)
        self._graph, self._static_in, self._static_out = graph, x, out

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._graph is None:
            return self.model(inputs)
        if inputs is not self._static_in:
            self._static_in.copy_(inputs)
        self._graph.replay()
        return self._static_out

    def unload(self) -> None:
        self.model = self._fp32 = self._graph = self._static_in = self._static_out = None
        if self._blocks is not None:
            self._blocks.close()
        self._blocks = None

    def version(self) -> str:
        import cudnn

        return f"torch {torch.__version__}, cuDNN {cudnn.backend_version()}, cudnn-frontend {cudnn.__version__}"

    def describe(self) -> dict:
        return {"lib": self.name, "precision": self.precision, "device": "cuda", "memory_format": "channels_last",
                "cuda_graph": self.cuda_graph, "plan_candidates": self.candidates,
                "torch_blocks": list(self.fallbacks)}

    def layer_model(self):
        return self.model  # its FusedConv blocks run their cuDNN graphs when called eagerly

    def layer_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)


def _amax_recorder(amax: dict, label: str):
    def hook(_module, args):
        amax[label] = max(amax.get(label, 0.0), float(args[0].abs().max()))
    return hook


class BlockGraphs:
    """The cuDNN graphs of one model at one input shape: one per distinct block geometry, shared by the blocks
    that have it; one handle and one workspace (blocks run one after another on one stream)."""

    def __init__(self, precision: str, candidates: int):
        import cudnn

        self.cudnn, self.precision, self.candidates = cudnn, precision, candidates
        self.handle = cudnn.create_handle()
        self.cache = PlanCache(caches.cudnn_plans())
        self.workspace = torch.empty(0, dtype=torch.uint8, device="cuda")
        self.graphs: dict[str, BlockGraph] = {}
        props = torch.cuda.get_device_properties(0)
        self.gpu = f"{props.name} sm{props.major}{props.minor}"

    def attach(self, model: torch.nn.Module, x: torch.Tensor, scales: dict[str, float]) -> list[str]:
        """Give every block of `model` its graph's run; return the blocks left to torch, each with cuDNN's reason."""
        shapes = _block_inputs(model, x)
        fallbacks = []
        for label, block in fusion.blocks_of(model):
            if label not in shapes:
                continue  # not reached by the forward pass
            try:
                graph = self._graph(block, shapes[label])
            except (self.cudnn.cudnnGraphNotSupportedError, RuntimeError) as error:
                fallbacks.append(f"{label}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                continue
            block.run = graph.runner(block, self, scales.get(label))
        return fallbacks

    def _graph(self, block: fusion.FusedConv, inputs: tuple) -> "BlockGraph":
        x_meta, r_meta = inputs
        key = block_key(self.gpu, self.cudnn.backend_version(), self.precision, x_meta[0], block.weight.shape,
                        block.stride, block.padding, block.dilation, block.spec.add, block.spec.relu)
        if key not in self.graphs:
            self.graphs[key] = BlockGraph(self, key, block, x_meta, r_meta)
        return self.graphs[key]

    def workspace_for(self, size: int) -> torch.Tensor:
        if size > self.workspace.numel():
            self.workspace = torch.empty(size, dtype=torch.uint8, device="cuda")
        return self.workspace

    def close(self) -> None:
        self.graphs.clear()
        self.cudnn.destroy_handle(self.handle)


def _block_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """Each block's (input, residual) as ((shape, stride, dtype), same or None), from one torch pass."""
    seen: dict[str, tuple] = {}

    def meta(t):
        return None if t is None else (tuple(t.shape), tuple(t.stride()), t.dtype)

    def recorder(label):
        def hook(_module, args):
            seen.setdefault(label, (meta(args[0]), meta(args[1]) if len(args) > 1 else None))
        return hook

    blocks = fusion.blocks_of(model)
    hooks = [block.register_forward_pre_hook(recorder(label)) for label, block in blocks]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


class BlockGraph:
    """One cuDNN graph conv -> [descale] -> bias -> [add] -> [relu], NHWC, with its chosen execution plan."""

    def __init__(self, owner: BlockGraphs, key: str, block: fusion.FusedConv, x_meta: tuple, r_meta: tuple | None):
        cudnn, fp8 = owner.cudnn, owner.precision == "fp8"
        io = cudnn.data_type.BFLOAT16 if owner.precision == "bf16" else cudnn.data_type.HALF
        x = _like(x_meta, FP8 if fp8 else None)
        w, _ = _weight(block, fp8)
        self.out_shape = _out_shape(x_meta[0], block)
        y_template = torch.empty(self.out_shape, dtype=x_meta[2], device="cuda").contiguous(
            memory_format=torch.channels_last)
        g = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=owner.handle)
        self.X, self.W = g.tensor_like(x), g.tensor_like(w)
        self.B = g.tensor_like(block.bias.view(1, -1, 1, 1))
        y = g.conv_fprop(self.X, self.W, padding=list(block.padding), stride=list(block.stride),
                         dilation=list(block.dilation))
        self.D = None
        if fp8:
            self.D = g.tensor_like(torch.ones(1, 1, 1, 1, device="cuda"))
            y = g.mul(y, self.D)
        y = g.bias(y, self.B)
        self.R, self.r_meta = None, r_meta
        if r_meta is not None:
            self.R = g.tensor_like(_like(r_meta))
            y = g.add(y, self.R)
        if block.spec.relu:
            y = g.relu(y)
        y.set_output(True).set_data_type(io).set_dim(list(self.out_shape)).set_stride(list(y_template.stride()))
        self.Y, self.graph, self.out_stride, self.out_dtype = y, g, y_template.stride(), x_meta[2]
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        self.index, self.choice = self._choose(owner, key, x, w, block)

    def _choose(self, owner: BlockGraphs, key: str, x, w, block) -> tuple[int, PlanChoice]:
        g = self.graph
        names = [g.get_plan_name_at_index(i) for i in range(g.get_execution_plan_count())]
        cached = owner.cache.get(key)
        if cached is not None and cached.plan in names:
            index = names.index(cached.plan)
            g.build_plan_at_index(index)
            return index, cached
        pack = self._pack(x, w, block, _like(self.r_meta) if self.r_meta is not None else None,
                          torch.empty_strided(self.out_shape, self.out_stride, dtype=self.out_dtype, device="cuda"),
                          torch.ones(1, 1, 1, 1, device="cuda"))
        timed = []
        for index in range(min(len(names), owner.candidates)):
            try:
                g.build_plan_at_index(index)
                workspace = owner.workspace_for(g.get_workspace_size_plan_at_index(index))
                timed.append((self._time(lambda: g.execute_plan_at_index(pack, workspace, index, owner.handle)),
                              index))
            except (owner.cudnn.cudnnGraphNotSupportedError, RuntimeError):
                continue  # a candidate that does not build or run here
        if not timed:
            raise owner.cudnn.cudnnGraphNotSupportedError(f"none of {len(names)} execution plans built for {key}")
        ms, index = min(timed)
        g.build_plan_at_index(index)
        choice = PlanChoice(names[index], round(ms, 5), len(timed))
        owner.cache.put(key, choice)
        return index, choice

    @staticmethod
    def _time(step) -> float:
        samples = measure.time_iterations(step, torch.device("cuda"), warmup=2, iterations=TUNE_ITERATIONS,
                                          repetitions=1).samples_ms[0]
        return statistics.median(samples)

    def _pack(self, x, w, block, residual, y, descale) -> dict:
        pack = {self.X: x, self.W: w, self.B: block.bias.view(1, -1, 1, 1), self.Y: y}
        if self.R is not None:
            pack[self.R] = residual
        if self.D is not None:
            pack[self.D] = descale
        return pack

    def runner(self, block: fusion.FusedConv, owner: BlockGraphs, scale: float | None) -> fusion.BlockRun:
        """The block's run: its own weights (quantised once for fp8) and fresh outputs, this graph's plan."""
        cudnn, handle, index = owner.cudnn, owner.handle, self.index
        w, w_scale = _weight(block, scale is not None)
        descale = None if scale is None else torch.full((1, 1, 1, 1), scale * w_scale, device="cuda")
        workspace = owner.workspace_for(self.graph.get_workspace_size_plan_at_index(index))
        shape, stride, dtype, graph = self.out_shape, self.out_stride, self.out_dtype, self.graph

        def run(x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
            x = x.contiguous(memory_format=torch.channels_last)
            if scale is not None:
                x = (x * (1.0 / scale)).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
            y = torch.empty_strided(shape, stride, dtype=dtype, device="cuda")
            r = residual.contiguous(memory_format=torch.channels_last) if residual is not None else None
            cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
            graph.execute_plan_at_index(self._pack(x, w, block, r, y, descale), owner.workspace, index, handle)
            return y
        return run


def _like(meta: tuple, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A random CUDA tensor with the recorded shape and strides (for building and tuning a graph)."""
    shape, stride, own = meta
    dtype = dtype or own
    drawn = torch.empty_strided(shape, stride, dtype=torch.float16 if dtype == FP8 else dtype, device="cuda")
    return drawn.normal_().to(dtype)


def _weight(block: fusion.FusedConv, fp8: bool) -> tuple[torch.Tensor, float]:
    """The block's weights as the graph reads them (NHWC; fp8: quantised per tensor) and their scale."""
    w = block.weight.contiguous(memory_format=torch.channels_last)
    if not fp8:
        return w, 1.0
    scale = max(float(w.float().abs().max()), 1e-12) / FP8_MAX
    return (w.float() / scale).to(FP8).contiguous(memory_format=torch.channels_last), scale


def _out_shape(x_shape: tuple, block: fusion.FusedConv) -> tuple:
    n, _, h, w = x_shape
    k, _, r, s = block.weight.shape
    size = lambda n_in, kernel, i: (n_in + 2 * block.padding[i] - block.dilation[i] * (kernel - 1) - 1) // block.stride[i] + 1  # noqa: E731,E501
    return (n, k, size(h, r, 0), size(w, s, 1))
