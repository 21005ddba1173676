"""The measuring session a sweep worker uses: one model build, one load, one reference for many batch sizes."""
import pytest
import torch

from ck_plugins import backends, engine
from ck_plugins.errors import Unsupported


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


def test_a_sibling_session_builds_nothing_again_and_measures_as_a_session_of_its_own(monkeypatch):
    from ck_plugins import models

    built, build = [], models.build
    monkeypatch.setattr(models, "build", lambda *a, **k: built.append(a) or build(*a, **k))
    first = engine.Session("squeezenet-1.1", backends.create("null"), max_batch=2)
    sibling = first.sibling(backends.create("torch-cpu"))
    measured = sibling.measure(plan(2))
    alone = engine.Session("squeezenet-1.1", backends.create("torch-cpu"), max_batch=2).measure(plan(2))
    assert len(built) == 2  # the first session's and the one alone: none for the sibling
    assert measured.run_success and measured.flops_per_image == alone.flops_per_image > 0
    assert measured.accuracy.relative_error < 1e-5 and [len(r) for r in measured.samples_ms] == [2, 2]
    with pytest.raises(ValueError, match="batch 3.*batch <= 2"):
        sibling.measure(plan(3))


def test_a_plan_outside_the_session_is_a_bug_and_raised():
    session = engine.Session("squeezenet-1.1", backends.create("null"), max_batch=2)
    with pytest.raises(ValueError, match="batch 4.*batch <= 2"):
        session.measure(plan(4))


class Failing(backends.Backend):
    """A backend whose load raises `error`: what a library failure, or a bug, looks like to the session."""
    name, precision, device = "failing", "fp32", torch.device("cpu")

    def __init__(self, error):
        self.error, self.unloaded = error, 0

    def check(self):
        return None

    def load(self, model, batch_size):
        raise self.error

    def prepare_input(self, images):
        return images

    def predict(self, inputs):
        raise AssertionError("never reached")

    def unload(self):
        self.unloaded += 1


@pytest.mark.parametrize("error, says", [(RuntimeError("CUDA error: an illegal memory access"), "RuntimeError: CUDA"),
                                         (Unsupported("fp16 needs a GPU"), "fp16 needs a GPU")])
def test_an_expected_failure_is_a_failed_point_and_the_backend_is_unloaded(error, says):
    backend = Failing(error)
    measured = engine.run_point(plan(1), backend)
    assert not measured.run_success and measured.error.startswith(says) and backend.unloaded >= 1


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), AssertionError("shape"), KeyError("x")])
def test_a_bug_in_a_backend_is_raised_not_recorded(error):
    with pytest.raises(type(error)):
        engine.run_point(plan(1), Failing(error))


@pytest.mark.parametrize("lib, loaded", [("torch-cpu", "model"), ("torch-cpu-bf16", "model"),
                                         ("onnxruntime", "_session")])
def test_every_backend_unloads_what_it_loaded_and_says_its_version(lib, loaded):
    backend = backends.create(lib)
    session = engine.Session("squeezenet-1.1", backend, max_batch=1)
    session._load(1)
    assert getattr(backend, loaded) is not None
    session.close()
    assert getattr(backend, loaded) is None and getattr(backend, "model", None) is None
    assert backend.version().split()[0] in ("torch", "onnxruntime")


@pytest.mark.parametrize("lib, loaded", [("torch-compile-fp16", "_compiled"), ("tensorrt-fp16", "_engine")])
def test_gpu_only_backends_unload_their_compiled_engines(lib, loaded):
    backend = backends.create(lib)  # loading needs a GPU here; what a load leaves behind is set by hand
    backend.model, backend._graph = torch.nn.Linear(1, 1), object()
    setattr(backend, loaded, object())
    backend.unload()
    assert getattr(backend, loaded) is None and backend.model is None and backend._graph is None


def test_the_backend_version_is_recorded_in_the_point():
    from ck_plugins import point

    measured = engine.run_point(plan(1, per_layer=False), backends.create("torch-cpu"))
    data = point.from_measurement(measured, None, {"commit": "x", "dirty": False})
    assert data["features"]["platform"]["backend_version"] == f"torch {torch.__version__}"


def test_folded_batch_norms_leave_the_outputs_and_mark_the_point():
    from ck_plugins import ckrepo, point

    measured = engine.run_point(engine.RunPlan("resnet50", 1, 1, 1, 1, profile=False),
                                backends.create("torch-cpu", backends.Options(fold_bn=True)))
    assert measured.run_success and measured.accuracy.relative_error < 1e-4
    assert not any(t.type == "BatchNorm2d" for t in measured.per_layer[0])
    data = point.from_measurement(measured, None, {"commit": "x", "dirty": False})
    assert data["choices"]["env"]["CK_FOLD_BN"] is True and ckrepo.point_features(data)["CK_FOLD_BN"] is True
    assert point.lib_label(data["choices"]["env"], data["choices"]["settings"]) == "torch-cpu+fold-bn"


