"""cuDNN graphs (nvidia-cudnn-frontend): every fused block of fusion.py (conv + bias [+ residual add] [+ ReLU],
batch norm folded in) runs as one cuDNN graph whose epilogue does the bias, the add and the ReLU; what cuDNN cannot
run stays torch, max pools compiled into one Triton kernel each; NHWC throughout; the whole forward pass is replayed
as one CUDA graph. Each graph's execution plan is chosen by timing cuDNN's heuristic candidates, and the choice is
kept on disk (plancache) for the next run.
fp8: weights quantised per tensor to E4M3 (a block whose input channels are not a multiple of 16 stays fp16); a
tensor that only fp8 blocks read stays fp8 between them (its producer's epilogue scales, clips and writes it; a
residual read in fp8 is scaled back before the add), any other fp8 block input is quantised by torch; the scales are
calibrated on the seeded images; the convolution accumulates in fp32."""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import caches, fusion, measure
from ..errors import Unsupported
from ..plancache import PlanCache, PlanChoice, block_key
from .base import DTYPES, Backend, capture_cuda_graph, import_compiler

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # its largest finite value
# Execution plans timed per graph. fp16/bf16: cuDNN lists 14-43 for ResNet-50's blocks and the fastest was up to the
# 12th (H200); fp8 lists 11, each slower to build (~0.7 s).
CANDIDATES = {"fp16": 16, "bf16": 16, "fp8": 8}
TUNE_ITERATIONS = 10
TORCH_PRECISIONS = {"fp16": "fp16", "bf16": "bf16", "fp8": "fp16"}  # what runs outside fp8 blocks (torch, fp16 blocks)


class CudnnGraphBackend(Backend):
    fused = True
    layer_note = fusion.LAYER_NOTE

    def __init__(self, name: str, precision: str, cuda_graph: bool = True, candidates: int | None = None):
        self.name, self.precision, self.cuda_graph = name, precision, cuda_graph
        self.candidates = candidates or CANDIDATES[precision]
        self.device = torch.device("cuda")
        self._dtype = DTYPES[TORCH_PRECISIONS[precision]]
        self.model = self._fp32 = self._blocks = self._graph = None
        self.fallbacks: list[str] = []
        self.compiled_pools: list[str] = []
        self.fp16_blocks: list[str] = []  # fp8: the blocks that run fp16

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

    def prepare_host(self) -> None:
        import_compiler()  # for its compiled max pools

    def load(self, model, batch_size: int) -> None:
        self.check()
        self._fp32 = fusion.fuse(model)
        self.model = copy.deepcopy(self._fp32).to(self.device, self._dtype, memory_format=torch.channels_last)
        self.compiled_pools = compile_max_pools(self.model)
        self._graph = self._blocks = None

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, self._dtype).contiguous(memory_format=torch.channels_last)
        self._blocks = BlockGraphs(self.precision, self.candidates)
        refused = self._blocks.attach(self.model, x, {}) if self.precision != "fp8" else self._attach_fp8(images, x)
        self.fallbacks = [f"{label}: {reason}" for label, reason in refused.items()]
        if self.cuda_graph:
            self._capture(x)
        return x

    def _attach_fp8(self, images: torch.Tensor, x: torch.Tensor) -> dict[str, str]:
        """fp8 blocks, except those whose input channels are not a multiple of 16 (the 3-channel first layer), which
        run fp16: cuDNN's fp8 kernel for conv1 took 4.8 ms of 12.2 at batch 256 on an H200, its fp16 one 0.66 ms.
        Torch cannot read fp8, nor can those fp16 blocks: only blocks that run fp8 get an fp8 input. A block cuDNN
        refuses runs in torch; its producers then write fp16, and the blocks are attached again until no new block
        is refused."""
        amax, refused = self._amax(images), {}
        self.fp16_blocks = [label for label, block in fusion.blocks_of(self.model) if block.weight.shape[1] % 16]
        while True:
            scales = fp8_scales(fusion.links(self.model, {*self.fp16_blocks, *refused}), *amax)
            now = self._blocks.attach(self.model, x, scales)
            if now.keys() <= refused.keys():
                return now
            refused.update(now)

    def _amax(self, images: torch.Tensor) -> tuple[dict[str, float], dict[str, float]]:
        """The largest |value| of each block's input and of its output on the seeded images (fp32)."""
        reference = copy.deepcopy(self._fp32).to(self.device, memory_format=torch.channels_last)
        inputs: dict[str, float] = {}
        outputs: dict[str, float] = {}
        hooks = []
        for label, block in fusion.blocks_of(reference):
            hooks.append(block.register_forward_pre_hook(lambda _m, args, at=label: _keep_max(inputs, at, args[0])))
            hooks.append(block.register_forward_hook(lambda _m, _a, out, at=label: _keep_max(outputs, at, out)))
        with torch.inference_mode():
            reference(images.to(self.device).contiguous(memory_format=torch.channels_last))
        for hook in hooks:
            hook.remove()
        return inputs, outputs

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
                "torch_blocks": list(self.fallbacks), "compiled_max_pools": list(self.compiled_pools),
                "fp8_between_blocks": self.precision == "fp8", "fp16_blocks": list(self.fp16_blocks)}

    def layer_model(self):
        return self.model  # its FusedConv blocks run their cuDNN graphs when called eagerly

    def layer_forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)


