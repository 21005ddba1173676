import json
from pathlib import Path

import pytest
import torch

from ck_plugins import models

# torchvision's published multiply-adds per image (weights metadata _ops), as in shared/anchors/published.json
PUBLISHED_GMAC = {"resnet50": 4.089, "alexnet": 0.714, "googlenet": 1.498, "squeezenet-1.0": 0.819,
                  "squeezenet-1.1": 0.349}


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_work_per_image_matches_published(name):
    assert models.gmac_per_image(name) == pytest.approx(PUBLISHED_GMAC[name], abs=0.0006)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_weights_are_deterministic_from_seed(name):
    a, b, c = models.build(name, seed=1), models.build(name, seed=1), models.build(name, seed=2)
    first = next(iter(a.state_dict()))
    assert torch.equal(a.state_dict()[first], b.state_dict()[first])
    assert not torch.equal(a.state_dict()[first], c.state_dict()[first])


@pytest.mark.parametrize("name", ["alexnet", "squeezenet-1.1", "googlenet"])
def test_forward_gives_logits_for_1000_classes(name):
    with torch.no_grad():
        out = models.build(name)(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_resnet50_structure_is_v1_5():
    model = models.build("resnet50")
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's resnet50


def test_layer_work_lists_leaves_in_order_with_channels():
    work = models.layer_work(models.build("resnet50"))
    assert work[0].label == "conv1" and work[0].in_channels == 3 and work[0].out_channels == 64
    assert work[-1].label == "fc" and work[-1].flops == 2 * 2048 * 1000


def test_unknown_model_names_the_accepted_ones():
    with pytest.raises(ValueError, match="'vgg16'.*resnet50"):
        models.build("vgg16")


try:
    import torchvision  # noqa: F401
    HAVE_TORCHVISION = True
except Exception:  # torchvision has no CPU build for this torch: it fails to import, not only to install
    HAVE_TORCHVISION = False


@pytest.mark.skipif(not HAVE_TORCHVISION, reason="torchvision does not import here (no build for this torch); "
                    "runs on the GPU machine, where torchvision 0.26 is installed")
@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_torchvision_state_dict_loads_strictly_and_outputs_match(name):
    import torchvision

    ours = models.build(name)
    theirs = getattr(torchvision.models, models.spec(name).torchvision_name)(
        **({"aux_logits": False, "init_weights": True} if name == "googlenet" else {})).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_the_services_table_of_work_per_image_matches_the_models():
    """The service refuses a point that claims less work than its model does (it would pass the roofline)."""
    from ck_plugins.submit.validate import MODEL_FLOPS

    for name, flops in MODEL_FLOPS.items():
        work = models.layer_work(models.build(name))
        assert sum(w.flops for w in work if w.type in ("Conv2d", "Linear")) == flops
