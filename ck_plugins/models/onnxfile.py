"""An ONNX file as a model (`onnx:<path>`): run by ONNX Runtime on the CPU where torch would run it (the fp32
reference), handed as is to the onnxruntime lib, its work counted from the graph's shapes."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import BadInput
from .work import LayerWork, ModelWork


class OnnxModel(nn.Module):
    counts_its_own_work = True  # models.work.count_work asks it (torch cannot trace an ONNX session)

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.data = self.path.read_bytes()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self._session = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import onnxruntime

        if self._session is None:
            self._session = onnxruntime.InferenceSession(self.data, providers=["CPUExecutionProvider"])
        name = self._session.get_inputs()[0].name
        try:
            out = self._session.run(None, {name: images.detach().float().cpu().numpy()})[0]
        except Exception as error:  # ONNX Runtime's errors derive from Exception only
            raise RuntimeError(f"onnxruntime: {type(error).__name__}: {error}") from error
        return torch.from_numpy(out).to(images.device)

    def fixed_batch(self) -> tuple[str, int] | None:
        """(input name, batch) where the file's first input has a fixed batch dimension; None where it is dynamic."""
        import onnx

        first = onnx.load_from_string(self.data).graph.input[0]
        dims = first.type.tensor_type.shape.dim
        return (first.name, dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None

    def check_batch(self, batch_size: int) -> None:
        """A one-line BadInput where the file cannot run `batch_size` images at once."""
        fixed = self.fixed_batch()
        if fixed and fixed[1] != batch_size:
            raise BadInput("batch size", str(batch_size),
                           f"{fixed[1]}: input {fixed[0]!r} of {self.path.name} has a fixed batch of {fixed[1]} "
                           "(export it with a dynamic batch axis: dynamic_axes={NAME: {0: 'batch'}})")

    def work(self, input_shape) -> ModelWork:
        """Convolutions, Gemm and MatMul nodes of the graph, shapes inferred for one image."""
        import onnx

        graph = _with_batch_one(onnx.load_from_string(self.data), input_shape)
        inferred = onnx.shape_inference.infer_shapes(graph).graph
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)}
        shapes.update({t.name: list(t.dims) for t in inferred.initializer})
        layers, totals = [], {"conv": 0.0, "gemm": 0.0, "attention": 0.0}
        for index, node in enumerate(inferred.node):
            kind, flops = _node_flops(node, shapes)
            if kind:
                totals[kind] += flops
            out = shapes.get(node.output[0]) if node.output else None
            flops = flops if kind else float(math.prod(out[1:])) if out and all(out) else 0.0
            layers.append(LayerWork(node.name or f"{node.op_type}_{index}", node.op_type, flops, None, None,
                                    kind or "elementwise"))
        return ModelWork(layers, sum(totals.values()), totals)


def _with_batch_one(model, input_shape):
    first = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(first, (1, *input_shape)):
        dim.ClearField("dim_param")
        dim.dim_value = size
    return model


def _node_flops(node, shapes: dict) -> tuple[str | None, float]:
    """(kind, FLOP) of a node whose shapes are known; (None, 0) for other nodes."""
    inputs = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0]) if node.output else None
    if not out or not all(out) or any(not s for s in inputs[:2]):
        return None, 0.0
    if node.op_type == "Conv":
        weight = inputs[1]  # (out channels, in channels / groups, kh, kw)
        return "conv", 2.0 * math.prod(out) * math.prod(weight[1:])
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        k = inputs[0][0] if trans_a else inputs[0][1]
        return "gemm", 2.0 * math.prod(out) * k
    if node.op_type == "MatMul":
        return "gemm", 2.0 * math.prod(out) * inputs[0][-1]
    return None, 0.0