def _keep_max(amax: dict, label: str, tensor: torch.Tensor) -> None:
    amax[label] = max(amax.get(label, 0.0), float(tensor.abs().max()))


@dataclass(frozen=True)
class Fp8Scales:
    """One fp8 block's per-tensor scales (real value = stored value x scale)."""
    input: float  # its input's: the producer's output scale where that block writes fp8, else calibrated
    residual: float | None  # its residual's, where a block wrote it in fp8 (None: it arrives in fp16)
    output: float | None  # its output's, where only blocks read it and it is written in fp8 (None: fp16)

    def variant(self) -> str:
        """What the cuDNN graph reads and writes, for the plan cache's key."""
        return "fp8" + ("|res fp8" if self.residual else "") + ("|out fp8" if self.output else "")


def fp8_scales(links: dict[str, fusion.BlockLinks], amax_in: dict[str, float],
               amax_out: dict[str, float]) -> dict[str, Fp8Scales]:
    scale = lambda amax: max(amax, 1e-12) / FP8_MAX  # noqa: E731
    out = {label: scale(amax_out[label]) for label, link in links.items()
           if link.feeds_only_blocks and label in amax_out}
    return {label: Fp8Scales(out.get(link.input_from) or scale(amax_in[label]), out.get(link.residual_from),
                             out.get(label))
            for label, link in links.items() if label in amax_in}


