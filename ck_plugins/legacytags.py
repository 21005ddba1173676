"""A legacy CK entry's model, lib and precision, found from its tags by elimination. No torch.

CK-Caffe-era repositories name nothing in a field: an experiment entry's tags hold, in no fixed order, the run type
(`time_gpu`), dates, ids, the board or host, the model (`bvlc-alexnet`, `resnet50-fp32`), the lib (`nvidia-cudnn`,
`intel-request`) and sometimes the precision, alone or as a suffix. Known names are recognised; what is left after
the run type, date, id, board/host and precision tags are taken away is the model or the lib that is still missing.
A repository teaches its own names: a tag that is the lib (or model) of one entry is read as a lib (model) in every
other entry (`learn`). Only an entry with no tag left for its model or lib, or with two candidates for one role,
is refused, with its tags named.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .libnames import FAMILY_OF
from .modelnames import SEED_MODELS

TAG = "explore-batch-size-libs-models"
LEGACY_MODELS = {"bvlc-alexnet": "alexnet", "bvlc-googlenet": "googlenet", "deepscale-squeezenet-1.0": "squeezenet-1.0",
                 "deepscale-squeezenet-1.1": "squeezenet-1.1", "resnet-50": "resnet50", "bvlc-resnet-50": "resnet50"}
LEGACY_LIBS = {"cpu", "cuda", "cudnn", "libdnn-cuda", "nvidia-cuda", "nvidia-cudnn", "nvidia-fp16-cuda",
               "nvidia-fp16-cudnn", "opencl", "libdnn", "libdnn-opencl", "opencl-libdnn", "opencl-clblast",
               "opencl-libdnn-clblast", "opencl-viennacl", "clblast", "openblas", "viennacl", "mkl", "atlas"}
KNOWN_LIBS = LEGACY_LIBS | set(FAMILY_OF)
PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "tf32")
PRECISION_SUFFIX = re.compile(rf"^(?P<base>.+?)[-_](?P<precision>{'|'.join(PRECISIONS)})$")
HOST_PREFIXES = ("nvidia-gtx", "nvidia-tx", "nvidia-jetson", "jetson", "gtx", "tx1", "tx2", "firefly", "odroid", "rpi",
                 "linux", "android", "host-", "platform-", "board-", "machine-", "node-", "xeon", "intel-xeon", "epyc",
                 "amd-epyc", "ryzen", "core-i", "intel-core")
HOST_WORDS = re.compile(r"(^|-)(haswell|broadwell|skylake|cascadelake|cascade-lake|icelake|ice-lake|sapphire-rapids|"
                        r"sapphirerapids|emerald-rapids|kabylake|coffeelake|zen[1-5]?|xeon|server|workstation|"
                        r"host\d*|node\d*)($|-)")


class TagError(ValueError):
    """An entry whose tags name no model or lib, or two candidates for one."""


@dataclass(frozen=True)
class Roles:
    model: str
    lib: str
    precision: str  # "" where no tag names one
    other: list[str] = field(default_factory=list)  # run type, board, host, dates, ids, unknown extras


@dataclass
class Learned:
    """Model and lib names a repository's unambiguous entries taught."""
    models: set[str] = field(default_factory=set)
    libs: set[str] = field(default_factory=set)


def is_metadata(tag: str) -> bool:
    """Run types (time_cpu, default), dates, ids, platform, board and host names: tags that name no model or lib."""
    return (tag.startswith(("time_", "time-")) or tag in {"default", "time", "benchmark", "accuracy"}
            or bool(re.search(r"\d{4}-?\d{2}-?\d{2}|^[0-9a-f]{8,}$", tag))
            or tag.startswith(HOST_PREFIXES) or bool(HOST_WORDS.search(tag)))


def _split(tag: str) -> tuple[str, str]:
    """(name, precision) of a tag: 'resnet50-int8' -> ('resnet50', 'int8'); a known lib keeps its name whole."""
    if tag in KNOWN_LIBS or tag.startswith("tensorrt") or tag in LEGACY_MODELS or tag in SEED_MODELS:
        return tag, ""
    found = PRECISION_SUFFIX.match(tag)
    return (found["base"], found["precision"]) if found else (tag, "")


def classify(tags: list[str], learned: Learned | None = None) -> Roles:
    """The entry's model, lib, precision and other tags. Raises TagError naming the tags where it cannot tell."""
    learned = learned or Learned()
    models, libs, precisions, other, left = [], [], [], [], []
    for tag in (t for t in tags if t != TAG):
        name, precision = _split(tag)
        if tag in PRECISIONS:
            precisions.append(tag)
        elif name in KNOWN_LIBS or name.startswith("tensorrt"):
            libs.append(name)
        elif name in LEGACY_MODELS or name in SEED_MODELS:
            models.append(LEGACY_MODELS.get(name, name))
        elif is_metadata(tag):
            other.append(tag)
            continue
        elif name in learned.libs and name not in learned.models:
            libs.append(name)
        elif name in learned.models and name not in learned.libs:
            models.append(name)
        else:
            left.append((tag, name))
            continue
        precisions += [precision] if precision else []
    return _resolve(tags, models, libs, precisions, other, left)


def _resolve(tags, models, libs, precisions, other, left) -> Roles:
    if not models and len(left) == 1 and libs:
        models.append(left.pop()[1])
    elif not libs and len(left) == 1 and models:
        libs.append(left.pop()[1])
    if len(set(models)) != 1:
        raise TagError(f"entry tags {tags}: " + ("several model tags " + str(sorted(set(models))) if models else
                                                 _missing("model", left)))
    if len(set(libs)) != 1:
        raise TagError(f"entry tags {tags}: " + ("several lib tags " + str(sorted(set(libs))) if libs else
                                                 _missing("lib", left)))
    for tag, name in left:  # both roles filled: what is left is kept as metadata
        other.append(tag)
    return Roles(models[0], libs[0], "+".join(sorted(set(precisions))), other)


def _missing(role: str, left) -> str:
    if not left:
        return (f"no {role} tag (every tag is a run type, date, id, board, host or precision); known libs: "
                f"{', '.join(sorted(LEGACY_LIBS))}, tensorrt-*; known models: {', '.join(sorted(LEGACY_MODELS))}")
    return (f"no {role} tag can be told apart: {' and '.join(repr(t) for t, _ in left)} could each be the model or "
            "the lib, and no other entry of the repository names either")


def learn(tag_lists: list[list[str]]) -> Learned:
    """What a repository's entries teach: the model and lib of every entry whose tags resolve, repeated until no
    more resolve (an entry resolved with what another taught teaches in turn)."""
    learned = Learned()
    while True:
        before = (len(learned.models), len(learned.libs))
        for tags in tag_lists:
            try:
                roles = classify(tags, learned)
            except TagError:
                continue
            learned.models.add(roles.model)
            learned.libs.add(roles.lib)
        if (len(learned.models), len(learned.libs)) == before:
            return learned
