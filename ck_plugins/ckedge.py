"""CK's dict protocol lives here and in module/*/module.py only: dict in, {'return': ...} out."""
from __future__ import annotations

import json
from pathlib import Path

from . import point
from .files import OUT_ROOT, write_json_atomic

RESULT_FILE = "result.json"
TIMER_FILE = "tmp-ck-timer.json"
STATUS_FILE = "tmp-ck-status.json"  # written by `python -m ck_plugins --status ...`: exit code and error


def characteristics_of(result: dict) -> dict:
    """The keys CK merges into a run's characteristics, from a program's result.json."""
    if result.get("program") in ("precision-bench", "resnet-fp16"):  # resnet-fp16: older results
        done = [m for m in result["modes"] if m["run_success"]]
        best = min(done, key=lambda m: m["time_ms"]) if done else None
        return {
            "execution_time": best["time_ms"] / 1e3 if best else 0.0,
            "model": result.get("model", "resnet50"),
            "error": result.get("error"),
            "batch_size": result["batch_size"],
            "device": result["device"],
            "run_success": bool(done) and len(done) == len(result["modes"]),
            "best_mode": f"{best['precision']} {best['memory_format']}" if best else None,
            "images_per_second": best["images_per_second"] if best else 0.0,
            "modes": {f"{m['precision']} {m['memory_format']}": _mode_summary(m) for m in result["modes"]},
            "skipped": result["skipped"],
        }
    if result.get("program") == "point":
        return _point_characteristics(result)
    raise ValueError(f"result.json has program {result.get('program')!r}; expected 'precision-bench' or 'point'")


def _point_characteristics(result: dict) -> dict:
    """The point's one time (point.read -> Point.time_ms) as CK's execution time."""
    read = point.read(result["point"])
    time_ms = read.time_ms or 0.0
    return {"execution_time": time_ms / 1e3, "run_success": bool(read.successful), "point_file": result["point_file"],
            "model": read.model, "lib": point.env(result["point"])["CK_LIB"], "batch_size": read.batch_size,
            "time_fw_ms": time_ms,
            "images_per_second": 1e3 * read.batch_size / time_ms if time_ms else 0.0, "error": read.error,
            "diagnosis": (read.measurement.get("diagnosis") or {}).get("sentence") if read.successful else None}


def _mode_summary(mode: dict) -> dict:
    keys = ("run_success", "time_ms", "images_per_second", "speedup_vs_fp32", "diagnosis", "error")
    return {k: mode.get(k) for k in keys}