class CompiledMaxPool(nn.Module):
    """A max pool as one Triton kernel (torch.compile): torch's own CUDA max pool also writes int64 indices, and
    took 0.82 ms for ResNet-50's at batch 256 on an H200, the compiled one 0.13 ms."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        kernel, stride, padding, dilation, ceil = (pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                                   pool.ceil_mode)

        def max_pool(x):
            return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil)
        self.pool = torch.compile(max_pool, dynamic=False, fullgraph=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def compile_max_pools(model: nn.Module) -> list[str]:
    """Replace each nn.MaxPool2d of `model` (not one that returns indices) by a CompiledMaxPool; return their names."""
    names = [name for name, m in model.named_modules() if type(m) is nn.MaxPool2d and not m.return_indices]
    # Every CompiledMaxPool shares one code object, and dynamo keeps at most recompile_limit (8) compilations per
    # code object: GoogLeNet alone has 10 pool shapes, a sweep one set per batch size.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 1024)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, child, CompiledMaxPool(getattr(owner, child)))
    return names


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

    def attach(self, model: torch.nn.Module, x: torch.Tensor, scales: dict[str, Fp8Scales]) -> dict[str, str]:
        """Give every block of `model` its graph's run (fp8: with its scales); return the blocks left to torch, each
        with cuDNN's reason."""
        for _, block in fusion.blocks_of(model):
            block.run = None  # the shapes come from a torch pass
        shapes = _block_inputs(model, x)
        refused = {}
        for label, block in fusion.blocks_of(model):
            if label not in shapes:
                continue  # not reached by the forward pass
            try:
                graph = self._graph(block, shapes[label], scales.get(label))
            except (self.cudnn.cudnnGraphNotSupportedError, RuntimeError) as error:
                refused[label] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                continue
            block.run = graph.runner(block, self, scales.get(label))
        return refused

    def _graph(self, block: fusion.FusedConv, inputs: tuple, scales: Fp8Scales | None) -> "BlockGraph":
        x_meta, r_meta = inputs
        variant = scales.variant() if scales is not None else TORCH_PRECISIONS[self.precision]
        key = block_key(self.gpu, self.cudnn.backend_version(), variant, x_meta[0], block.weight.shape,
                        block.stride, block.padding, block.dilation, block.spec.add, block.spec.relu)
        if key not in self.graphs:
            self.graphs[key] = BlockGraph(self, key, block, x_meta, r_meta, scales)
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
    """One cuDNN graph conv -> [descale] -> bias -> [add residual] -> [relu] (fp8 output: -> scale -> clip), NHWC,
    with its chosen execution plan. Its scales are inputs (device tensors), so blocks of one geometry share it."""

    def __init__(self, owner: BlockGraphs, key: str, block: fusion.FusedConv, x_meta: tuple, r_meta: tuple | None,
                 scales: Fp8Scales | None):
        cudnn, fp8 = owner.cudnn, scales is not None
        io = cudnn.data_type.BFLOAT16 if owner.precision == "bf16" else cudnn.data_type.HALF
        x, (w, _) = _like(x_meta, FP8 if fp8 else None), _weight(block, fp8)
        self.out_shape = _out_shape(x_meta[0], block)
        self.out_dtype = FP8 if fp8 and scales.output else x_meta[2]
        self.out_stride = torch.empty(self.out_shape, device="meta").contiguous(
            memory_format=torch.channels_last).stride()
        self.r_meta = None if r_meta is None else (*r_meta[:2], FP8 if fp8 and scales.residual else r_meta[2])
        g = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=owner.handle)
        self.graph, self.X, self.W = g, g.tensor_like(x), g.tensor_like(w)
        self.B = g.tensor_like(block.bias.view(1, -1, 1, 1))
        self.scalars = {}  # name -> graph tensor of one fp32 value: descale, residual scale, output 1/scale
        y = g.conv_fprop(self.X, self.W, padding=list(block.padding), stride=list(block.stride),
                         dilation=list(block.dilation))
        if fp8:
            y = g.mul(y, self._scalar("descale"))
        y = g.bias(y, self.B)
        self.R = None
        if self.r_meta is not None:
            self.R = residual = g.tensor_like(_like(self.r_meta))
            if fp8 and scales.residual:
                residual = g.mul(residual, self._scalar("residual"))
            y = g.add(y, residual)
        if self.out_dtype == FP8:  # scaled, then clipped to fp8's range (and at 0 for a ReLU)
            y = g.relu(g.mul(y, self._scalar("output")), lower_clip=0.0 if block.spec.relu else -FP8_MAX,
                       upper_clip=FP8_MAX)
        elif block.spec.relu:
            y = g.relu(y)
        out_type = cudnn.data_type.FP8_E4M3 if self.out_dtype == FP8 else io
        y.set_output(True).set_data_type(out_type).set_dim(list(self.out_shape)).set_stride(list(self.out_stride))
        self.Y = y
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        self.index, self.choice = self._choose(owner, key, x, w, block)

    def _scalar(self, name: str):
        self.scalars[name] = self.graph.tensor_like(torch.ones(1, 1, 1, 1, device="cuda"))
        return self.scalars[name]

    def _choose(self, owner: BlockGraphs, key: str, x, w, block) -> tuple[int, PlanChoice]:
        g = self.graph
        names = [g.get_plan_name_at_index(i) for i in range(g.get_execution_plan_count())]
        cached = owner.cache.get(key)
        if cached is not None and cached.plan in names:
            index = names.index(cached.plan)
            g.build_plan_at_index(index)
            return index, cached
        ones = {name: torch.ones(1, 1, 1, 1, device="cuda") for name in self.scalars}
        pack = self._pack(x, w, block, _like(self.r_meta) if self.r_meta is not None else None,
                          torch.empty_strided(self.out_shape, self.out_stride, dtype=self.out_dtype, device="cuda"),
                          ones)
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

    def _pack(self, x, w, block, residual, y, scalars: dict[str, torch.Tensor]) -> dict:
        pack = {self.X: x, self.W: w, self.B: block.bias.view(1, -1, 1, 1), self.Y: y}
        if self.R is not None:
            pack[self.R] = residual
        pack.update({self.scalars[name]: value for name, value in scalars.items()})
        return pack

    def runner(self, block: fusion.FusedConv, owner: BlockGraphs, scales: Fp8Scales | None) -> fusion.BlockRun:
        """The block's run: its own weights (quantised once for fp8), scales and fresh outputs, this graph's plan.
        An fp8 block's input arrives quantised from a block that writes fp8, or is quantised here."""
        cudnn, handle, index = owner.cudnn, owner.handle, self.index
        w, w_scale = _weight(block, scales is not None)
        scalars = {} if scales is None else {
            name: torch.full((1, 1, 1, 1), value, device="cuda") for name, value in
            (("descale", scales.input * w_scale), ("residual", scales.residual or 1.0),
             ("output", 1.0 / (scales.output or 1.0))) if name in self.scalars}
        owner.workspace_for(self.graph.get_workspace_size_plan_at_index(index))
        shape, stride, dtype, graph = self.out_shape, self.out_stride, self.out_dtype, self.graph

        def run(x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
            x = x.contiguous(memory_format=torch.channels_last)
            if scales is not None and x.dtype != FP8:
                x = (x * (1.0 / scales.input)).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
            y = torch.empty_strided(shape, stride, dtype=dtype, device="cuda")
            r = residual.contiguous(memory_format=torch.channels_last) if residual is not None else None
            cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
            graph.execute_plan_at_index(self._pack(x, w, block, r, y, scalars), owner.workspace, index, handle)
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
