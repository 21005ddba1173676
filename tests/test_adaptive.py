"""The planner and the builder on synthetic per-layer data whose optimum is known (found by brute force)."""
import itertools
import json
import random

import pytest
import torch
from torch import nn

from ck_plugins import adaptive, models
from ck_plugins.adaptive import Config, Conversion

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
    convert = {(A, B): Conversion(0.0, 100.0), (B, A): Conversion(0.0, 100.0)}
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
    configs = [A, B, Config("fp16", "nchw"), Config("fp32", "nchw", cudnn=False)]
    layer_ms = {(layer.label, c): rng.uniform(0.1, 1.0) for layer in layers for c in configs}
    convert = {(x, y): Conversion(rng.uniform(0.0, 0.2), rng.uniform(0.5, 30.0))
               for x in configs for y in configs if adaptive.converts(x, y)}
    planned = adaptive.plan(layers, configs, layer_ms, convert)
    assert adaptive.plan_cost(layers, planned, layer_ms, convert) == pytest.approx(
        brute_force(layers, configs, layer_ms, convert))


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "squeezenet-1.1"])
def test_built_model_runs_each_layer_in_its_configuration_and_stays_close_to_fp32(name):
    model = models.build(name)
    labels = adaptive.labels(adaptive.dataflow(model))
    chosen = {label: (B if i % 3 == 1 else A) for i, label in enumerate(labels)}
    realised = adaptive.build(model, chosen)
    weighted = [label for i, label in enumerate(labels) if i % 3 == 1 and hasattr(model.get_submodule(label), "weight")]
    assert weighted and all(realised.body.get_submodule(label).layer.weight.dtype == torch.bfloat16 for label in weighted)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref, out = model(x), realised(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 0.05


def test_switches_apply_to_their_layer_only_and_cudnn_off_needs_no_conversion():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cudnn.enabled, x.dtype))
            return x

    off = Config("fp32", "nchw", cudnn=False)
    body = nn.Sequential(Probe(), Probe())
    realised = adaptive.build(body, {"0": off, "1": A})
    realised(torch.randn(1, 3, 4, 4))
    assert seen == [(False, torch.float32), (True, torch.float32)] and torch.backends.cudnn.enabled
    assert not adaptive.converts(A, off) and adaptive.converts(A, B)


def test_measured_conversions_are_nonnegative_and_grow_with_size():
    costs = adaptive.measure_conversions([A, B, Config("fp32", "nchw", cudnn=False)], torch.device("cpu"),
                                         sizes_mbytes=(0.25, 16.0))
    assert set(costs) == {(A, B), (B, A), (Config("fp32", "nchw", cudnn=False), B), (B, Config("fp32", "nchw", cudnn=False))}
    assert all(c.fixed_ms >= 0 and c.ms_per_mbyte > 0 for c in costs.values())
    assert costs[A, B].ms(16.0) > costs[A, B].ms(0.25)


def test_plans_round_trip_through_json_and_a_wrong_schema_is_refused():
    chosen = {"conv1": B, "fc": Config("tf32", "nchw", cudnn=False)}
    data = {"schema": adaptive.PLAN_SCHEMA, "plan": adaptive.plan_to_json(chosen)}
    assert adaptive.plan_from_json(data) == chosen
    with pytest.raises(ValueError, match="schema"):
        adaptive.plan_from_json({"schema": "other", "plan": {}})


def test_the_adaptive_lib_is_planned_built_measured_and_recorded_like_any_other(tmp_path):
    from ck_plugins import adaptive_run, backends, engine, point, readpoints, report

    small = adaptive_run.Effort(repetitions=1, iterations=3, warmup=1, per_layer_passes=1, min_repetition_ms=0,
                                conversion_mbytes=(0.25, 1.0))
    outcome = adaptive_run.run("squeezenet-1.1", 1, tmp_path, "cpu", effort=small)
    assert outcome.measured_ms and outcome.best_single_lib in ("torch-cpu", "torch-cpu-bf16")
    assert outcome.planned_ms <= outcome.greedy_ms + 1e-9 and sum(outcome.configs_used.values()) > 20
    recorded = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("experiment/*/ckp-*.json")}
    assert set(recorded) == {"squeezenet-1.1-torch-cpu", "squeezenet-1.1-torch-cpu-bf16", "squeezenet-1.1-adaptive"}
    ours = recorded["squeezenet-1.1-adaptive"]
    assert point.problems(ours) == [] and ours["characteristics_list"][0]["run"]["run_success"]
    settings = ours["choices"]["settings"]["plan"]
    assert settings["planned_ms"] == pytest.approx(outcome.planned_ms) and settings["best_single_lib"]
    assert ours["choices"]["env"]["CK_ADAPTIVE_PLAN"] == settings["digest"]
    loaded = readpoints.load([tmp_path])
    row = loaded.adaptive.iloc[0]
    assert len(loaded.adaptive) == 1 and row["per_layer_method"] == "isolated"
    assert row["measured_ms"] == pytest.approx(outcome.measured_ms) and row["planned_ms"] == pytest.approx(outcome.planned_ms)
    built = report.build(loaded, tmp_path / "report")
    assert "Adaptive solution, built and measured" in built.html_path.read_text()
    assert built.summary["adaptive_built"][0]["best_single_lib"] == outcome.best_single_lib
    squeezenet = next(m for m in built.summary["models"] if m["model"] == "squeezenet-1.1")
    assert "adaptive" not in squeezenet["speedup_over_baseline"] and squeezenet["fastest_lib"].startswith("torch-cpu")
    again = engine.run_point(engine.RunPlan("squeezenet-1.1", 1, 1, 2, 1, per_layer=False, profile=False),
                             backends.create("adaptive", backends.Options(plan=str(outcome.plan_file))))
    assert again.run_success and again.accuracy.top1_agreement == 1.0


@pytest.mark.parametrize("content, says", [(None, "needs a plan file"), ("{", "unreadable"),
                                            ('{"schema": "x", "plan": {}}', "schema")])
def test_a_missing_or_bad_plan_is_a_failed_point_with_the_reason(tmp_path, content, says):
    from ck_plugins import backends, engine

    path = ""
    if content is not None:
        path = tmp_path / "plan.json"
        path.write_text(content)
    failed = engine.run_point(engine.RunPlan("squeezenet-1.1", 1, 1, 1, 1, profile=False),
                              backends.create("adaptive", backends.Options(plan=str(path))))
    assert not failed.run_success and says in failed.error
