"""Accuracy that means something: a tiny network trained here on a separable synthetic image set, so that top-1
agreement between fp32 and bf16 is a real check; given weights and images recorded in every point; random
weights shown with their logit error only, and why."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ck_plugins import analysis, inputs, readpoints
from ck_plugins.errors import BadInput

TINYNET = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 4))
'''
CLASSES = 4  # the bright quadrant: top-left, top-right, bottom-left, bottom-right


def _write_images(folder: Path, count: int, seed: int) -> list[int]:
    """`count` 40x40 PNGs, each dark with one bright quadrant (its class) and noise; names sort in label order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    labels = []
    for n in range(count):
        label = n % CLASSES
        image = rng.normal(40, 20, (40, 40, 3))
        rows, cols = divmod(label, 2)
        image[rows * 20:(rows + 1) * 20, cols * 20:(cols + 1) * 20] += 160
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{n:03d}.png")
        labels.append(label)
    return labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The network trained on 64 images (whole-batch Adam), its state_dict, and 16 images it has not seen."""
    root = tmp_path_factory.mktemp("accuracy")
    (root / "tinynet.py").write_text(TINYNET)
    sys.path.insert(0, str(root))
    try:
        import tinynet
    finally:
        sys.path.remove(str(root))
    train_labels = _write_images(root / "train", 64, seed=1)
    test_labels = _write_images(root / "test", 16, seed=2)
    x = inputs.images(inputs.Inputs(images=str(root / "train")), 64, 0, (3, 32, 32))
    y = torch.tensor(train_labels)
    torch.manual_seed(0)
    model = tinynet.build()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    torch.save(model.state_dict(), root / "tiny.pt")
    return root, model.eval(), test_labels


def _run(root: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "ck_plugins", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=root)


BENCH = ["precision-bench", "--model", "py:tinynet:build", "--input-shape", "3x32x32", "--batch-size", "16",
         "--device", "cpu", "--repetitions", "2", "--iterations", "3", "--warmup", "1"]


def test_the_trained_network_classifies_the_folders_images(trained):
    """What the folder reader feeds is what the network learnt from: its classes are right, and not all one."""
    root, model, labels = trained
    images = inputs.images(inputs.Inputs(images=str(root / "test")), 16, 0, (3, 32, 32))
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert (predicted == torch.tensor(labels)).float().mean() >= 0.9
    assert len(set(predicted.tolist())) == CLASSES


def test_top1_agreement_of_bf16_is_a_real_check_with_given_weights_and_images(trained):
    root, _, _ = trained
    done = _run(root, *BENCH, "--weights", str(root / "tiny.pt"), "--images", str(root / "test"),
                "--out", str(root / "real.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((root / "real.json").read_text())
    assert result["real_weights"] and result["inputs"]["weights"].startswith("state_dict tiny.pt sha256:")
    assert result["inputs"]["images"].startswith("16 images from test/ sha256:")
    bf16 = next(m for m in result["modes"] if m["precision"] == "bf16" and m["run_success"])
    assert bf16["top1_agreement"] >= 0.9 and 0 < bf16["relative_error"] < 0.1
    assert "Top-1 agreement, logit error vs fp32" in done.stdout and "Top-1 agreement is not shown" not in done.stdout


def test_random_weights_show_the_logit_error_only_and_say_why(trained):
    root, _, _ = trained
    done = _run(root, *BENCH, "--out", str(root / "random.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Top-1 agreement is not shown" in done.stdout and "random weights" in done.stdout
    assert json.loads((root / "random.json").read_text())["inputs"]["weights"] == "random (seed 0)"


def test_each_point_records_its_weights_and_images_and_the_report_shows_top1_only_for_real_weights(trained, tmp_path):
    root, _, _ = trained
    common = ["point", "--model", "py:tinynet:build", "--input-shape", "3x32x32", "--lib", "torch-cpu",
              "--batch-size", "8", "--repetitions", "2", "--iterations", "3", "--warmup", "1", "--per-layer", "false",
              "--profile", "false", "--repo", str(tmp_path)]
    real = _run(root, *common, "--weights", str(root / "tiny.pt"), "--images", str(root / "test"),
                "--out", str(tmp_path / "real.json"))
    assert real.returncode == 0, real.stderr[-2000:]
    fed = json.loads((tmp_path / "real.json").read_text())["point"]["features"]["measurement"]["accuracy"]
    assert fed["weights"].startswith("state_dict tiny.pt") and fed["images"].startswith("16 images from test/")
    table = analysis.accuracy(readpoints.load([tmp_path]).runs)
    assert table["top1_agreement"].notna().all() and table["weights"].str.startswith("state_dict").all()
    assert (tmp_path / "experiment").is_dir()


def test_random_weight_points_keep_their_logit_error_and_hide_top1(tmp_path):
    from fixtures import build as fixtures

    folder = fixtures.entry(tmp_path, "resnet50-torch-cudnn-fp16", [fixtures.TAG, "resnet50", "torch-cudnn-fp16"])
    data = fixtures.our_point_data("NVIDIA H200", 16, [[1.0] * 4] * 3)
    data["features"]["measurement"] = {"accuracy": {"reference": "fp32", "relative_error": 0.002,
                                                    "top1_agreement": 1.0, "weights": "random (seed 0)"}}
    (folder / "ckp-0000000000000001.0001.json").write_text(json.dumps(data))
    table = analysis.accuracy(readpoints.load([tmp_path]).runs)
    assert table["relative_error"].tolist() == [0.002] and table["top1_agreement"].isna().all()


def test_bad_weights_or_images_are_one_line_errors(trained):
    root, _, _ = trained
    for weights, images, named in (("/no/such/file.pt", "", "/no/such/file.pt"), ("", "/no/such/folder",
                                                                                    "/no/such/folder")):
        with pytest.raises(BadInput, match=re.escape(named)):
            inputs.check(weights, images)
    torch.save({"conv.weight": torch.zeros(1)}, root / "wrong.pt")
    done = _run(root, *BENCH, "--weights", str(root / "wrong.pt"), "--out", str(root / "bad.json"))
    assert done.returncode == 2, done.stdout[-1000:] + done.stderr[-1000:]
    assert "a state_dict of py:tinynet:build" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_pretrained_weights_need_a_zoo_model():
    with pytest.raises(BadInput, match="a torchvision: or timm: model"):
        from ck_plugins import models

        models.build("alexnet", 0, inputs.PRETRAINED)
    with pytest.raises(BadInput, match="either a state_dict file or CK_PRETRAINED=true"):
        inputs.check(__file__, "", pretrained=True)
