"""`python -m ck_plugins.ckconsole [--verbose] [--log=FILE] run program:NAME ...`: `ck run` with a quiet console. CK's own output (the OS
description, the prepared script, post-processing, the characteristics dump and its "Execution time" of the last
timed mode) goes to a log file; the console keeps what the program itself says (its progress line on stderr, its
table and reasons on stdout) and the log's path. `--verbose` (or CK_VERBOSE=1) shows everything, as plain `ck`.
Exit code: CK's (pass --treat_return_code_as_exit_code=yes, as always)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .files import OUT_ROOT

START = "Executing code ..."  # CK prints this right before the program runs
END = "  (post processing via CK"  # and this right after it ends


def run(ck_args: list[str], log: Path, verbose: bool = False) -> int:
    """Run `ck` with `ck_args`, echo the program's own lines, keep all of CK's in `log`; CK's exit code."""
    if verbose:
        return subprocess.call(["ck", *ck_args])
    log.parent.mkdir(parents=True, exist_ok=True)
    inside = failed_in_ck = False
    with open(log, "w") as kept, subprocess.Popen(["ck", *ck_args], stdout=subprocess.PIPE, text=True, bufsize=1,
                                                  stdin=subprocess.DEVNULL) as ck:
        for line in ck.stdout:
            kept.write(line)
            if line.startswith(END):
                inside = False
            if inside:
                print(line, end="", flush=True)
            if line.strip() == START:
                inside = True
            failed_in_ck = failed_in_ck or line.startswith("CK error:")
        code = ck.wait()
    if failed_in_ck and code and not _said_by_program(log):
        print(next(x for x in log.read_text().splitlines() if x.startswith("CK error:")), file=sys.stderr)
    print(f"(CK's own output: {log})")
    return code


def _said_by_program(log: Path) -> bool:
    """Whether the program ran (and so said its own error on stderr): CK failed after starting it."""
    return START in log.read_text()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or os.environ.get("CK_VERBOSE", "") not in ("", "0")
    log = next((a.split("=", 1)[1] for a in args if a.startswith("--log=")), None)
    args = [a for a in args if a != "--verbose" and not a.startswith("--log=")]
    if not args:
        print("usage: python -m ck_plugins.ckconsole [--verbose] [--log=FILE] CK-ARGUMENTS (e.g. run "
              "program:resnet-fp16 ...)",
              file=sys.stderr)
        return 2
    name = next((a.split(":", 1)[1] for a in args if a.startswith("program:")), args[0])
    try:
        return run(args, Path(log) if log else OUT_ROOT / f"ck-{args[0]}-{name}.log", verbose)
    except KeyboardInterrupt:
        print("interrupted; nothing of this run was kept (run it again to start over)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
