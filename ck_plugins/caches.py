"""Where the project keeps what outlives a run (compiled graphs, tuned cuDNN plans): one root for all of them."""
from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """$XDG_CACHE_HOME (else ~/.cache)/ck-precision-bench."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ck-precision-bench"


def inductor() -> Path:
    """torch.compile's caches (FX graphs, Triton kernels, autotuning) that sweeps share (sweep workers get it as
    $TORCHINDUCTOR_CACHE_DIR unless that is already set)."""
    return root() / "inductor"


def cudnn_plans() -> Path:
    """The execution plans the cudnn-graph libs chose by timing: $CKPB_CUDNN_PLANS wins where set."""
    return Path(os.environ.get("CKPB_CUDNN_PLANS") or root() / "cudnn-plans.json")


def references() -> Path:
    """fp32 reference logits that a sweep's workers share (engine.ReferenceCache names each by what it depends on)."""
    return root() / "references"