def test_the_thread_count_is_set_recorded_and_tells_points_apart(tmp_path):
    from ck_plugins import bench, ckrepo, point, readpoints

    default = torch.get_num_threads()
    try:
        for threads in (1, 2):
            plan_ = plan(1, per_layer=False, threads=threads)
            measured = engine.run_point(plan_, backends.create("torch-cpu"))
            assert measured.platform["cpu_threads"] == threads == torch.get_num_threads()
            bench.record(bench.PointRequest(plan_, "torch-cpu", backends.Options(), tmp_path), measured)
    finally:
        torch.set_num_threads(default)
    files = sorted(tmp_path.glob("experiment/squeezenet-1.1-torch-cpu/ckp-*.json"))
    data = [point.read_file(f).choices for f in files]
    assert len(files) == 2 and len({f.name.split(".")[0] for f in files}) == 2  # two points, not two subpoints
    assert sorted(d["CK_NUM_THREADS"] for d in data) == ["1", "2"]
    assert readpoints.load([tmp_path]).dimensions == {"CK_NUM_THREADS": ["1", "2"]}


def test_the_backends_host_work_is_done_once_before_any_load():
    backend = backends.create("torch-cpu")
    calls = []
    original_load = backend.load
    backend.prepare_host = lambda: calls.append("host")
    backend.load = lambda model, batch: (calls.append(f"load {batch}"), original_load(model, batch))[1]
    session = engine.Session("squeezenet-1.1", backend, max_batch=2)
    session.prepare_host()  # what a sweep worker does before it is given the device
    assert calls == ["host"]
    assert all(session.measure(plan(b)).run_success for b in (1, 2))
    session.close()
    assert calls == ["host", "load 1"]


def test_compiling_backends_import_the_compiler_in_their_host_work():
    """In a fresh process (another test may have imported inductor already): not imported before, imported after
    each compiling backend's host work, and not by an eager backend's."""
    import subprocess
    import sys

    code = ("import sys; from ck_plugins import backends\n"
            "def imported(): return 'torch._inductor.compile_fx' in sys.modules\n"
            "backends.create('torch-cpu').prepare_host(); print(imported())\n"
            "for lib in ('torch-compile-fp32', 'cudnn-graph-fp16'):\n"
            "    before = imported(); backends.create(lib).prepare_host(); print(lib, before, imported())\n"
            "    sys.modules.pop('torch._inductor.compile_fx')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "torch-compile-fp32", "False", "True", "cudnn-graph-fp16", "False", "True"]


def test_workers_share_one_reference_named_by_what_it_depends_on(tmp_path, monkeypatch):
    computed = []
    real = engine.reference_logits
    monkeypatch.setattr(engine, "reference_logits", lambda *a: computed.append(1) or real(*a))
    references = engine.ReferenceCache(tmp_path / "references")

    def session_accuracy(model=None):
        session = engine.Session("squeezenet-1.1", backends.create("torch-cpu"), 2, model=model,
                                 references=references)
        session.prepare_host()  # names the reference before the device is granted
        measured = session.measure(plan(2, accuracy=True, per_layer=False))
        session.close()
        return measured.accuracy

    first, second = session_accuracy(), session_accuracy()  # two workers of one sweep
    assert len(computed) == 1 and len(list(references.folder.glob("*.json"))) == 1
    assert first == second and first.relative_error < 1e-5
    changed = engine.models.build("squeezenet-1.1")
    with torch.no_grad():
        changed.classifier[1].weight.mul_(2.0)  # other weights: another reference, not the cached one
    assert session_accuracy(changed).relative_error < 1e-5 and len(computed) == 2
    for kept in references.folder.glob("*.json"):
        kept.write_bytes(b"cut short")  # a file a killed worker left: computed again, and kept whole
    assert session_accuracy() == first and len(computed) == 3
    assert not list(references.folder.glob(".*.tmp"))


def test_a_backend_built_for_one_batch_size_is_loaded_again_at_another():
    """TensorRT builds its engine for one batch size: a session must load it again at the next (it inherited the
    eager libs' batch_agnostic = True and reused a batch-2 engine at batch 4). The session's rule is checked with an
    eager CPU lib that says the same of itself, which CI can run."""
    from ck_plugins.backends.tensorrt import TensorRTBackend
    from ck_plugins.backends.torch_eager import EagerBackend, EagerConfig

    assert TensorRTBackend("tensorrt-fp16", EagerConfig("cuda", "fp16")).batch_agnostic is False
    assert backends.create("torch-cpu").batch_agnostic is True

    class OneBatch(EagerBackend):
        batch_agnostic = False
        loads: list[int] = []

        def load(self, model, batch_size: int) -> None:
            self.loads.append(batch_size)
            super().load(model, batch_size)

    backend = OneBatch("torch-cpu", EagerConfig("cpu", "fp32"))
    session = engine.Session("squeezenet-1.1", backend, 4, input_shape=(3, 32, 32))
    for batch in (2, 4, 4):
        plan = engine.RunPlan("squeezenet-1.1", batch, warmup=1, iterations=2, repetitions=1, per_layer=False,
                              profile=False, accuracy=False, input_shape=(3, 32, 32))
        assert session.measure(plan).run_success
    assert OneBatch.loads == [2, 4]  # loaded again for batch 4, not for the second batch-4 point
