"""The planner and the builder on synthetic per-layer data whose optimum is known (found by brute force)."""
import itertools
import random

import pytest
import torch
from torch import nn

from ck_plugins import adaptive, models
from ck_plugins.adaptive import Config

A, B = Config("fp32", "nchw"), Config("bf16", "channels_last")


class Branchy(nn.Module):
    """A stem, two branches (one of them two layers deep) added, then a concatenation with a third branch."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.a2(self.a1(x)) + self.b(x)
        return self.head(torch.cat([y, self.c(x)], 1)).mean((2, 3))


def brute_force(layers, configs, layer_ms, convert):
    labels = adaptive.labels(layers)
    plans = (dict(zip(labels, choice)) for choice in itertools.product(configs, repeat=len(labels)))
    return min(adaptive.plan_cost(layers, p, layer_ms, convert) for p in plans)


def test_dataflow_follows_branches_and_concatenations():
    layers = {layer.label: layer.producers for layer in adaptive.dataflow(Branchy(), image_size=8)}
    assert layers == {"stem": ("",), "a1": ("stem",), "a2": ("a1",), "b": ("stem",), "c": ("stem",),
                      "head": ("a2", "b", "c")}


def test_resnet_dataflow_has_the_residual_and_downsample_edges():
    layers = adaptive.dataflow(models.build("resnet50"))
    by_label = {}
    for layer in layers:
        by_label.setdefault(layer.label, []).append(layer.producers)
    assert by_label["layer1.0.downsample.0"] == [("maxpool",)]
    assert ("layer1.0.bn3", "layer1.0.downsample.1") in by_label["layer1.0.relu"]  # relu(out + identity)


def test_greedy_alternates_but_the_planner_sees_that_conversions_cost_more():
    model = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(6)])
    layers = adaptive.dataflow(model, image_size=16)
    layer_ms = {(layer.label, c): (0.9 if (int(layer.label) % 2) == (c == B) else 1.0)
                for layer in layers for c in (A, B)}
    convert = {(A, B): 100.0, (B, A): 100.0}
    greedy = adaptive.greedy(layers, [A, B], layer_ms)
    planned = adaptive.plan(layers, [A, B], layer_ms, convert)
    assert len(set(greedy.values())) == 2 and set(planned.values()) == {A}  # all fp32: no conversion at all
    assert adaptive.plan_cost(layers, planned, layer_ms, convert) == pytest.approx(
        brute_force(layers, [A, B], layer_ms, convert))
    assert adaptive.plan_cost(layers, greedy, layer_ms, convert) > adaptive.plan_cost(layers, planned, layer_ms, convert)


@pytest.mark.parametrize("seed", range(12))
def test_planner_finds_the_brute_force_optimum_on_a_branching_network(seed):
    rng = random.Random(seed)
    layers = adaptive.dataflow(Branchy(), image_size=32)
    configs = [A, B, Config("fp16", "nchw")]
    layer_ms = {(layer.label, c): rng.uniform(0.1, 1.0) for layer in layers for c in configs}
    convert = {(x, y): rng.uniform(0.5, 30.0) for x in configs for y in configs if x != y}
    convert.update({(Config(), y): convert.get((A, y), 0.0) for y in configs if y != Config()})
    planned = adaptive.plan(layers, configs, layer_ms, convert)
    assert adaptive.plan_cost(layers, planned, layer_ms, convert) == pytest.approx(
        brute_force(layers, configs, layer_ms, convert))


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "squeezenet-1.1"])
def test_built_model_runs_each_layer_in_its_configuration_and_stays_close_to_fp32(name):
    model = models.build(name)
    labels = adaptive.labels(adaptive.dataflow(model))
    chosen = {label: (B if i % 3 == 1 else A) for i, label in enumerate(labels)}
    realised = adaptive.build(model, chosen)
    assert realised.body.get_submodule(labels[1]).layer.weight.dtype == torch.bfloat16 \
        if hasattr(model.get_submodule(labels[1]), "weight") else True
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref, out = model(x), realised(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 0.05