def preprocess(i: dict) -> dict:
    """CK's ck_preprocess(i), in CK's own process before the program starts. CK waits for the program in Python, so a
    Ctrl-C would end CK with a traceback: CK's process ignores SIGINT from here on, the program (which restores the
    default handler) stops with "interrupted; ..." and exit code 130, and CK ends with that."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return {"return": 0}


def postprocess(i: dict) -> dict:
    """CK's ck_postprocess(i): runs in the program's tmp folder after the program exits. It always writes CK's
    characteristics with the program's `return_code` and, when the program failed, its message as `fail_reason`:
    with `--treat_return_code_as_exit_code=yes`, `ck run` then ends with our message and our exit code (the
    programs set `ignore_return_code`, so CK does not replace the message with its own)."""
    status = _read_json(Path(STATUS_FILE)) or {}
    code = status.get("return_code")
    result = _read_json(Path(RESULT_FILE))
    characteristics: dict = {"execution_time": 0.0, "run_success": False}
    if result is not None:
        try:
            characteristics = characteristics_of(result)
        except (ValueError, KeyError, TypeError) as error:
            code, status = code or 1, {"error": f"{Path(RESULT_FILE).resolve()}: unreadable result ({error})"}
    if code is None:  # no status: the program was killed before it could say anything
        code = 0 if result is not None else 1
        status = {"error": None if result is not None else "the program ended without a result or a status "
                  "(killed?); see its output above"}
    characteristics["return_code"] = int(code)
    if code:
        characteristics["run_success"] = False
        characteristics["fail_reason"] = status.get("error") or f"exit code {code}"
    write_json_atomic(TIMER_FILE, characteristics)
    return {"return": 0, "characteristics": characteristics}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def analyse(i: dict) -> dict:
    """`ck analyse precision-bench`: i['tags'], i['repo'] (comma-separated paths; default every registered
    repository), i['where'] (comma-separated NAME=VALUE), i['gpu'], i['report_dir'], i['baseline'],
    i['adaptive_libs'], i['layer_statistic'], i['ideal_versus'] (same-layers or timed-total)."""
    import warnings

    from . import readpoints, report

    tags = [t for t in str(i.get("tags") or readpoints.TAG).split(",") if t]
    try:
        where = readpoints.parse_where([w for w in str(i.get("where") or "").split(",") if w], i.get("gpu"))
        sources = [p for p in str(i.get("repo", "")).split(",") if p] or search_experiments(tags)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = readpoints.load(sources, tags, where)
        libs = [x for x in str(i.get("adaptive_libs", "")).split(",") if x] or None
        built = report.build(loaded, Path(i.get("report_dir") or OUT_ROOT / "report"), i.get("baseline"), adaptive_libs=libs,
                             layer_statistic=str(i.get("layer_statistic") or "median"),
                             ideal_versus=str(i.get("ideal_versus") or "same-layers"))
    except (ValueError, RuntimeError) as error:
        return {"return": 1, "error": str(error)}
    if i.get("out") == "con":
        for f in built.summary["models"]:
            print(f"{f['model']} on {f['platform']}: fastest {f['fastest_lib']}, {f['time_per_image_ms']:.3f} ms per "
                  f"image; ideal adaptive solution: {f['ideal_adaptive']}")
        print(f"report: {built.html_path.resolve()}")
    return {"return": 0, "summary": built.summary, "html": str(built.html_path.resolve())}


def search_experiments(tags: list[str]) -> list[Path]:
    """Entry folders of every experiment with all `tags` in every repository registered with CK (pulled ones too)."""
    import ck.kernel as ck

    found = ck.access({"action": "search", "module_uoa": "experiment", "tags": ",".join(tags), "out": ""})
    if found["return"] > 0:
        raise RuntimeError(f"ck search: {found['error']}")
    return [Path(item["path"]) for item in found["lst"]]


def submit(i: dict) -> dict:
    """`ck submit precision-bench --url=... --token=... --repo=PATH [--entries=A,B] [--check=yes]`: every problem is
    returned, and what was not meant to be sent is counted."""
    import os

    from .submit import client

    entries = [e for e in str(i.get("entries") or "").split(",") if e] or None
    points, problems, skipped = client.collect(Path(i.get("repo") or "."), entries)
    if skipped and i.get("out") == "con":
        print(client.skipped_summary(skipped) + " (not meant to be sent)")
    if problems:
        return {"return": 1, "error": f"{len(problems)} problems, nothing sent: " + "; ".join(problems[:5]),
                "problems": problems}
    if i.get("check") == "yes" or not points:
        return {"return": 0, "valid_points": len(points), "skipped": [line for _, line in skipped]}
    token = i.get("token") or os.environ.get("CKPB_TOKEN", "")
    if not i.get("url") or not token:
        return {"return": 1, "error": "--url and --token (or CKPB_TOKEN) are required to send"}
    try:
        answers = client.send(i["url"], token, points)
    except (RuntimeError, OSError) as error:
        return {"return": 1, "error": f"the service refused or could not be reached: {str(error)[:500]}"}
    return {"return": 0, "answers": answers, "skipped": [line for _, line in skipped]}


def autotune_batch_sizes(program: str, env: dict, sizes: list[int]) -> None:
    """CK's pipeline for `program`, then CK's autotune looping CK_BATCH_SIZE over `sizes` (the CK route of a sweep:
    the program records each point itself, so CK records nothing). Raises RuntimeError with CK's error."""
    import ck.kernel as ck

    prepared = ck.access({"action": "pipeline", "prepare": "yes", "module_uoa": "program", "data_uoa": program,
                          "cmd_key": "default", "env": env, "no_state_check": "yes",
                          "no_compiler_description": "yes", "skip_calibration": "yes", "cpu_freq": "",
                          "gpu_freq": "", "speed": "no", "energy": "no", "out": ""})
    if prepared["return"] > 0:
        raise RuntimeError(f"CK pipeline for {program}: {prepared['error']}")
    for key in ("ready", "fail", "return"):
        prepared.pop(key, None)
    prepared["no_clean"] = "yes"
    tuned = ck.access({"action": "autotune", "module_uoa": "pipeline", "data_uoa": "program", "pipeline": prepared,
                       "choices_order": [["##choices#env#CK_BATCH_SIZE"]],
                       "choices_selection": [{"type": "loop", "choice": sizes, "default": sizes[0]}],
                       "iterations": len(sizes), "repetitions": 1, "sleep": 0, "record": "no", "out": ""})
    if tuned["return"] > 0:
        raise RuntimeError(f"CK autotune for {program}: {tuned['error']}")
