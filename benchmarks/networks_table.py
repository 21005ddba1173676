"""The any-network results in one table: per network and batch size, the fastest fp16 layout's speed-up over fp32
(TF32 off), energy per image of fp32 and fp16, and the fp16 diagnosis; from precision-bench result files.
Usage: python benchmarks/networks_table.py docs/results/nvidia-h200/networks"""
import json
import sys
from pathlib import Path


def best(modes: list[dict], precision: str) -> dict | None:
    done = [m for m in modes if m["precision"] == precision and m["run_success"]]
    return min(done, key=lambda m: m["time_ms"]) if done else None


def main(folder: str) -> None:
    results = [json.loads(p.read_text()) for p in Path(folder).glob("*.json")]
    results.sort(key=lambda r: (r["model"], r["batch_size"]))
    print(f"{results[0]['platform'].get('gpu')}: fp16 in its faster layout against fp32 (TF32 off)\n")
    print("| Network | Batch | fp32 img/s | fp16 img/s | fp16 / fp32 | fp16 / tf32 | fp32 mJ/img | fp16 mJ/img | fp16: why |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|:---|")
    for r in results:
        fp32, tf32, fp16 = (best(r["modes"], p) for p in ("fp32", "tf32", "fp16"))
        if not (fp32 and fp16):
            print(f"| {r['model']} | {r['batch_size']} | failed: {r.get('error')} |")
            continue
        why = fp16["diagnosis"].split(": ", 1)[1]
        print(f"| {r['model']} | {r['batch_size']} | {fp32['images_per_second']:.0f} | {fp16['images_per_second']:.0f} | "
              f"{fp32['time_ms'] / fp16['time_ms']:.2f} | {tf32['time_ms'] / fp16['time_ms']:.2f} | "
              f"{1e3 * fp32.get('joules_per_image', float('nan')):.2f} | "
              f"{1e3 * fp16.get('joules_per_image', float('nan')):.2f} | {why} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/nvidia-h200/networks")
