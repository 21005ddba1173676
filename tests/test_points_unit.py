import json
import threading

import pytest

from ck_plugins import backends, ckrepo, engine, point
from ck_plugins.errors import BadInput


def null_point():
    measured = engine.run_point(engine.RunPlan("alexnet", 4, warmup=1, iterations=3, repetitions=2,
                                               per_layer=False, profile=False), backends.create("null"))
    return point.from_measurement(measured, None, {"commit": "abc", "dirty": False})


def test_a_measured_point_validates_and_keeps_raw_samples():
    data = null_point()
    runs = [c["run"] for c in data["characteristics_list"]]
    assert data["features"]["statistical_repetitions"] == 2 and [len(r["time_fw_ms_all"]) for r in runs] == [3, 3]


def test_schema_reports_every_problem_with_its_path():
    data = null_point()
    data["choices"]["env"]["CK_BATCH_SIZE"] = 0
    data["characteristics_list"][0]["run"]["time_fw_ms_all"] = ["fast"]
    del data["features"]["repo"]
    found = point.problems(data)
    assert any(p.startswith("choices/env/CK_BATCH_SIZE:") for p in found)
    assert any(p.startswith("characteristics_list/0/run/time_fw_ms_all/0:") for p in found)
    assert any("'repo' is a required property" in p for p in found)
    with pytest.raises(point.InvalidPoint):
        point.validate(data)


def _mutations():
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
               | st.text(max_size=12) | st.sampled_from(["onnx: ", "timm:x\n", "fp16", "FP16", "cuda", "3x224x224"]))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
    paths = st.sampled_from([("choices", "env", "CK_BATCH_SIZE"), ("choices", "env", "CK_MODEL"),
                             ("choices", "env", "CK_LIB"), ("choices", "env", "CK_INPUT_SHAPE"),
                             ("choices", "settings", "precision"), ("choices", "settings", "device"),
                             ("features", "schema_version"), ("features", "platform", "gpu"),
                             ("features", "model", "flops_per_image"), ("features", "repo"),
                             ("characteristics_list", 0, "run", "time_fw_ms_all"),
                             ("characteristics_list", 0, "run", "run_success"), ("characteristics_list", 1),
                             ("features", "layers", "label"), ("choices", "extra")])
    return st.lists(st.tuples(paths, values), min_size=1, max_size=3)


def test_the_compiled_schema_and_jsonschema_agree_on_what_is_valid():
    """point.problems passes valid points with the compiled schema (fastjsonschema) and lists an invalid one's
    problems with jsonschema: both must say the same of every point, or a point one refuses would pass."""
    from hypothesis import HealthCheck, given, settings

    from fixtures.build import valid_point_data

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(changes=_mutations())
    def check(changes):
        item = valid_point_data("0" * 40)
        for path, value in changes:
            target = item
            for key in path[:-1]:
                target = target[key] if isinstance(target, dict) and key in target or isinstance(target, list) \
                    and isinstance(key, int) and key < len(target) else None
                if target is None:
                    break
            if isinstance(target, dict) or (isinstance(target, list) and path[-1] < len(target)):
                target[path[-1]] = value
        version = point._known_version(item)
        full = list(point._validator(version).iter_errors(item))
        try:
            point._compiled(version)(item)
            fast = True
        except Exception:  # noqa: BLE001 - fastjsonschema's refusal, whatever its class
            fast = False
        assert fast == (not full), (changes, [e.message for e in full][:3])

    check()


def test_non_finite_times_never_reach_a_file(tmp_path):
    data = null_point()
    data["characteristics_list"][0]["run"]["time_fw_ms"] = float("nan")
    entry = ckrepo.ensure_experiment_entry(tmp_path, "alexnet", "null")
    with pytest.raises(ValueError):
        ckrepo.write_point(entry, data)
    assert list(entry.glob("ckp-*")) == [] and list(entry.glob(".ckp*")) == []


