"""Print our ResNet-50 points next to the plain-PyTorch anchors measured on the same GPU kind.

Usage: python benchmarks/compare_anchors.py RESULTS_REPO
Reads experiment points only (no torch). For each point: images/s from its one time (point.read), the anchor
variant of the same configuration, the difference, the harness overhead against a bare CUDA-event loop, the
per-layer sum against the timed total, and the diagnosis.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ck_plugins import point
from ck_plugins.analysis import ANCHOR_VARIANT, anchors


def rows(repo: Path):
    for path in sorted(repo.glob("experiment/resnet50-*/ckp-*.json")):
        data = json.loads(path.read_text())
        read = point.read(data, path=str(path))
        yield data["choices"]["env"], read


def main(repo: Path) -> None:
    table = {(r.model, r.variant, r.bs): r.img_per_s for r in anchors().itertuples()}
    print("| lib | layout | graph | batch | ours img/s | anchor | anchor img/s | diff | harness overhead |"
          " per-layer sum / total | why |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|---:|---|")
    for env, read in rows(repo):
        label, gpu = read.lib, read.platform
        head = f"| {label} | {env['CK_MEMORY_FORMAT']} | {env['CK_CUDA_GRAPH']} | {env['CK_BATCH_SIZE']} |"
        if read.time_ms is None:
            print(f"{head} failed | | | | | | {read.error[:90]} |")
            continue
        ips = 1e3 * read.batch_size / read.time_ms
        variant = ANCHOR_VARIANT.get(label)
        anchor = table.get(("resnet50", variant, env["CK_BATCH_SIZE"])) if variant else None
        diff = f"{ips / anchor - 1:+.1%}" if anchor else ""
        harness = read.measurement.get("harness") or {}
        overhead = f"{harness['overhead_share']:+.2%}" if harness else ""
        first = read.successful[0]
        layers = sum(layer.time_ms for layer in first.layers)
        layer_share = f"{layers / first.time_ms:.0%}" if layers else "none recorded"
        why = (read.measurement.get("diagnosis") or {}).get("sentence", "")
        print(f"{head} {ips:.1f} | {variant or ''} | {anchor or ''} | {diff} | {overhead} |"
              f" {layer_share} | {why} |")
    print(f"\nGPU: {gpu}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit(f"usage: python {sys.argv[0]} RESULTS_REPO (a folder with experiment/resnet50-*/)")
    main(Path(sys.argv[1]))
