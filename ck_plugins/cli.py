"""`python -m ck_plugins ...`: the plain entry point, for people who do not use CK."""
from __future__ import annotations

import argparse
import os
import sys

from .errors import BadInput, check_positive_int


def _env_int(name: str, default: int) -> str:
    return os.environ.get(name, str(default))


def _add_resnet_fp16(sub) -> None:
    p = sub.add_parser("resnet-fp16", help="ResNet-50 at every precision and layout, with the reasons")
    p.add_argument("--batch-size", default=_env_int("CK_BATCH_SIZE", 8))
    p.add_argument("--iterations", default=_env_int("CK_ITERATIONS", 20))
    p.add_argument("--repetitions", default=_env_int("CK_REPETITIONS", 3))
    p.add_argument("--warmup", default=_env_int("CK_WARMUP", 5))
    p.add_argument("--device", default=os.environ.get("CK_DEVICE", "auto"), help="auto, cpu or cuda")
    p.add_argument("--precisions", default=os.environ.get("CK_PRECISIONS", "all"),
                   help="comma-separated subset of fp32,tf32,amp,fp16,bf16 (fp32 always runs: it is the baseline)")
    p.add_argument("--out", default="result.json", help="where to write the JSON result")
    p.set_defaults(func=_cmd_resnet_fp16)


def _cmd_resnet_fp16(args) -> int:
    batch_size = check_positive_int("batch size", args.batch_size)
    iterations = check_positive_int("iterations", args.iterations)
    repetitions = check_positive_int("repetitions", args.repetitions)
    warmup = check_positive_int("warm-up iterations", args.warmup)
    from . import precision  # imports torch: only once the arguments are known to be good
    from .ckrepo import write_json_atomic

    modes = precision.parse_modes(args.precisions)
    device = precision.resolve_device(args.device)
    result = precision.run(batch_size, device, modes, warmup, iterations, repetitions)
    write_json_atomic(args.out, result)
    print(precision.summary_table(result))
    print(f"\nresult written to {os.path.abspath(args.out)}")
    return 0 if all(r["run_success"] for r in result["modes"]) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ck_plugins", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_resnet_fp16(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
