"""Fused blocks for the cuDNN-graph engine: trace a network with torch.fx, fold its batch norms into the
convolutions, and replace every `conv [+ bias] [+ add] [+ relu]` chain by one FusedConv module, which an executor
(backends/cudnn_graph.py: one cuDNN graph per block) runs; without one a block runs with torch (the reference
executor, which the CPU tests use). What is not in a block (pooling, concatenation, the classifier) stays torch.
No cuDNN here."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

ADDS = {operator.add, operator.iadd, torch.add}
RELUS = {F.relu, torch.relu, torch.relu_}
LAYER_NOTE = ("per-layer times: each fused block (conv [+ bias] [+ add] [+ relu], batch norm folded in) is one "
              "layer, named by its convolution; what is not in a block is timed as its own layer")

# An executor's run of one block: (input, residual or None) -> output.
BlockRun = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class BlockSpec:
    """What one fused block computes, in the order cuDNN's graph does: conv, + bias, + residual, relu."""
    label: str  # the convolution's module path
    add: bool
    relu: bool


class FusedConv(nn.Module):
    """relu?(conv(x, weight) + bias + residual?) as one layer; `run` is the executor's (None: torch, the reference)."""

    def __init__(self, conv: nn.Conv2d, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.run: BlockRun | None = None

    def reference(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if self.spec.relu else y

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.run is not None:
            return self.run(x, residual)
        return self.reference(x, residual)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, add={self.spec.add}, relu={self.spec.relu}"


@dataclass(frozen=True)
class BlockLinks:
    """Where a block's tensors come from and go: what lets an fp8 executor keep them quantised between blocks."""
    input_from: str | None  # the block whose output is this block's input (None: a torch op or the network input)
    residual_from: str | None  # the block whose output is added (None: no residual, or a torch op's output)
    feeds_only_blocks: bool  # every user of the output is a block, as its input or its residual


class FusionError(RuntimeError):
    """The network cannot be traced by torch.fx (data-dependent control flow): the lib's point fails with this."""


def fuse(model: nn.Module) -> fx.GraphModule:
    """A copy of `model` (fp32, eval) with batch norms folded and every conv chain replaced by a FusedConv."""
    from torch.fx.experimental.optimization import fuse as fold_batch_norms

    try:
        traced = fold_batch_norms(model.eval())  # symbolic_trace + conv/bn folding, on a deep copy
    except Exception as error:  # fx raises many types for untraceable code: one reason, with the cause
        raise FusionError(f"torch.fx cannot trace {type(model).__name__}: {type(error).__name__}: {error}") from error
    partition(traced)
    return traced


def partition(gm: fx.GraphModule) -> list[BlockSpec]:
    """Replace each conv [+ add] [+ relu] chain of `gm`'s graph by one FusedConv, in place; return the blocks."""
    modules = dict(gm.named_modules())
    blocks = []
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and type(modules.get(node.target)) is nn.Conv2d and _plain(modules[node.target]):
            blocks.append(_replace_chain(gm, node, modules[node.target]))
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return blocks


def blocks_of(gm: nn.Module) -> list[tuple[str, FusedConv]]:
    return [(name, m) for name, m in gm.named_modules() if isinstance(m, FusedConv)]


def links(gm: fx.GraphModule, torch_blocks=()) -> dict[str, BlockLinks]:
    """Each block's links in `gm`'s graph; the blocks named in `torch_blocks` (run by torch) count as torch ops."""
    modules = dict(gm.named_modules())

    def block(node) -> bool:
        return (isinstance(node, fx.Node) and node.op == "call_module" and node.target not in torch_blocks
                and isinstance(modules.get(node.target), FusedConv))

    found = {}
    for node in gm.graph.nodes:
        if block(node):
            sources = [a.target if block(a) else None for a in node.args] + [None]
            found[node.target] = BlockLinks(sources[0], sources[1], bool(node.users) and all(map(block, node.users)))
    return found


def _plain(conv: nn.Conv2d) -> bool:
    return conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)  # not padding="same" strings


def _replace_chain(gm: fx.GraphModule, conv_node: fx.Node, conv: nn.Conv2d) -> BlockSpec:
    chain, residual, last = [conv_node], None, conv_node
    add = _only_user(last, _is_add)
    if add is not None:
        others = [a for a in add.args if a is not last]
        if len(others) == 1 and isinstance(others[0], fx.Node):
            residual, last = others[0], add
            chain.append(add)
    relu = _only_user(last, _is_relu)
    if relu is not None:
        last = relu
        chain.append(relu)
    spec = BlockSpec(conv_node.target, residual is not None, relu is not None)
    gm.add_submodule(conv_node.target, FusedConv(conv, spec))
    with gm.graph.inserting_before(last):
        args = (conv_node.args[0],) if residual is None else (conv_node.args[0], residual)
        fused = gm.graph.call_module(conv_node.target, args)
    last.replace_all_uses_with(fused)
    for node in reversed(chain):
        gm.graph.erase_node(node)
    return spec


def _only_user(node: fx.Node, test) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and test(users[0]) else None


def _is_add(node: fx.Node) -> bool:
    plain = not node.kwargs  # torch.add(a, b, alpha=...) is not a plain sum
    if node.op == "call_function":
        return node.target in ADDS and plain and len(node.args) == 2
    return node.op == "call_method" and node.target in ("add", "add_") and plain and len(node.args) == 2


def _is_relu(node: fx.Node) -> bool:
    if node.op == "call_module":
        return type(node.graph.owning_module.get_submodule(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in RELUS
    return node.op == "call_method" and node.target in ("relu", "relu_")
