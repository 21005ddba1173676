"""Any network by name: the names, the work counter (checked against hand-computed counts), the py: and onnx:
sources end to end through the CLI, failures as failed points, energy, and the point schema for new names."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ck_plugins import engine, measure, modelnames, models, point
from ck_plugins.errors import BadInput

NETS = textwrap.dedent('''
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(8, classes)

        def forward(self, x):
            return self.fc(self.relu(self.conv(x)).mean((2, 3)))

    def tiny():
        return Tiny()

    def flat_only():
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))

    def not_a_module():
        return 42
''')


@pytest.fixture
def nets(tmp_path):
    folder = tmp_path / "userpkg"
    folder.mkdir()
    (folder / "mynets.py").write_text(NETS)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("mynets", None)


def cli(*args, cwd: Path, pythonpath: Path):
    paths = [str(pythonpath), str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run([sys.executable, "-m", "ck_plugins", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


# ------------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("text, where", [
    ("resnet5", "closest: resnet50"), ("tensorflow:resnet50", "torchvision:<name>"), ("torchvision:", "torchvision:<name>"),
    ("py:mynets", "py:<module>:<function>"), ("py:my nets:tiny", "py:<module>:<function>"),
])
def test_a_malformed_or_unknown_name_says_what_is_accepted(text, where):
    with pytest.raises(BadInput) as caught:
        modelnames.check(text)
    assert repr(text) in str(caught.value) and where in str(caught.value)


def test_an_unknown_function_of_a_module_names_the_closest(nets):
    with pytest.raises(BadInput, match=r"a function in module mynets \(closest: py:mynets:tiny, py:mynets:Tiny\)"):
        modelnames.check("py:mynets:tinny")
    with pytest.raises(BadInput, match="an importable module"):
        modelnames.check("py:no_such_module_here:tiny")


def test_an_onnx_name_needs_an_existing_file(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        modelnames.check(f"onnx:{tmp_path / 'missing.onnx'}")


@pytest.mark.parametrize("text", ["resnet50", "torchvision:vit_b_16", "timm:convnext_tiny.fb_in22k",
                                  "onnx:/home/me/my models/net,v2.onnx", "onnx:../nets/net.onnx",
                                  "py:my.package.nets:build", "timm:" + "x" * 150])
def test_every_name_gets_a_valid_ck_entry_name(text):
    entry = modelnames.entry_model(text)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", entry) and len(entry) <= 80
    assert entry == modelnames.entry_model(text)  # stable


def test_different_names_get_different_entry_names():
    names = ["onnx:/a/net.onnx", "onnx:/b/net.onnx", "torchvision:resnet18", "timm:resnet18", "py:a.b:c", "py:a:b_c"]
    assert len({modelnames.entry_model(n) for n in names}) == len(names)
    assert modelnames.entry_model("torchvision:vit_b_16") == "torchvision-vit_b_16"


@pytest.mark.parametrize("text, shape", [("3x224x224", (3, 224, 224)), ("1, 28, 28", (1, 28, 28)), ("64", (64,))])
def test_input_shapes(text, shape):
    assert modelnames.parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["", "3x0x224", "3x-1", "axb", "1x2x3x4x5"])
def test_bad_input_shapes(text):
    with pytest.raises(BadInput, match="input shape"):
        modelnames.parse_input_shape(text)


# ------------------------------------------------------------------------------------------ work counter
def test_a_convolution_and_a_linear_layer_are_counted_as_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 5))
    work = models.count_work(model, (3, 10, 10))
    conv = 2 * (8 * 10 * 10) * (3 * 3 * 3)  # output elements x multiply-adds per output element
    linear = 2 * 800 * 5
    assert work.flops_per_image == conv + linear
    assert [(w.label, w.kind, w.flops) for w in work.layers] == [
        ("0", "conv", conv), ("1", "elementwise", 800), ("2", "elementwise", 800), ("3", "gemm", linear)]


def test_a_depthwise_convolution_is_counted_and_known():
    work = models.count_work(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8)), (8, 6, 6))
    assert work.flops_per_image == 2 * (8 * 6 * 6) * 9 and work.layers[0].depthwise


def test_an_attention_block_is_counted_as_by_hand_and_is_one_layer():
    tokens, dim = 10, 64
    block = nn.MultiheadAttention(dim, 4, batch_first=True)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = block

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    work = models.count_work(Block().eval(), (tokens, dim))
    projections = 2 * tokens * dim * 3 * dim + 2 * tokens * dim * dim  # q, k, v in; out
    attention = 2 * tokens * tokens * dim * 2  # scores (q k^T) and the weighted sum of v, all heads
    assert work.flops_per_image == projections + attention
    assert work.flops_by_kind["attention"] == attention
    assert [(w.label, w.type) for w in work.layers] == [("attn", "MultiheadAttention")]


def test_attention_written_in_a_forward_counts_in_the_total():
    class Attention(nn.Module):
        def __init__(self, dim=32):
            super().__init__()
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(self, x):
            q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
            return self.proj(F.scaled_dot_product_attention(q, k, v).squeeze(1))

    work = models.count_work(Attention().eval(), (16, 32))
    assert work.flops_by_kind["attention"] == 2 * 16 * 16 * 32 * 2
    assert work.flops_by_kind["gemm"] == 2 * 16 * 32 * 96 + 2 * 16 * 32 * 32
    assert [w.label for w in work.layers] == ["qkv", "proj"]


def test_the_seed_models_count_as_before():
    assert models.gmac_per_image("resnet50") == pytest.approx(4.089, abs=0.001)


# --------------------------------------------------------------------------------------------- py: source
def test_a_py_model_runs_end_to_end_and_is_recorded_under_a_safe_entry(tmp_path, nets):
    done = cli("point", "--model", "py:mynets:tiny", "--lib", "torch-cpu", "--batch-size", "2", "--iterations", "2",
               "--repetitions", "1", "--warmup", "1", "--input-shape", "3x16x16", "--repo", str(tmp_path / "repo"),
               "--out", "r.json", cwd=tmp_path, pythonpath=nets)
    assert done.returncode == 0, done.stderr
    files = list((tmp_path / "repo" / "experiment" / "py-mynets_tiny-torch-cpu").glob("ckp-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    read = point.read(data)
    assert read.model == "py:mynets:tiny" and read.successful and read.time_ms > 0
    assert data["choices"]["env"]["CK_INPUT_SHAPE"] == "3x16x16"
    assert data["features"]["model"]["source"] == "py"
    assert data["features"]["model"]["flops_per_image"] == 2 * 8 * 16 * 16 * 27 + 2 * 8 * 10
    assert data["features"]["layers"]["label"] == ["conv", "relu", "fc"]


@pytest.mark.parametrize("function, shape, reason", [
    ("flat_only", "3x32x32", "forward pass of py:mynets:flat_only failed at input shape 1x3x32x32: RuntimeError"),
    ("not_a_module", "3x16x16", "returned a int, not a torch.nn.Module"),
])
def test_a_model_that_cannot_run_becomes_a_failed_point_with_the_reason(tmp_path, nets, function, shape, reason):
    done = cli("point", "--model", f"py:mynets:{function}", "--lib", "torch-cpu", "--batch-size", "2",
               "--input-shape", shape, "--repo", str(tmp_path / "repo"), "--out", "r.json", cwd=tmp_path,
               pythonpath=nets)
    assert done.returncode == 3, done.stderr
    [path] = (tmp_path / "repo" / "experiment").glob("*/ckp-*.json")
    read = point.read(json.loads(path.read_text()))
    assert not read.successful and reason in read.error


def test_an_unknown_model_is_one_line_with_the_closest_and_nothing_is_written(tmp_path, nets):
    done = cli("precision-bench", "--model", "py:mynets:tiy", "--out", "r.json", cwd=tmp_path, pythonpath=nets)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: model 'py:mynets:tiy' is not valid; expected a function in module mynets (closest: py:mynets:tiny)"]
    assert not (tmp_path / "r.json").exists()


def test_precision_bench_prints_the_table_for_any_network_and_records_its_points(tmp_path, nets):
    done = cli("precision-bench", "--model", "py:mynets:tiny", "--input-shape", "3x16x16", "--device", "cpu",
               "--batch-size", "2", "--iterations", "2", "--repetitions", "1", "--warmup", "1", "--record", "true",
               "--repo", str(tmp_path / "repo"), "--out", "r.json", cwd=tmp_path, pythonpath=nets)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("py:mynets:tiny, batch 2, cpu")
    assert "| fp32 | nchw |" in done.stdout and "Why:" in done.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["program"] == "precision-bench" and result["model"] == "py:mynets:tiny"
    entries = sorted(p.name for p in (tmp_path / "repo" / "experiment").iterdir() if p.is_dir() and p.name != ".cm")
    assert entries == ["py-mynets_tiny-torch-cpu", "py-mynets_tiny-torch-cpu-bf16"]
    points = [point.read(json.loads(p.read_text())) for p in (tmp_path / "repo" / "experiment").glob("*/ckp-*.json")]
    assert len(points) == 4 and {p.lib for p in points} == {"torch-cpu", "torch-cpu+channels_last", "torch-cpu-bf16",
                                                            "torch-cpu-bf16+channels_last"}


# -------------------------------------------------------------------------------------------- onnx: source
@pytest.fixture
def onnx_file(tmp_path, nets):
    import mynets

    path = tmp_path / "tiny.onnx"
    torch.onnx.export(mynets.tiny().eval(), (torch.randn(1, 3, 16, 16),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
                      opset_version=17)
    return path


def test_an_onnx_file_runs_through_onnx_runtime_with_its_work_counted_from_the_graph(tmp_path, onnx_file):
    work = models.count_work(models.build(f"onnx:{onnx_file}"), (3, 16, 16))
    assert work.flops_per_image == 2 * 8 * 16 * 16 * 27 + 2 * 8 * 10
    done = cli("point", "--model", f"onnx:{onnx_file}", "--lib", "onnxruntime", "--batch-size", "4",
               "--iterations", "2", "--repetitions", "1", "--input-shape", "3x16x16", "--repo", str(tmp_path / "repo"),
               "--out", "r.json", cwd=tmp_path, pythonpath=tmp_path)
    assert done.returncode == 0, done.stderr
    [path] = (tmp_path / "repo" / "experiment").glob("onnx-tiny-*-onnxruntime/ckp-*.json")
    data = json.loads(path.read_text())
    assert point.read(data).successful and data["choices"]["env"]["CK_MODEL"] == f"onnx:{onnx_file}"
    assert re.fullmatch(r"[0-9a-f]{64}", data["features"]["model"]["sha256"])
    accuracy = data["features"]["measurement"]["accuracy"]
    assert accuracy["relative_error"] < 1e-5  # the same file run by the same runtime as the reference


def test_an_onnx_file_on_a_torch_lib_is_a_failed_point_saying_why(tmp_path, onnx_file):
    done = cli("point", "--model", f"onnx:{onnx_file}", "--lib", "torch-cpu", "--batch-size", "2",
               "--input-shape", "3x16x16", "--repo", str(tmp_path / "repo"), "--out", "r.json", cwd=tmp_path,
               pythonpath=tmp_path)
    assert done.returncode == 3
    [path] = (tmp_path / "repo" / "experiment").glob("*/ckp-*.json")
    assert "runs only through the onnxruntime libs" in point.read(json.loads(path.read_text())).error


def test_precision_bench_runs_an_onnx_file_as_exported_in_onnx_runtime(tmp_path, onnx_file):
    done = cli("precision-bench", "--model", f"onnx:{onnx_file}", "--input-shape", "3x16x16", "--device", "cpu",
               "--batch-size", "2", "--iterations", "2", "--repetitions", "1", "--warmup", "1", "--out", "r.json",
               cwd=tmp_path, pythonpath=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    [mode] = result["modes"]
    assert mode["lib"] == "onnxruntime" and mode["memory_format"] == "as exported" and mode["relative_error"] < 1e-5
    assert result["inputs"]["weights"].startswith("the ONNX file's own (tiny.onnx sha256:")
    assert "bf16: not run (bf16: an ONNX file runs as it is in ONNX Runtime" in done.stdout


def test_an_onnx_file_with_a_fixed_batch_at_another_batch_is_one_line_naming_both(tmp_path, nets):
    import mynets

    path = tmp_path / "fixed.onnx"
    torch.onnx.export(mynets.tiny().eval(), (torch.randn(1, 3, 16, 16),), str(path), input_names=["x"],
                      output_names=["y"], dynamo=False, opset_version=17)
    done = cli("precision-bench", "--model", f"onnx:{path}", "--input-shape", "3x16x16", "--device", "cpu",
               "--batch-size", "8", "--out", "r.json", cwd=tmp_path, pythonpath=nets)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "batch size '8' is not valid; expected 1: input 'x' of fixed.onnx has a fixed batch of 1" in done.stderr
    point_run = cli("point", "--model", f"onnx:{path}", "--lib", "onnxruntime", "--batch-size", "8", "--input-shape",
                    "3x16x16", "--repo", str(tmp_path / "repo"), "--out", "p.json", cwd=tmp_path, pythonpath=nets)
    assert point_run.returncode == 3
    [file] = (tmp_path / "repo" / "experiment").glob("*/ckp-*.json")
    assert "has a fixed batch of 1" in point.read(json.loads(file.read_text())).error


def test_a_failed_precision_bench_never_replaces_the_last_complete_result(tmp_path, nets):
    done = cli("precision-bench", "--model", "py:mynets:flat_only", "--input-shape", "3x32x32", "--device", "cpu",
               "--batch-size", "2", "--out", "r.json", cwd=tmp_path, pythonpath=nets)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("result written")]
    kept = Path(line.split("stays in ")[1])
    assert "not complete" in line and kept.name.startswith("last-py-mynets_flat_only-") and not kept.exists()


# ---------------------------------------------------------------------------------------- torchvision, timm
def _importable(name: str) -> str | None:
    try:
        __import__(name)
        return None
    except Exception as error:  # torchvision's C++ ops fail to load against this torch in several ways
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


TORCHVISION_MISSING = _importable("torchvision")
TIMM_MISSING = _importable("timm")


@pytest.mark.skipif(bool(TORCHVISION_MISSING), reason=f"torchvision cannot be imported here ({TORCHVISION_MISSING}); "
                    "runs where it imports, e.g. the GPU machine")
def test_torchvision_models_by_name():
    model = models.build("torchvision:mobilenet_v3_small")
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    work = models.count_work(models.build("torchvision:vit_b_16"))
    assert work.flops_by_kind["attention"] > 0 and work.flops_per_image == pytest.approx(2 * 17.56e9, rel=0.02)
    with pytest.raises(BadInput, match="closest: torchvision:resnet18"):
        modelnames.check("torchvision:resnet81")


@pytest.mark.skipif(bool(TIMM_MISSING), reason=f"timm cannot be imported here ({TIMM_MISSING}); runs where it "
                    "imports, e.g. the GPU machine")
def test_timm_models_by_name():
    model = models.build("timm:resnet18")
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    with pytest.raises(BadInput, match="timm.list_models"):
        modelnames.check("timm:no_such_net_anywhere")


# ------------------------------------------------------------------------------------------------ energy
def test_energy_is_read_around_the_timed_repetitions_only(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(measure, "_host_clock", lambda: clock["t"])
    counter = {"mj": 1000.0, "reads": []}

    def meter():
        counter["reads"].append(clock["t"])
        return counter["mj"]

    def step():  # each step takes 10 ms of the fake clock and 30 mJ of the fake counter: 3 W
        clock["t"] += 0.010
        counter["mj"] += 30.0

    monkeypatch.setattr(measure, "energy_meter", lambda device: meter)
    timing = measure.time_iterations(step, torch.device("cpu"), warmup=4, iterations=5, repetitions=2)
    assert counter["reads"] == [pytest.approx(0.04), pytest.approx(0.14)]  # after the warm-up, after the last step
    assert timing.energy.joules == pytest.approx(0.3) and timing.energy.window_ms == pytest.approx(100.0)
    energy = engine.energy_per_image(timing.energy, 8, timing.samples_ms)
    assert energy["joules_per_image"] == pytest.approx(0.3 / 80) and energy["average_power_w"] == pytest.approx(3.0)
    assert energy["coarse"]  # 100 ms is too short a window for NVML's counter


def test_no_energy_on_a_cpu():
    assert measure.energy_meter(torch.device("cpu")) is None
    assert engine.energy_per_image(None, 8, [[1.0]]) is None


# ------------------------------------------------------------------------------------------------ schema
def _point_with(model: str) -> dict:
    from fixtures.build import our_point_data

    data = our_point_data("NVIDIA H200", 16, [[1.0, 1.1]], version=2)
    data["choices"]["env"]["CK_MODEL"] = model
    return data


@pytest.mark.parametrize("model", ["torchvision:vit_b_16", "timm:convnext_tiny.fb_in22k", "onnx:/m/net.onnx",
                                   "py:pkg.nets:build"])
def test_the_schema_accepts_every_source(model):
    assert point.problems(_point_with(model)) == []


@pytest.mark.parametrize("model", ["vit_b_16", "torchvision:vit b 16", "py:pkg;rm -rf:x", "keras:resnet"])
def test_the_schema_refuses_other_names(model):
    assert point.problems(_point_with(model))


def test_the_analysis_gives_energy_per_image_and_images_per_watt_beside_the_time(tmp_path):
    from fixtures import build as fixtures

    from ck_plugins import analysis, readpoints

    folder = fixtures.entry(tmp_path, "torchvision-vit_b_16-torch-cudnn-fp16", [readpoints.TAG])
    for uid, batch, joules in (("a" * 16, 16, 0.08), ("b" * 16, 256, 0.064)):
        data = fixtures.our_point_data("NVIDIA H200", batch, [[10.0, 10.0], [10.0, 10.0]], model="torchvision:vit_b_16")
        data["features"]["measurement"] = {"energy": {"joules_per_image": joules, "average_power_w": 700.0}}
        fixtures._write(folder / f"ckp-{uid}.0001.json", data)
    stats = analysis.time_stats(readpoints.load([tmp_path]).runs)
    by_batch = stats.droplevel([n for n in stats.index.names if n != "batch_size"])
    assert by_batch.loc[16, "joules_per_image"] == pytest.approx(0.08)
    assert by_batch.loc[256, "images_per_joule"] == pytest.approx(1 / 0.064)
    assert stats.index.get_level_values("model").unique().tolist() == ["torchvision:vit_b_16"]
