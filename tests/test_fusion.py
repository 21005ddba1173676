"""The cuDNN-graph engine's CPU half: torch.fx pattern matching, batch-norm folding and the partition into fused
blocks, checked against torch's numerics with the reference executor; the plan cache. The cuDNN half runs on the
GPU machine (tests at the end skip here and say so)."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ck_plugins import backends, fusion, measure, models
from ck_plugins.backends import cudnn_graph
from ck_plugins.errors import Unsupported
from ck_plugins.plancache import PlanCache, PlanChoice, block_key


def close(a, b, tol=1e-5):
    return float((a - b).detach().abs().max() / b.detach().abs().max()) < tol


class Residual(nn.Module):
    """conv-bn-relu, then conv-bn + identity -> relu three ways (module ReLU, F.relu, in-place +=)."""

    def __init__(self, style):
        super().__init__()
        self.style = style
        self.a, self.bn_a = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn_a(self.a(x)))
        y = self.bn_b(self.b(y))
        if self.style == "module":
            return self.relu(y + x)
        if self.style == "functional":
            return F.relu(torch.add(y, x))
        y += x
        return torch.relu(y)


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


@pytest.mark.parametrize("style", ["module", "functional", "inplace"])
def test_a_residual_block_becomes_two_fused_blocks_with_the_same_numerics(style):
    torch.manual_seed(0)
    model = randomise_bn(Residual(style))
    gm = fusion.fuse(model)
    blocks = dict(fusion.blocks_of(gm))
    assert {k: (b.spec.add, b.spec.relu) for k, b in blocks.items()} == {"a": (False, True), "b": (True, True)}
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in gm.modules())  # folded, fused
    x = torch.randn(2, 8, 6, 6)
    assert close(gm(x), model(x))


def test_a_conv_whose_output_is_used_twice_keeps_its_relu_and_add_outside():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return torch.relu(y) + y

    model = Twice().eval()
    gm = fusion.fuse(model)
    (label, block), = fusion.blocks_of(gm)
    assert (label, block.spec.add, block.spec.relu) == ("conv", False, False)
    x = torch.randn(1, 3, 8, 8)
    assert close(gm(x), model(x))


def test_a_scaled_add_and_a_same_padding_conv_are_not_fused():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.same = nn.Conv2d(3, 3, 3, padding="same")

        def forward(self, x):
            return torch.relu(self.same(torch.add(self.conv(x), x, alpha=2.0)))

    model = Odd().eval()
    gm = fusion.fuse(model)
    blocks = dict(fusion.blocks_of(gm))
    assert list(blocks) == ["conv"] and not blocks["conv"].spec.add  # alpha: not a plain sum
    assert isinstance(gm.get_submodule("same"), nn.Conv2d)  # padding="same": left to torch
    x = torch.randn(1, 3, 8, 8)
    assert close(gm(x), model(x))


def test_an_untraceable_network_is_one_error_naming_the_cause():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x  # data-dependent control flow

    with pytest.raises(fusion.FusionError, match="torch.fx cannot trace Branchy"):
        fusion.fuse(Branchy())


@pytest.mark.parametrize("name, blocks, adds, relus", [
    ("resnet50", 53, 16, 49), ("alexnet", 5, 0, 5), ("googlenet", 57, 0, 57), ("squeezenet-1.1", 26, 0, 26)])
def test_seed_models_partition_into_the_expected_blocks_and_keep_their_outputs(name, blocks, adds, relus):
    model = models.build(name)
    gm = fusion.fuse(model)
    found = [b.spec for _, b in fusion.blocks_of(gm)]
    assert (len(found), sum(s.add for s in found), sum(s.relu for s in found)) == (blocks, adds, relus)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert close(gm(x), model(x), 1e-4)


def test_the_executor_contract_each_block_called_once_with_its_residual():
    """What the cuDNN executor relies on: a block's run gets (input, residual or None) once per forward pass."""
    model = models.build("resnet50")
    gm = fusion.fuse(model)
    calls = []
    for label, block in fusion.blocks_of(gm):
        def run(x, residual, block=block, label=label):
            calls.append((label, residual is not None))
            return block.reference(x, residual)
        block.run = run
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert close(gm(x), model(x), 1e-4)
    assert sorted(calls) == sorted((label, b.spec.add) for label, b in fusion.blocks_of(gm))


def test_per_layer_times_name_each_fused_block_by_its_convolution():
    model = models.build("squeezenet-1.1")
    work = models.count_work(model, (3, 224, 224))
    gm = fusion.fuse(model)
    labels = [w.label for w in work.layers]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        times = measure.per_layer_times(gm, lambda: gm(x), torch.device("cpu"), 1, labels)
    fused = [t for t in times if t.type == "FusedConv"]
    assert len(fused) == 26 and all(t.time_ms > 0 for t in fused)
    assert {t.label for t in fused} <= set(labels)  # the convolution's name, which the point's layers use
    assert not any(t.type in ("ReLU", "BatchNorm2d") for t in times)


