import time

import pytest
import torch

from ck_plugins import measure, models, stats


def test_host_timer_keeps_every_iteration_of_every_repetition():
    calls = []
    timing = measure.time_iterations(lambda: calls.append(time.sleep(0.002)), torch.device("cpu"), warmup=2,
                                     iterations=4, repetitions=3)
    assert len(calls) == 2 + 12 and timing.clock == "host-perf-counter"
    assert [len(r) for r in timing.samples_ms] == [4, 4, 4] and min(min(r) for r in timing.samples_ms) >= 2.0


@pytest.mark.parametrize("collecting", [True, False])
def test_the_garbage_collector_is_paused_while_steps_are_sized_and_timed_and_restored_after(collecting):
    import gc

    seen = []
    (gc.enable if collecting else gc.disable)()
    try:
        measure.time_iterations(lambda: seen.append(gc.isenabled()), torch.device("cpu"), warmup=4, iterations=3,
                                repetitions=2, min_repetition_ms=1e-9)
        after = gc.isenabled()
    finally:
        gc.enable()
    assert seen[0] == collecting and not any(seen[1:])  # the first warm-up step: collecting as before; then sizing
    assert len(seen) == 4 + 6 and after == collecting


def test_per_layer_pass_covers_every_leaf_in_order():
    model = models.build("squeezenet-1.1")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        times = measure.per_layer_times(model, lambda: model(x), torch.device("cpu"), passes=1)
    assert [t.label for t in times] == [label for label, _ in models.leaves(model)]
    convs = [t for t in times if t.type == "Conv2d"]
    assert len(convs) == 26 and all(t.time_ms > 0 for t in convs)
    assert not model._forward_hooks and not model.features[0]._forward_pre_hooks  # hooks removed


def test_noise_flags_iterations_or_repetitions_that_spread():
    quiet = stats.point_time([[10.0, 10.1, 9.9, 10.0]] * 3)
    spread_inside = stats.point_time([[10.0, 14.0, 6.0, 10.0]] * 3)
    spread_between = stats.point_time([[10.0] * 4, [10.0] * 4, [11.0] * 4])
    assert quiet.time_ms == 10.0 and not quiet.noisy and spread_inside.noisy and spread_between.noisy
    assert spread_between.spread == pytest.approx(0.1) and spread_between.mean_ms == pytest.approx(31 / 3)
    with pytest.raises(ValueError):
        stats.point_time([])


def test_kernel_profile_is_none_on_the_cpu():
    assert measure.kernel_profile(lambda: None, torch.device("cpu")) is None


def test_a_module_called_twice_is_timed_for_both_calls():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.slow = torch.nn.Identity()

        def forward(self, x):
            return self.slow(self.slow(x))

    model = Twice()
    model.slow.register_forward_hook(lambda *a: time.sleep(0.01))  # registered first: inside the timed call
    times = measure.per_layer_times(model, lambda: model(torch.ones(1)), torch.device("cpu"), passes=1)
    assert times[0].label == "slow" and times[0].time_ms >= 20.0


class FakeClock:
    """A seeded host clock for the timing logic: a step advances it by exactly what the test says."""

    def __init__(self):
        self.now = 0.0  # steps of 2**-9 s keep every sum exact

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1e3


@pytest.fixture()
def fake_clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(measure, "_host_clock", fake)
    return fake


def test_a_minimum_repetition_time_raises_the_iteration_count_to_fill_it(fake_clock):
    step_ms = 1000 * 2**-9  # 1.953125 ms, exact in binary
    step = lambda: fake_clock.advance(step_ms)  # noqa: E731
    timing = measure.time_iterations(step, torch.device("cpu"), warmup=1, iterations=2, repetitions=2,
                                     min_repetition_ms=20 * step_ms)
    assert [len(r) for r in timing.samples_ms] == [20, 20]  # fills the minimum; never below the 2 asked for
    assert timing.samples_ms[0] == [step_ms] * 20 and timing.warmup_s == step_ms / 1e3
    short = measure.time_iterations(step, torch.device("cpu"), 1, 5, 1, min_repetition_ms=1)
    assert len(short.samples_ms[0]) == 5


def test_the_warm_up_s_last_steps_size_the_repetitions_without_extra_steps(fake_clock):
    step_ms, calls = 1000 * 2**-9, []

    def step():
        calls.append(1)
        fake_clock.advance(64 * step_ms if len(calls) == 1 else step_ms)  # the first step autotunes: not a sample

    timing = measure.time_iterations(step, torch.device("cpu"), warmup=5, iterations=2, repetitions=2,
                                     min_repetition_ms=20 * step_ms)
    assert [len(r) for r in timing.samples_ms] == [20, 20] and len(calls) == 5 + 40  # no step beyond the warm-up
    assert timing.warmup_s == 68 * step_ms / 1e3


def test_real_sleeps_are_timed_at_least_as_long_as_they_sleep():
    timing = measure.time_iterations(lambda: time.sleep(0.002), torch.device("cpu"), 1, 3, 1)
    assert all(t >= 2.0 for t in timing.samples_ms[0])  # a lower bound only: a loaded machine may take longer


def test_isolated_layer_times_run_each_call_alone_on_its_own_input(fake_clock):
    class Sleepy(torch.nn.Module):
        def forward(self, x):
            fake_clock.advance(2.0 * float(x.sum()))  # the time depends on the input this call received
            return x + 1

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.twice = Sleepy(), Sleepy()

        def forward(self, x):
            return self.twice(self.twice(self.first(x)))  # inputs 1, 2 and 3

    model = Net()
    times = measure.isolated_layer_times(model, lambda: model(torch.ones(1)), torch.device("cpu"), replays=3)
    assert [t.label for t in times] == ["first", "twice"]
    assert times[0].time_ms == pytest.approx(2.0) and times[1].time_ms == pytest.approx(10.0)  # 2 ms; 4 + 6 ms
