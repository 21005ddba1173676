"""`python -m ck_plugins ...`: the plain entry point, for people who do not use CK."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .files import OUT_ROOT
from .libnames import FAMILY_OF
from .modelnames import SEED_MODELS
from .point import TAG
from .errors import BadInput, check_positive_float, check_positive_int


MODEL_HELP = (f"a seed model ({', '.join(SEED_MODELS)}), torchvision:<name>, timm:<name>, onnx:<path> or "
              "py:<module>:<function>")


def _env_int(name: str, default: int) -> str:
    return os.environ.get(name, str(default))


def _add_precision_bench(sub) -> None:
    for name, what in (("precision-bench", "one network at every precision and layout, with the reasons"),
                       ("resnet-fp16", "ResNet-50 at every precision and layout, with the reasons (precision-bench's "
                                       "ResNet-50 shortcut)")):
        p = sub.add_parser(name, help=what)
        if name == "precision-bench":
            p.add_argument("--model", default=os.environ.get("CK_MODEL", "resnet50"), help=MODEL_HELP)
        p.add_argument("--input-shape", default=os.environ.get("CK_INPUT_SHAPE", "3x224x224"),
                       help="one input without the batch, e.g. 3x224x224")
        p.add_argument("--batch-size", default=_env_int("CK_BATCH_SIZE", 8))
        p.add_argument("--iterations", default=_env_int("CK_ITERATIONS", 20))
        p.add_argument("--repetitions", default=_env_int("CK_REPETITIONS", 3))
        p.add_argument("--warmup", default=_env_int("CK_WARMUP", 5))
        p.add_argument("--min-repetition-ms", default=os.environ.get("CK_MIN_REPETITION_MS", "0"),
                       help="above 0, each repetition lasts at least this many ms (exact energy needs about 200)")
        p.add_argument("--device", default=os.environ.get("CK_DEVICE", "auto"), help="auto, cpu or cuda")
        p.add_argument("--precisions", default=os.environ.get("CK_PRECISIONS", "all"),
                       help="comma-separated subset of fp32,tf32,amp,fp16,bf16 (fp32 always runs: it is the baseline)")
        _add_inputs(p)
        p.add_argument("--record", default=os.environ.get("CK_RECORD", "false"),
                       help="also record every mode as a CK experiment point: true/false")
        p.add_argument("--repo", default=os.environ.get("CK_RESULTS_REPO", ""),
                       help="CK repository the points go to with --record (default: this checkout)")
        p.add_argument("--out", default=str(OUT_ROOT / name / "result.json"), help="where to write the JSON result")
        p.set_defaults(func=_cmd_precision_bench, program=name)


def _add_inputs(p) -> None:
    env = os.environ.get
    p.add_argument("--weights", default=env("CK_WEIGHTS", ""),
                   help="a state_dict file the network loads (default: weights drawn from the seed)")
    p.add_argument("--pretrained", default=env("CK_PRETRAINED", "false"),
                   help="torchvision:/timm: networks load the zoo's weights (a download): true/false")
    p.add_argument("--images", default=env("CK_IMAGES", ""),
                   help="a folder of JPEG/PNG images, ImageNet-preprocessed (default: Gaussian noise from the seed)")


def _inputs(args):
    from .inputs import check

    return check(args.weights, args.images, _parse_bool("pretrained", args.pretrained))


def _cmd_precision_bench(args) -> int:
    from .modelnames import check, entry_model, parse_input_shape

    request_args = dict(batch_size=check_positive_int("batch size", args.batch_size),
                        iterations=check_positive_int("iterations", args.iterations),
                        repetitions=check_positive_int("repetitions", args.repetitions),
                        warmup=check_positive_int("warm-up iterations", args.warmup),
                        input_shape=parse_input_shape(args.input_shape),
                        min_repetition_ms=_non_negative("minimum repetition time (ms)", args.min_repetition_ms))
    model = check(getattr(args, "model", "resnet50")).text
    record = _parse_bool("record", args.record)
    fed = _inputs(args)
    from . import precision_bench  # imports torch: only once the arguments are known to be good
    from .files import REPO_ROOT, write_json_atomic

    request = precision_bench.Request(model=model, device=precision_bench.resolve_device(args.device),
                                      precisions=precision_bench.parse_modes(args.precisions), inputs=fed,
                                      **request_args)
    result, measured = precision_bench.run(request)
    write_json_atomic(args.out, result)
    device = request.device.type
    complete = not result.get("error") and all(r["run_success"] for r in result["modes"])
    last = OUT_ROOT / args.program / f"last-{entry_model(model)}-{device}-bs{request.batch_size}.json"
    if complete:  # a failed run never replaces the last complete result (of this model, device and batch size)
        write_json_atomic(last, result)
    print(precision_bench.summary_table(result))
    if device == "cpu" and model == "resnet50":
        print(precision_bench.shipped_gpu_tables())
    if record:
        paths = precision_bench.record(measured, Path(args.repo or REPO_ROOT).resolve())
        print(f"\n{len(paths)} points recorded in {Path(args.repo or REPO_ROOT).resolve()}/experiment")
    print(f"\nresult written to {os.path.abspath(args.out)}; " + (
        f"the last complete result of this model at this batch size is kept in {last} (CK clears its tmp folder "
        "when a run starts)" if complete else f"not complete: the last complete result stays in {last}"))
    if result.get("error"):
        return 3
    return 0 if all(r["run_success"] for r in result["modes"]) else 3


def _parse_bool(what: str, value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise BadInput(what, value, "true or false (also 1/0, yes/no)")


def _add_point(sub) -> None:
    p = sub.add_parser("point", help="measure one (model, lib, batch size) point and record it as a CK point")
    env = os.environ.get
    p.add_argument("--model", default=env("CK_MODEL", "resnet50"), help=MODEL_HELP)
    p.add_argument("--input-shape", default=env("CK_INPUT_SHAPE", "3x224x224"),
                   help="one input without the batch, e.g. 3x224x224")
    p.add_argument("--lib", default=env("CK_LIB", "torch-cpu"), help=f"one of {', '.join(FAMILY_OF)}")
    p.add_argument("--batch-size", default=_env_int("CK_BATCH_SIZE", 8))
    p.add_argument("--iterations", default=_env_int("CK_ITERATIONS", 20))
    p.add_argument("--repetitions", default=_env_int("CK_REPETITIONS", 3))
    p.add_argument("--warmup", default=_env_int("CK_WARMUP", 5))
    p.add_argument("--min-repetition-ms", default=env("CK_MIN_REPETITION_MS", "0"),
                   help="above 0, iterations is a minimum: each repetition lasts at least this many ms")
    p.add_argument("--memory-format", default=env("CK_MEMORY_FORMAT", "nchw"), help="nchw or channels_last")
    p.add_argument("--cuda-graph", default=env("CK_CUDA_GRAPH", "false"), help="capture in a CUDA graph: true/false")
    p.add_argument("--compile-mode", default=env("CK_COMPILE_MODE", "default"),
                   help="compile libs: default, reduce-overhead, max-autotune or max-autotune-no-cudagraphs")
    p.add_argument("--freezing", default=env("CK_FREEZING", "false"), help="inductor weight freezing: true/false")
    p.add_argument("--per-layer", default=env("CK_PER_LAYER", "true"), help="per-layer profiling pass: true/false")
    p.add_argument("--profile", default=env("CK_PROFILE", "true"), help="kernel profile for the diagnosis")
    p.add_argument("--family", default=env("CK_FAMILY", "any"), help="restrict libs to one program's family")
    p.add_argument("--plan", default=env("CK_ADAPTIVE_PLAN", ""), help="adaptive lib: the plan file to run")
    p.add_argument("--fold-bn", default=env("CK_FOLD_BN", "false"), help="eager libs: fold batch norms: true/false")
    _add_inputs(p)
    p.add_argument("--threads", default=env("CK_NUM_THREADS", "0"),
                   help="torch's intra-op CPU threads for this point (0: torch's default); recorded in the point")
    p.add_argument("--repo", default=env("CK_RESULTS_REPO", ""),
                   help="CK repository that receives experiment/<model>-<lib>/ (default: this checkout)")
    p.add_argument("--failed", default="", metavar="REASON",
                   help="record this configuration as a failed point with REASON, measuring nothing (for a harness "
                        "that had to kill the run, e.g. past its time limit)")
    p.add_argument("--out", default=str(OUT_ROOT / "point" / "result.json"), help="where to write the run's summary")
    p.set_defaults(func=_cmd_point)


def _non_negative(what: str, text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise BadInput(what, str(text), "a number of milliseconds, 0 or more")
    return value


def _cmd_point(args) -> int:
    from . import backends, bench, engine
    from .files import REPO_ROOT, write_json_atomic
    from .modelnames import check, parse_input_shape

    model = check(args.model).text
    input_shape = parse_input_shape(args.input_shape)
    backends.family_of(args.lib)
    plan = engine.RunPlan(model, check_positive_int("batch size", args.batch_size),
                          check_positive_int("warm-up iterations", args.warmup),
                          check_positive_int("iterations", args.iterations),
                          check_positive_int("repetitions", args.repetitions),
                          per_layer=_parse_bool("per-layer", args.per_layer),
                          profile=_parse_bool("profile", args.profile),
                          min_repetition_ms=_non_negative("minimum repetition time (ms)", args.min_repetition_ms),
                          threads=0 if str(args.threads) == "0" else check_positive_int("threads", args.threads),
                          input_shape=input_shape, inputs=_inputs(args))
    options = backends.Options(args.memory_format, _parse_bool("cuda graph", args.cuda_graph), args.compile_mode,
                               _parse_bool("freezing", args.freezing), plan=args.plan,
                               fold_bn=_parse_bool("fold bn", args.fold_bn))
    request = bench.PointRequest(plan, args.lib, options, Path(args.repo or REPO_ROOT).resolve(), args.family)
    backend = backends.create(args.lib, options, args.family)  # names checked before anything is measured
    if args.failed:
        import torch

        from .platform_info import describe

        where = backend.device if backend.device.type == "cpu" or torch.cuda.is_available() else torch.device("cpu")
        measured = engine.Measurement(plan, backend.describe(), run_success=False, error=args.failed,
                                      platform=describe(where))
    else:
        measured = bench.measure_point(request)
    sweep = None
    if os.environ.get("CK_SWEEP_ID"):  # run by the sweep's CK route
        from .sweep.journal import sweep_features

        sweep = sweep_features({"id": os.environ["CK_SWEEP_ID"], "config": os.environ.get("CK_SWEEP_CONFIG", ""),
                                "shard": os.environ.get("CK_SWEEP_SHARD", "")})
    path = bench.record(request, measured, sweep)
    write_json_atomic(args.out, {"program": "point", "run_success": measured.run_success, "point_file": str(path),
                                 "point": __import__("json").loads(path.read_text())})
    print(bench.summary_line(measured))
    print(f"point written to {path}")
    return 0 if measured.run_success else 3


def _add_explore(sub) -> None:
    p = sub.add_parser("explore", help="sweep models x libs x batch sizes (script/explore-batch-size-libs-models)")
    p.add_argument("--config", default="default", help="preset name (default, large-batch, ci) or a JSON path")
    p.add_argument("--models", help="comma-separated subset of the config's models")
    p.add_argument("--libs", help=f"comma-separated subset of the config's libs ({', '.join(FAMILY_OF)})")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes (replace the config's)")
    p.add_argument("--device", default="any", help="any, cpu or cuda: keep only libs of that device")
    p.add_argument("--shard", help="I/N: run the I-th of N deterministic parts (0-based)")
    p.add_argument("--workers", default="0", help="parallel workers (default: one per visible GPU, else 1)")
    p.add_argument("--prepared", default="auto",
                   help="GPU workers that wait prepared (imports, loads, compilations done) beside the measuring one: "
                        "auto (3 on hosts of 16 cores or more, 2 on 8 or more, else 1), or a count; 0 starts each "
                        "worker when the one before has finished, so that nothing else runs on the host")
    p.add_argument("--repo", default=os.environ.get("CK_RESULTS_REPO", ""),
                   help="CK repository that receives the points (default: this checkout)")
    p.add_argument("--fresh", action="store_true", help="start a new sweep even if the last one is incomplete")
    p.add_argument("--via-ck", action="store_true", help="use CK's autotune pipeline (one CK run per point)")
    p.add_argument("--dry-run", action="store_true", help="list the (model, lib) tasks and stop")
    p.set_defaults(func=_cmd_explore, resumable=True)
    w = sub.add_parser("explore-worker", help=argparse.SUPPRESS)
    for name in ("--tasks", "--config-json", "--sweep", "--repo"):
        w.add_argument(name, required=True)
    w.add_argument("--wait", action="store_true", help="prepare, say ready, then wait for a line on stdin")
    w.set_defaults(func=_cmd_explore_worker)


def _cmd_explore(args) -> int:
    from .files import REPO_ROOT
    from .sweep import config as sweep_config, journal, plan, scheduler

    config = sweep_config.load_config(args.config)
    tasks = plan.plan_tasks(config, sweep_config.parse_list(args.models), sweep_config.parse_list(args.libs),
                            sweep_config.parse_list(args.batch_sizes), args.device)
    shard = sweep_config.parse_shard(args.shard)
    if shard:
        tasks = plan.shard(tasks, *shard)
    workers = check_positive_int("workers", args.workers) if args.workers != "0" else 0
    prepared = scheduler.parse_prepared(args.prepared)
    if args.dry_run or not tasks:
        for task in tasks:
            print(f"{task.model} {task.lib} {task.memory_format} batch {','.join(map(str, task.batch_sizes))}")
        print(f"{len(tasks)} tasks, {sum(len(t.batch_sizes) for t in tasks)} points")
        if not tasks:
            print(f"why none: {plan.why_no_tasks(config, args.device)}")
        return 0
    repo = Path(args.repo or REPO_ROOT).resolve()
    key = plan.sweep_key(config, tasks, args.shard or "")
    sweep = journal.open_sweep(repo, key, config, args.shard or "", args.fresh)
    journal.remove_stale_temporaries(repo)
    print(f"sweep {sweep['id']} ({config.name}): {len(tasks)} (model, lib) tasks into {repo}", flush=True)
    if args.via_ck:
        book = journal.Journal(repo, key, sweep)
        outcome = scheduler.run_via_ck(tasks, config, sweep, repo)
    else:
        prepared = scheduler.prepared_workers(prepared, workers)
        book = journal.Journal(repo, key, sweep, {"prepared_workers": prepared})
        outcome = scheduler.run(tasks, config, sweep, repo, workers, book.save, prepared)
    summary = book.save(outcome, complete=True)
    ratio = summary["wall_over_measured"]
    parts = f" in {len(summary['parts'])} parts" if len(summary["parts"]) > 1 else ""
    print(f"wall {summary['wall_s']:.1f} s{parts}, measured {summary['measured_s']:.1f} s"
          f"{f', ratio {ratio:.2f}' if ratio else ''}; {summary['points']} points, {summary['failed']} failed")
    for reason, count in summary["failures"].items():
        print(f"  {count} failed: {reason}")
    if summary["phases_s"]:
        stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in summary["phases_s"].items())
        print(f"load and warm-up {summary['warmup_s']:.1f} s; harness {summary['harness_s']:.1f} s "
              f"({summary['harness_share']:.1%} of the wall time; the device waited {summary['waiting_s']:.1f} s "
              f"for a worker to be ready); stages (s, summed over points): {stages}")
    return 0


def _cmd_explore_worker(args) -> int:
    import json
    from .sweep.config import SweepConfig
    from .sweep.plan import Task
    from .sweep.worker import worker

    config = json.loads(args.config_json)
    config = SweepConfig(**{**config, "models": tuple(config["models"]), "batch_sizes": tuple(config["batch_sizes"]),
                            "input_shape": tuple(config["input_shape"])})
    job = tuple(Task(t["model"], t["lib"], tuple(t["batch_sizes"]), t["memory_format"]) for t in json.loads(args.tasks))
    code = worker(job, config, json.loads(args.sweep), Path(args.repo), args.wait)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every point is written and reported: no interpreter teardown (seconds, with inductor's pool)


def _add_adaptive(sub) -> None:
    p = sub.add_parser("adaptive", help="measure the candidate libs per layer, plan, build and measure the adaptive model")
    p.add_argument("--models", default="all", help=f"comma-separated models ({MODEL_HELP}), or all (the seed models)")
    p.add_argument("--batch-sizes", default="16", help="comma-separated batch sizes")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--cuda-graph", default="false", help="run candidates and the adaptive model in CUDA graphs")
    p.add_argument("--libs", help="comma-separated candidate libs (default: every single-configuration lib)")
    p.add_argument("--repetitions", default="3")
    p.add_argument("--iterations", default="20", help="timed iterations per repetition (a minimum: each repetition "
                   "lasts at least 250 ms)")
    p.add_argument("--repo", default="", help="CK repository for the points and plans (default: this checkout)")
    p.set_defaults(func=_cmd_adaptive)


def _cmd_adaptive(args) -> int:
    from . import adaptive_run
    from .errors import check_choice
    from .modelnames import check
    from .sweep.config import parse_list
    from .files import REPO_ROOT

    chosen = list(SEED_MODELS) if args.models == "all" else [check(name).text for name in parse_list(args.models)]
    check_choice("device", args.device, ("cuda", "cpu"))
    libs = tuple(parse_list(args.libs) or []) or None
    for lib in libs or ():
        check_choice("candidate lib", lib, adaptive_run.CANDIDATES[args.device])
    sizes = [check_positive_int("batch size", b) for b in parse_list(args.batch_sizes)]
    graph = _parse_bool("cuda graph", args.cuda_graph)
    repo = Path(args.repo or REPO_ROOT).resolve()
    effort = adaptive_run.Effort(check_positive_int("repetitions", args.repetitions),
                                 check_positive_int("iterations", args.iterations))
    failed = 0
    for model in chosen:
        for batch in sizes:
            outcome = adaptive_run.run(model, batch, repo, args.device, graph, libs, effort)
            print(outcome.line(), flush=True)
            failed += outcome.measured_ms is None
    return 3 if failed else 0


def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="copy the experiment points of one CK repository into another")
    p.add_argument("source", help="the CK repository whose experiment points are copied")
    p.add_argument("--into", default="", help="target repository (default: this checkout)")
    p.set_defaults(func=_cmd_merge)


def _cmd_merge(args) -> int:
    from .files import REPO_ROOT
    from .ckrepo import merge_repo

    source = _ck_repo("source repository", args.source, "")
    return _all_or_nothing("merged", lambda: "{} points added, {} identical points skipped".format(
        *merge_repo(source, Path(args.into or REPO_ROOT))))


def _ck_repo(what: str, text: str, default) -> Path:
    root = Path(text or default)
    if not (root / "experiment").is_dir():
        raise BadInput(what, text, "a CK repository folder holding experiment/")
    return root


def _all_or_nothing(done: str, action) -> int:
    """Run a repository rewrite that checks everything before it writes: its ValueError means nothing was done."""
    try:
        print(action())
    except ValueError as error:
        print(f"error: nothing {done}: {error}", file=sys.stderr)
        return 2
    return 0


def _add_migrate(sub) -> None:
    p = sub.add_parser("migrate", help="rewrite a repository's points of an older schema version in the current one")
    p.add_argument("--repo", default="", help="the CK repository (default: this checkout)")
    p.set_defaults(func=_cmd_migrate)


def _cmd_migrate(args) -> int:
    from .files import REPO_ROOT
    from .ckrepo import migrate_repo

    root = _ck_repo("--repo", args.repo, REPO_ROOT)
    return _all_or_nothing("migrated", lambda: "{} points migrated, {} already current".format(*migrate_repo(root)))


def _add_analyse(sub) -> None:
    p = sub.add_parser("analyse", help="tables, plots and the ideal adaptive solution from CK experiment points")
    p.add_argument("--repo", action="append", default=[], help="a CK repository or entry folder (repeatable)")
    p.add_argument("--all-repos", action="store_true", help="every repository registered with CK (pulled ones too)")
    p.add_argument("--tags", default=TAG, help="comma-separated tags the entries need")
    p.add_argument("--where", action="append", default=[], metavar="NAME=VALUE",
                   help="keep only points whose dimension NAME (a swept choice such as OPENBLAS_NUM_THREADS, or "
                        "platform, model, lib, batch_size, cpu, driver, torch) has VALUE (repeatable)")
    p.add_argument("--gpu", help="keep only the points of this platform (GPU name), e.g. 'NVIDIA H200'")
    p.add_argument("--baseline", help="lib every speed-up is computed over (default: the CPU lib if any)")
    p.add_argument("--adaptive-libs", help="comma-separated libs the ideal adaptive solution may use (default all)")
    p.add_argument("--layer-statistic", default="median", choices=["median", "min", "mean"],
                   help="per-layer time over repetitions: median (as a point's time), min (the seed notebook's) or mean")
    p.add_argument("--ideal-versus", default="same-layers", choices=["same-layers", "timed-total"],
                   help="what the ideal adaptive solution is compared with: the best single lib's per-layer sum over "
                        "the same layers, or the seed notebook's: its timed total")
    p.add_argument("--latency-budget-ms", metavar="MS",
                   help="per (GPU, model), the configuration with the most images/s whose p99 latency per batch is "
                        "within MS (steady-state timings, not a queueing simulation)")
    p.add_argument("--summary", metavar="FILE", help="write only the JSON summary to FILE (no report, no plots)")
    p.add_argument("--check-summary", metavar="FILE",
                   help="only say whether FILE (a committed summary.json) is what these points give: exit 1 listing "
                        "the figures that differ (CI runs it on the committed H200 report)")
    p.add_argument("--title", default="ck-precision-bench report")
    p.add_argument("--out", default=str(OUT_ROOT / "report"), help="folder for report.html, summary.json and the PNG plots")
    p.set_defaults(func=_cmd_analyse)


def _cmd_analyse(args) -> int:
    import warnings
    from . import ckedge, readpoints, report

    tags = [t for t in args.tags.split(",") if t]
    where = readpoints.parse_where(args.where, args.gpu)
    sources: list = list(args.repo)
    if args.all_repos:
        sources += ckedge.search_experiments(tags or [TAG])
    if not sources:
        raise BadInput("repositories", "", "--repo PATH (repeatable) or --all-repos")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped input is counted below and listed in the report
        try:
            loaded = readpoints.load(sources, tags, where)
        except ValueError as error:
            raise BadInput("--where", ", ".join(f"{k}={v}" for k, v in where.items()), str(error)) from None
    libs = [x for x in (args.adaptive_libs or "").split(",") if x] or None
    budget = None if args.latency_budget_ms is None else check_positive_float("--latency-budget-ms",
                                                                               args.latency_budget_ms)
    if args.summary or args.check_summary:
        return _write_summary(report, loaded, args, libs, budget)
    try:
        built = report.build(loaded, Path(args.out), args.baseline, args.title, libs, args.layer_statistic,
                             args.ideal_versus, budget)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print_summary(built)
    return 0


def _write_summary(report, loaded, args, libs, budget) -> int:
    from .files import write_json_atomic

    try:
        _, summary = report.summarise(loaded, args.baseline, libs, args.layer_statistic, args.ideal_versus, budget)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check_summary:
        found = report.differences(json.loads(Path(args.check_summary).read_text()), json.loads(json.dumps(summary)))
        print(f"{len(found)} figures differ from {args.check_summary}" + (": " + "; ".join(found[:8]) if found else ""))
        return 1 if found else 0
    print(f"summary: {write_json_atomic(Path(args.summary), summary).resolve()}")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="NEW over OLD for every configuration both have: the ratio with its interval, a "
                                       "Mann-Whitney test, a verdict; exit code 1 when anything is slower")
    p.add_argument("old", help="a CK repository or entry folder: the reference")
    p.add_argument("new", help="a CK repository or entry folder (the same one, with --old-where/--new-where)")
    for side in ("old", "new"):
        p.add_argument(f"--{side}-where", action="append", default=[], metavar="NAME=VALUE",
                       help=f"keep only {side.upper()}'s points whose dimension NAME has VALUE (repeatable; e.g. "
                            "sweep=ID, torch=2.11.0+cu130)")
    p.add_argument("--where", action="append", default=[], metavar="NAME=VALUE", help="on both sides (repeatable)")
    p.add_argument("--tags", default=TAG, help="comma-separated tags the entries need")
    p.add_argument("--threshold", default="0.05", help="the smallest relative change called slower or faster")
    p.add_argument("--alpha", default="0.01", help="Mann-Whitney's p under which a difference is significant")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout instead of the table")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    import warnings

    from . import compare, readpoints

    threshold, alpha = (check_positive_float(f"--{n}", v) for n, v in (("threshold", args.threshold),
                                                                         ("alpha", args.alpha)))
    if alpha >= 1:
        raise BadInput("--alpha", args.alpha, "a probability between 0 and 1")
    sides = []
    for name, path, where in (("OLD", args.old, args.old_where), ("NEW", args.new, args.new_where)):
        if not Path(path).is_dir():
            raise BadInput(name, path, "a CK repository or experiment entry folder")
        selection = readpoints.parse_where(args.where + where)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sides.append(readpoints.load([path], [t for t in args.tags.split(",") if t], selection))
            except ValueError as error:
                raise BadInput(f"--{name.lower()}-where", ", ".join(f"{k}={v}" for k, v in selection.items()),
                               str(error)) from None
    table = compare.compare(*sides, threshold, alpha)
    if table.empty:
        print(f"error: no configuration is in both OLD ({args.old}) and NEW ({args.new})", file=sys.stderr)
        return 2
    differences, only = compare.differences(*sides), compare.only_in(*sides)
    if args.json:
        print(json.dumps({"differences": {k: {"old": a, "new": b} for k, (a, b) in differences.items()},
                          "only_old": only[0], "only_new": only[1], "threshold": threshold, "alpha": alpha,
                          "configurations": json.loads(table.to_json(orient="records"))}, indent=1))
    else:
        print(compare.console(table, differences, only, threshold, alpha))
    return 1 if (table["verdict"] == compare.SLOWER).any() else 0


def _add_docs(sub) -> None:
    p = sub.add_parser("docs", help="rewrite the figures in README.md and docs/ from the committed summary.json files")
    p.add_argument("--check", action="store_true", help="only say which documents differ (exit 1 if any)")
    p.set_defaults(func=_cmd_docs)


def _cmd_docs(args) -> int:
    from . import docfigures
    from .files import REPO_ROOT

    differ = docfigures.run(REPO_ROOT, args.check)
    for path in differ:
        print(f"{'differs' if args.check else 'rewritten'}: {path.relative_to(REPO_ROOT)}")
    if not differ:
        print("every generated figure is up to date")
    return 1 if differ and args.check else 0


def _print_summary(built) -> None:
    from . import analysis, compare, latency

    summary = built.summary
    if summary["skipped_count"]:
        print(f"warning: {summary['skipped_count']} files skipped (first: {summary['skipped'][0][:200]}); all are "
              "listed in the report", file=sys.stderr)
    for name, values in summary["dimensions"].items():
        print(f"{name} varies ({', '.join(values[:8])}{', ...' if len(values) > 8 else ''}): each value is its own "
              f"lib or platform label; select one with --where {name}=VALUE")
    for f in summary["models"]:
        print(f"{f['model']} on {f['platform']}: fastest {f['fastest_lib']}, {f['time_per_image_ms']:.3f} ms/image at "
              f"batch {f['best_batch_size']} ({analysis.images_per_second_text(f)}); ideal adaptive solution: "
              f"{f['ideal_adaptive']}")
    for row in summary.get("latency_budget", []):
        print(latency.budget_text(row, summary["latency_budget_ms"]))
    for row in summary["regressions"]:
        print(f"{row['model']} {row['lib']} batch {row['batch_size']} on {row['platform']}: {row['verdict']} from "
              f"{row['software']} {row['before']} to {row['after']}, {compare.ratio_text(row)}")
    for row in summary["adaptive_built"]:
        ms = {k: "n/a" if row[k] is None else f"{row[k]:.3f}" for k in ("measured_ms", "planned_ms")}
        ratio = "n/a" if row["measured_over_best"] is None else \
            analysis.ratio_text(row["measured_over_best"], row["measured_over_best_ci"])
        print(f"{row['model']} batch {row['batch_size']}{' graph' if row['cuda_graph'] else ''} "
              f"({row['per_layer_method']}): adaptive built and measured {ms['measured_ms']} ms, "
              f"{ratio} {row['best_single_lib']} (planned {ms['planned_ms']} ms)")
    print(f"report: {built.html_path.resolve()}\nsummary: {built.summary_path.resolve()}")


def _budgets(args) -> "Budgets":
    from .submit.guard import Budgets, raise_open_files_limit

    connections = raise_open_files_limit(check_positive_int("--max-connections", args.max_connections))
    return Budgets(check_positive_float("--header-timeout-s", args.header_timeout_s),
                   check_positive_float("--body-timeout-s", args.body_timeout_s), connections,
                   check_positive_int("--max-work", args.max_work), check_positive_int("--burst", args.burst),
                   check_positive_float("--per-minute", args.per_minute))


def _add_service(sub) -> None:
    from .submit.guard import Budgets

    p = sub.add_parser("serve", help="run the result service (submissions, dashboard, results.git)")
    p.add_argument("--data", default=str(OUT_ROOT / "service-data"), help="folder for the database and the results repository")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="8000")
    p.add_argument("--db-url", default=os.environ.get("CKPB_DB_URL", ""),
                   help="SQLAlchemy URL (default: SQLite in --data; e.g. postgresql+psycopg://...)")
    p.add_argument("--alias", default=os.environ.get("CKPB_RESULTS_ALIAS", ""),
                   help="CK alias of the results repository (default: ck-precision-bench-results-<8 hex of --data>), "
                        "so one CK installation can pull several services")
    budgets = Budgets()
    p.add_argument("--header-timeout-s", default=str(budgets.header_timeout_s),
                   help="a request's headers must arrive within this many seconds (408 after)")
    p.add_argument("--body-timeout-s", default=str(budgets.body_timeout_s),
                   help="and its body within this many seconds of its headers")
    p.add_argument("--max-connections", default=str(budgets.max_connections),
                   help="connections open at once (503 past it; bounded by the open-files limit)")
    p.add_argument("--max-work", default=str(budgets.max_work),
                   help="numbers of repetition data (iteration and per-layer times) in one request (413 past it)")
    p.add_argument("--burst", default=str(budgets.burst), help="submissions a submitter may send at once")
    p.add_argument("--per-minute", default=str(budgets.per_minute),
                   help="submissions a submitter may send a minute after the burst (429 past it)")
    p.set_defaults(func=_cmd_serve)
    c = sub.add_parser("submit", help="validate this repository's points and send them to a result service")
    c.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    c.add_argument("--token", default=os.environ.get("CKPB_TOKEN", ""), help="your token (or CKPB_TOKEN)")
    c.add_argument("--repo", default=".", help="the CK repository whose experiment points are sent")
    c.add_argument("--entries", help="comma-separated experiment entries (default: all)")
    c.add_argument("--check", action="store_true", help="validate only; send nothing")
    c.set_defaults(func=_cmd_submit)


def _cmd_serve(args) -> int:
    import uvicorn

    from .submit.guard import guarded_protocol
    from .submit.server import create_app, parse_tokens

    admin = os.environ.get("CKPB_ADMIN_TOKEN", "")
    budgets = _budgets(args)
    try:
        app = create_app(Path(args.data), parse_tokens(os.environ.get("CKPB_TOKENS", "")), admin, args.db_url or None,
                         args.alias or None, budgets)
    except ValueError as error:
        raise BadInput("CKPB_ADMIN_TOKEN / CKPB_TOKENS", "(hidden)", str(error)) from None
    port = check_positive_int("port", args.port)
    print(f"serving on http://{args.host}:{port}/ (dashboard; API under /api/, results at /results.git); data in "
          f"{Path(args.data).resolve()}" + (f", database {args.db_url.split('@')[-1]}" if args.db_url else "")
          + "; Ctrl-C stops it", flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level="error", http=guarded_protocol(budgets), timeout_keep_alive=5)
    return 0


def _cmd_submit(args) -> int:
    from .submit import client

    points, problems, skipped = client.collect(Path(args.repo), [e for e in (args.entries or "").split(",") if e] or None)
    if skipped:
        print(client.skipped_summary(skipped) + " (not meant to be sent):", file=sys.stderr)
        for _, line in skipped[:10]:
            print(f"  {line}", file=sys.stderr)
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more", file=sys.stderr)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problems in {args.repo}; nothing sent", file=sys.stderr)
        return 2
    if args.check or not points:
        print(f"{len(points)} valid points")
        return 0
    if not args.token:
        raise BadInput("token", "", "--token or CKPB_TOKEN")
    try:
        answers = client.send(args.url, args.token, points)
    except (RuntimeError, OSError) as error:
        print(f"error: the service refused or could not be reached: {str(error)[:500]}", file=sys.stderr)
        return 3
    accepted = sum(a["accepted"] for a in answers)
    print(f"sent {len(points)}: {accepted} points accepted, {sum(a['duplicates'] for a in answers)} already there; "
          f"submissions {', '.join(a['submission'] for a in answers if a['submission'])}")
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default shown once: not where its help already says it, nor an empty one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, "", False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from .files import REPO_ROOT

    try:
        number = version("ck-plugins")
    except PackageNotFoundError:
        number = "unknown"
    import subprocess

    done = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"], capture_output=True,
                          text=True, timeout=30)
    return f"ck-precision-bench {number} (commit {done.stdout.strip() or 'unknown: not a git checkout'})"


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and the commit, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ck_plugins", description=__doc__, formatter_class=_Help)
    parser.add_argument("--status", help=argparse.SUPPRESS)  # CK programs: where the exit code and error go
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_precision_bench(sub)
    _add_point(sub)
    _add_explore(sub)
    _add_adaptive(sub)
    _add_merge(sub)
    _add_migrate(sub)
    _add_analyse(sub)
    _add_compare(sub)
    _add_docs(sub)
    _add_service(sub)
    described = {a.dest: a.help for a in sub._choices_actions}
    for name, command in sub.choices.items():  # every option's help shows its default, once
        command.formatter_class = _Help
        command.description = command.description or described.get(name)
        for action in command._actions:
            action.help = action.dest.replace("_", " ") if action.help is None else action.help
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "explore-worker"]  # internal: not listed
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also where a parent (CK) ignores SIGINT for us
    try:
        code, message = _run(args)
    except Exception as error:  # a bug: it fails loudly (traceback), and CK is told what happened
        _status(args.status, 1, f"crashed: {type(error).__name__}: {str(error)[:500]}")
        raise
    _status(args.status, code, message)
    return code


def _status(path: str | None, code: int, message: str | None) -> None:
    """CK's post-processing reads it: every path through `ck run` ends with our message and exit code."""
    if path:
        from .files import write_json_atomic

        write_json_atomic(path, {"return_code": code, "error": message})


def _run(args) -> tuple[int, str | None]:
    try:
        code = args.func(args)
        return code, None if code == 0 else f"{args.command} ended with exit code {code} (see its output)"
    except BadInput as error:
        message = f"error: {error}"
        code = 2
    except KeyboardInterrupt:  # only a sweep resumes where it stopped; every other command starts over
        message = ("interrupted; run it again to resume" if getattr(args, "resumable", False)
                   else "interrupted; run it again to start over")
        code = 130
    print(message, file=sys.stderr)
    return code, message.removeprefix("error: ")


if __name__ == "__main__":
    sys.exit(main())