def test_concurrent_writers_get_distinct_subpoints(tmp_path):
    data = null_point()
    entry = ckrepo.ensure_experiment_entry(tmp_path, "alexnet", "null")
    threads = [threading.Thread(target=ckrepo.write_point, args=(entry, data)) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    names = sorted(p.name.split(".")[1] for p in entry.glob("ckp-*.json"))
    assert names == [f"{n:04d}" for n in range(1, 9)]
    assert all(json.loads(p.read_text()) == data for p in entry.glob("ckp-*.json"))


def test_registry_refuses_unknown_names_naming_the_accepted_ones():
    with pytest.raises(BadInput, match="lib 'torch-fp64'.*torch-cudnn-fp16"):
        backends.create("torch-fp64")
    with pytest.raises(BadInput, match="memory format 'nhwc'.*channels_last"):
        backends.create("torch-cpu", backends.Options(memory_format="nhwc"))


def test_tensorrt_without_tensorrt_is_a_failed_measurement_with_the_reason():
    measured = engine.run_point(engine.RunPlan("alexnet", 1), backends.create("tensorrt-fp16"))
    assert measured.run_success is False
    assert "CUDA GPU" in measured.error or "TensorRT is not installed" in measured.error


try:
    import torch
    import torch_tensorrt  # noqa: F401
    HAVE_TENSORRT = torch.cuda.is_available()
except ImportError:
    HAVE_TENSORRT = False


@pytest.mark.skipif(not HAVE_TENSORRT, reason="needs torch_tensorrt and a CUDA GPU; neither machine of this project "
                    "has TensorRT installed (install torch-tensorrt on a GPU machine to run it)")
@pytest.mark.parametrize("lib", ["tensorrt-fp32", "tensorrt-fp16"])
def test_tensorrt_engine_builds_and_matches_the_fp32_reference(lib):
    measured = engine.run_point(engine.RunPlan("resnet50", 4, warmup=2, iterations=3, repetitions=1),
                                backends.create(lib, backends.Options(memory_format="channels_last")))
    assert measured.run_success, measured.error
    assert measured.accuracy.top1_agreement >= 0.75 and measured.accuracy.relative_error < 0.05


def test_merge_renumbers_clashing_subpoints_and_skips_identical_points(tmp_path):
    data = null_point()
    for repo in ("a", "b"):
        entry = ckrepo.ensure_experiment_entry(tmp_path / repo, "alexnet", "null")
        ckrepo.write_point(entry, data)
    other = json.loads(json.dumps(data))
    other["features"]["repo"]["commit"] = "def"
    ckrepo.write_point(tmp_path / "b" / "experiment" / "alexnet-null", other)
    assert ckrepo.merge_repo(tmp_path / "b", tmp_path / "a") == (1, 1)
    merged = sorted(p.name.split(".")[1] for p in (tmp_path / "a" / "experiment" / "alexnet-null").glob("ckp-*"))
    assert merged == ["0001", "0002"]


def test_compile_mode_and_freezing_make_distinct_points_and_lib_labels(tmp_path):
    from ck_plugins import readpoints

    base = null_point()
    base["choices"]["env"].update(CK_LIB="torch-compile-fp16", CK_MEMORY_FORMAT="channels_last")
    base["choices"]["settings"] = {"lib": "torch-compile-fp16", "compile_mode": "default", "freezing": False}
    frozen = json.loads(json.dumps(base))
    frozen["choices"]["settings"]["freezing"] = True  # an older point: the setting only, not CK_FREEZING
    assert ckrepo.point_uid(base) != ckrepo.point_uid(frozen)
    entry = ckrepo.ensure_experiment_entry(tmp_path, "alexnet", "torch-compile-fp16")
    ckrepo.write_point(entry, base)
    ckrepo.write_point(entry, frozen)
    assert sorted(p.name.split(".")[1] for p in entry.glob("ckp-*")) == ["0001", "0001"]
    libs = set(readpoints.load([tmp_path]).runs.index.get_level_values("lib"))
    assert libs == {"torch-compile-fp16", "torch-compile-fp16+freezing"}
