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
        yield data["choices"]["env"], read, [c["run"] for c in data["characteristics_list"]]


def main(repo: Path) -> None:
    table = {(r.model, r.variant, r.bs): r.img_per_s for r in anchors().itertuples()}
    print("| lib | layout | graph | batch | ours img/s | anchor | anchor img/s | diff | harness overhead |"
          " per-layer sum / total | why |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|---:|---|")
    for env, read, runs in rows(repo):
        label, gpu = read.lib, read.platform
        head = f"| {label} | {env['CK_MEMORY_FORMAT']} | {env['CK_CUDA_GRAPH']} | {env['CK_BATCH_SIZE']} |"
        if not runs[0]["run_success"]:
            print(f"{head} failed | | | | | | {runs[0]['error'][:90]} |")
            continue
        ips = 1e3 * read.batch_size / read.time_ms
        variant = ANCHOR_VARIANT.get(label)
        anchor = table.get(("resnet50", variant, env["CK_BATCH_SIZE"])) if variant else None
        diff = f"{ips / anchor - 1:+.1%}" if anchor else ""
        harness = runs[0].get("harness") or {}
        overhead = f"{harness['overhead_share']:+.2%}" if harness else ""
        layers = sum(x["time_ms"] for x in runs[0]["per_layer_info"])
        layer_share = f"{layers / runs[0]['time_fw_ms']:.0%}" if layers else "none recorded"
        why = (runs[0].get("diagnosis") or {}).get("sentence", "")
        print(f"{head} {ips:.1f} | {variant or ''} | {anchor or ''} | {diff} | {overhead} |"
              f" {layer_share} | {why} |")
    print(f"\nGPU: {gpu}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit(f"usage: python {sys.argv[0]} RESULTS_REPO (a folder with experiment/resnet50-*/)")
    main(Path(sys.argv[1]))