def test_links_say_which_tensors_only_blocks_read_and_where_inputs_come_from():
    gm = fusion.fuse(models.build("resnet50"))
    links = fusion.links(gm)
    assert len(links) == 53
    assert links["layer1.0.conv2"] == fusion.BlockLinks("layer1.0.conv1", None, True)
    assert links["conv1"].feeds_only_blocks is False  # the max pool reads it
    assert links["layer1.0.conv1"].input_from is None  # from the max pool
    assert links["layer4.2.conv3"].feeds_only_blocks is False  # the average pool reads it
    assert links["layer1.1.conv3"].residual_from in ("layer1.0.conv3", "layer1.0.downsample.0")
    assert sum(link.feeds_only_blocks for link in links.values()) == 51
    apart = fusion.links(gm, torch_blocks={"layer1.0.conv2"})  # a block cuDNN refused counts as a torch op
    assert "layer1.0.conv2" not in apart and apart["layer1.0.conv1"].feeds_only_blocks is False
    assert apart["layer1.0.conv3"].input_from is None


def test_fp8_scales_follow_the_producer_where_a_tensor_stays_fp8_between_blocks():
    gm = fusion.fuse(models.build("resnet50"))
    links = fusion.links(gm)
    amax_in = {label: 4.48 for label in links}
    amax_out = {label: 44.8 * (i + 1) for i, label in enumerate(links)}
    scales = cudnn_graph.fp8_scales(links, amax_in, amax_out)
    out = lambda label: amax_out[label] / cudnn_graph.FP8_MAX  # noqa: E731
    assert scales["layer1.0.conv2"] == cudnn_graph.Fp8Scales(out("layer1.0.conv1"), None, out("layer1.0.conv2"))
    assert scales["layer1.0.conv1"].input == pytest.approx(0.01)  # calibrated: the max pool's output is fp16
    assert scales["conv1"].output is None and scales["layer4.2.conv3"].output is None
    assert scales["layer4.2.conv3"].variant() == "fp8|res fp8"
    assert scales["layer1.0.conv2"].variant() == "fp8|out fp8"


def test_max_pools_are_compiled_except_those_that_return_indices():
    model = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Sequential(nn.MaxPool2d(2, return_indices=True)))
    assert cudnn_graph.compile_max_pools(model) == ["0"]
    assert type(model[0]) is cudnn_graph.CompiledMaxPool and type(model[1][0]) is nn.MaxPool2d


def test_on_a_cpu_the_libs_are_unsupported_with_the_reason():
    for lib in ("cudnn-graph-fp16", "cudnn-graph-bf16", "cudnn-graph-fp8"):
        assert backends.family_of(lib) == "cudnn-graph"
        if not torch.cuda.is_available():
            with pytest.raises(Unsupported, match="needs a CUDA GPU"):
                backends.create(lib).check()


def test_plan_cache_keeps_choices_across_instances_and_merges_writers(tmp_path, capsys):
    path = tmp_path / "c" / "plans.json"
    key = block_key("GPU sm90", 91900, "fp16", (8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), True, True)
    other = key.replace("in 8x64", "in 16x64")
    first, second = PlanCache(path), PlanCache(path)
    first.put(key, PlanChoice("eng10_k2=2", 0.1234, 8))
    second.put(other, PlanChoice("eng39_k25=0", 0.5, 8))  # a second process: both choices kept
    again = PlanCache(path)
    assert again.get(key) == PlanChoice("eng10_k2=2", 0.1234, 8) and again.get(other).plan == "eng39_k25=0"
    assert len(again) == 2 and not list(path.parent.glob(".plans-*"))  # no temporary left behind
    assert key != block_key("GPU sm90", 91900, "fp8", (8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1),
                            True, True)
    path.write_text("{not json")
    assert len(PlanCache(path)) == 0 and "ignoring the cuDNN plan cache" in capsys.readouterr().err
    path.write_text(json.dumps({"version": 99, "plans": {}}))
    assert len(PlanCache(path)) == 0


needs_cudnn = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="runs where a CUDA GPU and nvidia-cudnn-frontend are (the GPU machine)")


@needs_cudnn
@pytest.mark.parametrize("lib, tolerance", [("cudnn-graph-fp16", 0.01), ("cudnn-graph-bf16", 0.03),
                                            ("cudnn-graph-fp8", 0.15)])
def test_on_the_gpu_cudnn_graphs_match_fp32_and_a_second_load_tunes_nothing(lib, tolerance, tmp_path, monkeypatch):
    pytest.importorskip("cudnn", reason="nvidia-cudnn-frontend is not installed")
    monkeypatch.setenv("CKPB_CUDNN_PLANS", str(tmp_path / "plans.json"))
    model = models.build("resnet50")
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.cuda()(images.cuda()).float().cpu()
    model.cpu()
    for attempt in range(2):
        backend = backends.create(lib, backends.Options(cuda_graph=True))
        backend.load(model, 4)
        x = backend.prepare_input(images)
        out = backend.predict(x).float().cpu()
        assert backend.fallbacks == [] and float((out - ref).norm() / ref.norm()) < tolerance
        entries = json.loads((tmp_path / "plans.json").read_text())["plans"]
        if attempt == 0:
            tuned = dict(entries)
        assert entries == tuned  # the second load took every plan from the cache
        backend.unload()
