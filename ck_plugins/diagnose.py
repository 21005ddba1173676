"""Why reduced precision is (not) faster: measured facts in, one sentence and its reasons out. No torch here."""
from __future__ import annotations

from dataclasses import dataclass, field

from .libnames import HALF_PRECISIONS, REDUCED_PRECISIONS

LAUNCH_BOUND_BUSY = 0.6  # GPU busy less than this share of the wall time: the host cannot feed it
FEW_TENSOR_CORES = 0.5
LAYOUT_HEAVY = 0.08
ELEMENTWISE_HEAVY = 0.3
CONV_NETWORK = 0.5  # at least this share of the work in convolutions: layout and channel advice applies
DEPTHWISE_HEAVY = 0.02  # depthwise convolutions do little work but take much time: a small share already matters


@dataclass
class Facts:
    precision: str
    device: str  # "cuda" or "cpu"
    batch_size: int
    memory_format: str = "nchw"
    cudnn: bool = True
    cudnn_benchmark: bool = True
    speedup_vs_fp32: float | None = None  # fp32 with TF32 off, same memory format and batch
    speedup_vs_tf32: float | None = None
    gpu_busy_share: float | None = None
    tensor_core_share: float | None = None
    layout_share: float | None = None
    elementwise_share: float | None = None  # normalisation, activations, softmax, additions: memory-bound
    unaligned_convs: list[str] = field(default_factory=list)  # convolutions with channels not multiples of 8
    cpu_has_bf16: bool | None = None
    fused: bool = False  # a compiler (inductor, TensorRT) already fused the layers
    depthwise_share: float = 0.0  # share of the network's convolution work in depthwise convolutions
    conv_share: float = 1.0  # share of the network's work in convolutions (a transformer: little)


@dataclass
class Diagnosis:
    sentence: str
    reasons: list[str]
    faster: bool | None  # None when there is no fp32 baseline to compare with


def diagnose(f: Facts) -> Diagnosis:
    reasons = _reasons(f)
    faster = None if f.speedup_vs_fp32 is None else f.speedup_vs_fp32 >= 1.15
    head = f"{f.precision} at batch {f.batch_size}"
    if f.speedup_vs_fp32 is not None:
        head = f"{f.precision} is {f.speedup_vs_fp32:.2f}x fp32 at batch {f.batch_size}"
    if f.precision in ("fp32", "tf32") and f.device == "cuda" and f.speedup_vs_fp32 is not None:
        reasons = [r for r in reasons if "tensor-core" not in r or f.precision == "tf32"]
    shown = reasons[:2] if reasons else ["no obstacle found"]
    return Diagnosis(f"{head}: " + "; ".join(shown), reasons, faster)


def _reasons(f: Facts) -> list[str]:
    if f.device == "cpu":
        return _cpu_reasons(f)
    reasons = []
    if f.gpu_busy_share is not None and f.gpu_busy_share < LAUNCH_BOUND_BUSY:
        reasons.append(f"launch-bound, GPU busy {f.gpu_busy_share:.0%} of the time "
                       "(faster kernels cannot help; use a larger batch or CUDA graphs)")
    if not f.cudnn:
        reasons.append("cuDNN off: convolutions run as im2col + GEMM, bound by memory traffic")
    reduced = f.precision in REDUCED_PRECISIONS
    if f.elementwise_share is not None and f.elementwise_share > ELEMENTWISE_HEAVY:
        if f.fused:
            reasons.append(f"{f.elementwise_share:.0%} of GPU time in fused normalisation/activation/addition "
                           "kernels, which are memory-bound")
        else:
            reasons.append(f"{f.elementwise_share:.0%} of GPU time in unfused normalisation, activations, softmax "
                           "and additions, which are memory-bound (fold batch norm, fuse with torch.compile)")
    if f.layout_share is not None and f.layout_share > LAYOUT_HEAVY:
        reasons.append(f"{f.layout_share:.0%} of GPU time converting layouts"
                       + (" (NCHW: use channels_last)" if f.memory_format == "nchw" else ""))
    elif reduced and f.memory_format == "nchw" and f.precision != "tf32" and f.conv_share >= CONV_NETWORK:
        reasons.append("NCHW layout: tensor-core convolutions want channels_last")
    if reduced and f.tensor_core_share is not None:
        if f.tensor_core_share < FEW_TENSOR_CORES:
            reasons.append(f"tensor-core kernels only {f.tensor_core_share:.0%} of GPU time")
        else:
            reasons.append(f"tensor-core kernels {f.tensor_core_share:.0%} of GPU time")
    if f.cudnn and not f.cudnn_benchmark:
        reasons.append("cudnn.benchmark off: algorithms chosen by heuristics, not measured")
    if f.speedup_vs_tf32 is not None and f.precision in HALF_PRECISIONS:
        reasons.append(f"{f.speedup_vs_tf32:.2f}x TF32 (the fp32 baseline with TF32 on already uses tensor cores)")
    if reduced and f.depthwise_share > DEPTHWISE_HEAVY:
        reasons.append(f"{f.depthwise_share:.0%} of the convolution work is depthwise: a few operations per byte, "
                       "memory-bound, little for tensor cores")
    if f.unaligned_convs and reduced and f.conv_share >= CONV_NETWORK:
        names = ", ".join(f.unaligned_convs[:3])
        reasons.append(f"{len(f.unaligned_convs)} convolution(s) with channels not multiples of 8 ({names})")
    return reasons


def _cpu_reasons(f: Facts) -> list[str]:
    if f.precision != "bf16":
        if f.memory_format != "channels_last":
            return ["CPU fp32 NCHW: the baseline"]
        if f.speedup_vs_fp32 is not None and f.speedup_vs_fp32 < 1.0:  # the sentence follows the measured direction
            return ["channels_last is slower here: oneDNN reorders the layout around the layers it has no "
                    "channels_last kernel for"]
        return ["channels_last lets oneDNN skip the layout reorders around each convolution"]
    if f.cpu_has_bf16:
        return ["this CPU has bf16 instructions (AVX512-BF16 or AMX), so bf16 can beat fp32"]
    return ["this CPU has no bf16 instructions (AVX512-BF16/AMX): bf16 is emulated through fp32 conversions"]


def conv_share(flops_by_kind: dict) -> float:
    """The share of a network's work (FLOP by kind: conv, gemm, attention) in convolutions; 1 when unknown."""
    total = sum(flops_by_kind.values())
    return flops_by_kind.get("conv", 0.0) / total if total else 1.0


def depthwise_share(layers) -> float:
    """The share of the convolution work done by depthwise convolutions (one group per input channel)."""
    convs = [w for w in layers if w.kind == "conv"]
    total = sum(w.flops for w in convs)
    return sum(w.flops for w in convs if w.depthwise) / total if total else 0.0


def unaligned_convs(layers) -> list[str]:
    """Labels of convolutions whose input or output channel count is not a multiple of 8."""
    return [w.label for w in layers if w.type == "Conv2d"
            and ((w.in_channels or 0) % 8 or (w.out_channels or 0) % 8)]
