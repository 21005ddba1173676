"""What a point's network is fed and holds: its weights (drawn from a seed, a state_dict file, or a model zoo's
pretrained ones) and its images (Gaussian noise from a seed, or a folder of JPEG/PNG files with the usual
ImageNet preprocessing). Accuracy against fp32 means something only with real weights: random-init networks
give nearly the same class for every input, so top-1 agreement would hold trivially.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import BadInput
from .modelnames import DEFAULT_INPUT_SHAPE

PRETRAINED = "pretrained"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as torchvision's presets use
RESIZE_RATIO = 256 / 224  # resize the shorter side to this times the crop, then crop the centre


@dataclass(frozen=True)
class Inputs:
    weights: str = ""  # "": drawn from the seed; "pretrained": the zoo's; else a state_dict file
    images: str = ""  # "": Gaussian noise from the seed; else a folder of JPEG/PNG files

    @property
    def real_weights(self) -> bool:
        return bool(self.weights)


def check(weights: str = "", images: str = "", pretrained: bool = False) -> Inputs:
    """The inputs a user asked for, checked before anything runs (one-line BadInput naming the value)."""
    if pretrained and weights:
        raise BadInput("weights", weights, "either a state_dict file or CK_PRETRAINED=true, not both")
    if weights and not Path(weights).is_file():
        raise BadInput("weights", weights, "a state_dict file saved with torch.save(model.state_dict(), FILE)")
    if images and not _image_files(Path(images)):
        raise BadInput("images", images, f"a folder holding image files ({', '.join(IMAGE_SUFFIXES)})")
    return Inputs(str(Path(weights).resolve()) if weights else (PRETRAINED if pretrained else ""),
                  str(Path(images).resolve()) if images else "")


def load_state(model: torch.nn.Module, path: str, name: str) -> None:
    """Load a state_dict file into `model` (strictly: every key must match)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise BadInput("weights", path, f"a state_dict file torch.load can read ({type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a checkpoint that wraps its state_dict
    if not isinstance(state, dict):
        raise BadInput("weights", path, f"a state_dict (a dict of tensors), not a {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise BadInput("weights", path, f"a state_dict of {name} ({first[:200]})") from None


def images(inputs: Inputs, count: int, seed: int, input_shape=DEFAULT_INPUT_SHAPE) -> torch.Tensor:
    """`count` images: the seed's Gaussian noise, or the folder's files in name order (repeated to fill `count`)."""
    if not inputs.images:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(count, *input_shape, generator=generator)
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise BadInput("input shape", "x".join(map(str, input_shape)), "3xHxW to feed the images of a folder")
    files = _image_files(Path(inputs.images))
    batch = torch.stack([_preprocess(files[i % len(files)], input_shape[1:]) for i in range(min(count, len(files)))])
    return batch.repeat((count + len(batch) - 1) // len(batch), 1, 1, 1)[:count]


@lru_cache(maxsize=16)
def describe(inputs: Inputs, seed: int) -> dict[str, str]:
    """What a point records of its inputs: the weights and the images it was measured with (files hashed once per
    process: every point of a session shares them). Callers must not change the dict."""
    if inputs.weights == PRETRAINED:
        weights = "pretrained (the model zoo's default weights)"
    elif inputs.weights:
        weights = f"state_dict {Path(inputs.weights).name} sha256:{_digest([Path(inputs.weights)])}"
    else:
        weights = f"random (seed {seed})"
    if inputs.images:
        files = _image_files(Path(inputs.images))
        images_text = f"{len(files)} images from {Path(inputs.images).name}/ sha256:{_digest(files)}"
    else:
        images_text = f"gaussian noise (seed {seed})"
    return {"weights": weights, "images": images_text}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _preprocess(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """RGB, the shorter side resized to 256/224 of the crop, the centre cropped, scaled to [0, 1], normalised."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise BadInput("image", str(path), f"a JPEG or PNG file Pillow can read ({type(error).__name__})") from None
    height, width = size
    scale = round(max(height, width) * RESIZE_RATIO) / min(image.size)
    image = image.resize((max(width, round(image.size[0] * scale)), max(height, round(image.size[1] * scale))),
                         Image.BILINEAR)
    left, top = (image.size[0] - width) // 2, (image.size[1] - height) // 2
    array = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32) / 255.0
    array = (array - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
