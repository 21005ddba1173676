"""The measuring session a sweep worker uses: one model build, one load, one reference for many batch sizes."""
import torch

from ck_plugins import backends, engine


class CountingLoads:
    """Wraps a real backend's load to count calls (everything else is the real backend)."""

    def __init__(self, backend):
        self.loads, original = [], backend.load
        backend.load = lambda model, batch: (self.loads.append(batch), original(model, batch))[1]


def plan(batch, **kw):
    return engine.RunPlan("squeezenet-1.1", batch, warmup=1, iterations=2, repetitions=2, profile=False,
                          per_layer_passes=1, **kw)


def test_a_session_loads_a_batch_agnostic_backend_once_and_matches_separate_runs():
    backend = backends.create("torch-cpu")
    counter = CountingLoads(backend)
    session = engine.Session("squeezenet-1.1", backend, max_batch=3)
    measured = [session.measure(plan(b)) for b in (1, 3)]
    session.close()
    assert counter.loads == [1] and all(m.run_success for m in measured)
    assert [len(m.samples_ms) for m in measured] == [2, 2] and all(len(m.per_layer) == 2 for m in measured)
    alone = engine.run_point(plan(3), backends.create("torch-cpu"))
    assert measured[1].accuracy.relative_error < 1e-5 and alone.accuracy.relative_error < 1e-5
    assert torch.equal(engine.seeded_images(3, 0)[:1], engine.seeded_images(1, 0))  # a batch is a prefix


def test_a_batch_specific_backend_is_loaded_for_each_batch_size():
    backend = backends.create("null")
    counter = CountingLoads(backend)
    session = engine.Session("squeezenet-1.1", backend, max_batch=2)
    assert [session.measure(plan(b)).run_success for b in (1, 2, 2)] == [True, True, True]
    assert counter.loads == [1, 2]


def test_a_plan_outside_the_session_is_a_failed_measurement_not_a_crash():
    session = engine.Session("squeezenet-1.1", backends.create("null"), max_batch=2)
    failed = session.measure(plan(4))
    assert not failed.run_success and "batch 4" in failed.error and "batch <= 2" in failed.error


def test_folded_batch_norms_leave_the_outputs_and_mark_the_point():
    from ck_plugins import ckrepo, point

    measured = engine.run_point(engine.RunPlan("resnet50", 1, 1, 1, 1, profile=False),
                                backends.create("torch-cpu", backends.Options(fold_bn=True)))
    assert measured.run_success and measured.accuracy.relative_error < 1e-4
    assert not any(t.type == "BatchNorm2d" for t in measured.per_layer[0])
    data = point.from_measurement(measured, None, {"commit": "x", "dirty": False})
    assert data["choices"]["env"]["CK_FOLD_BN"] is True and ckrepo.point_features(data)["CK_FOLD_BN"] is True
    assert point.lib_label(data["choices"]["env"], data["choices"]["settings"]) == "torch-cpu+fold-bn"
