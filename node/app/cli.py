"""The `myonode` command."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from myonode import __version__
from myonode.core.config import ConfigError, LogSettings, Settings, dump_settings, load_settings
from myonode.core.logs import configure_logging
from myonode.route.profiles import ProfileError
from myonode.store.index import Index
from myonode.store.records import ResultFilter

# Piped output (logs, CI, scripts) gets wide tables rather than truncated cells.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _index(settings: Settings) -> Index | None:
    """The node's store (PostgreSQL, or the SQLite index in data_dir); None, with the reason
    printed, when there is no SQLite index yet (the node has not run with this data_dir)."""
    if not settings.store.url and not settings.index_path.exists():
        err.print(f"no index at {settings.index_path}: the node has not run with this data_dir")
        return None
    return Index(settings.store_location)


def cmd_serve(args: argparse.Namespace) -> int:
    from myonode.app.service import ROLES, Node

    settings = _settings(args)
    roles = set(ROLES if not args.role or "all" in args.role else args.role)
    if "worker" in roles and settings.queue.kind == "celery":
        if roles != {"worker"}:
            err.print("with queue.kind: celery, run workers as `myonode serve --role worker`")
            return 2
        from myonode.worker.celery import run_worker

        run_worker(settings, settings.workers.count)
        return 0
    node = Node(settings, roles)
    signal.signal(signal.SIGTERM, lambda *_: node._stop.set())
    node.start()
    where = f"listening on port {node.port}" if node.receiver is not None else "running"
    console.print(f"myonode {__version__} {where} as {', '.join(sorted(roles))}; Ctrl-C stops it")
    try:
        node.wait()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


def cmd_viewer(args: argparse.Namespace) -> int:
    import uvicorn

    from myonode.app.viewer import create_viewer_app

    settings = _settings(args)
    try:
        app = create_viewer_app(settings)
    except ValueError as exc:
        err.print(f"[red]cannot serve the viewer[/]: {exc}")
        return 2
    viewer = settings.viewer
    console.print(f"OHIF on http://{viewer.bind}:{viewer.port}/, the archive on /dicom-web")
    uvicorn.run(app, host=viewer.bind, port=viewer.port, log_level="warning", log_config=None)
    return 0


STRUCTURE_COLUMNS = (
    ("volume", "volume cm³"),
    ("mass", "mass g"),
    ("mean_attenuation", "mean HU"),
    ("mean_fat_fraction", "fat fraction %"),
    ("max_csa", "max CSA cm²"),
)


def _summary_tables(index: Index, study_uid: str | None = None) -> list[Table]:
    """One row per structure (QC verdict, volume, mass, HU/fat fraction, max CSA), then study
    values; a structure that failed QC has its verdict and no number."""
    records = index.query_results(ResultFilter(study_uid=study_uid))
    per_structure: dict[tuple[str, str], dict[str, float | None]] = {}
    verdicts: dict[tuple[str, str], str] = {}
    study_values = []
    for r in records:
        if r.structure:
            per_structure.setdefault((r.pipeline, r.structure), {})[r.quantity] = r.value
            verdicts[(r.pipeline, r.structure)] = r.qc or ""
        else:
            study_values.append(r)
    columns = [
        (q, label)
        for q, label in STRUCTURE_COLUMNS
        if any(q in row for row in per_structure.values())
    ]
    structures = Table(title="Measured structures")
    structures.add_column("pipeline")
    structures.add_column("structure")
    structures.add_column("QC")
    for _, label in columns:
        structures.add_column(label, justify="right")
    for (pipeline, structure), values in per_structure.items():
        cells = [f"{values[q]:.1f}" if values.get(q) is not None else "" for q, _ in columns]
        structures.add_row(pipeline, structure, verdicts[(pipeline, structure)], *cells)
    study = Table(title="Study-level values")
    for column in ("quantity", "value", "unit"):
        study.add_column(column, justify="right" if column == "value" else "left")
    for r in study_values:
        value = r.text if r.value is None else f"{r.value:.4g}"
        study.add_row(r.quantity, escape(value or ""), escape(r.unit))
    return [structures, study]


def _decision_json(row) -> dict:
    decision = dict(row)
    decision["details"] = json.loads(row["details"]) if row["details"] else None
    return decision


def cmd_status(args: argparse.Namespace) -> int:
    index = _index(_settings(args))
    if index is None:
        return 1
    studies = [
        {**dict(listing.study), "n": listing.instances}
        for listing in index.recent_studies(args.limit)
    ]
    jobs = index.jobs(args.limit)
    outbox = index.outbox(args.limit)
    if args.json:
        print(
            json.dumps(
                {
                    "counts": index.counts(),
                    "studies": studies,
                    "decisions": {
                        r["study_uid"]: [_decision_json(d) for d in index.decisions(r["study_uid"])]
                        for r in studies
                    },
                    "jobs": [dict(r) for r in jobs],
                    "outbox": [dict(r) for r in outbox],
                },
                indent=2,
                default=str,
            )
        )
        return 0
    table = Table(title="Studies")
    for column in ("study", "patient", "instances", "from", "state"):
        table.add_column(column)
    for row in studies:
        state = "stable, routed" if row["processed_seq"] == row["change_seq"] else "receiving"
        table.add_row(
            row["study_uid"],
            row["patient_id"] or "",
            str(row["n"]),
            row["calling_aet"] or "",
            state,
        )
    console.print(table)
    for row in studies:
        decisions = Table(title=f"Routing of {row['study_uid']}")
        for column in ("series", "pipeline", "selected", "reason"):
            decisions.add_column(column)
        for d in index.decisions(row["study_uid"]):
            decisions.add_row(
                d["series_uid"] or "",
                d["pipeline"] or "-",
                "yes" if d["selected"] else "no",
                d["reason"],
            )
        if decisions.row_count:
            console.print(decisions)
    console.print(
        _table(
            "Jobs",
            ("id", "pipeline", "series", "state", "attempts", "error"),
            [
                (r["id"], r["pipeline"], r["series_uid"], r["state"], r["attempts"], r["error"])
                for r in jobs
            ],
        )
    )
    console.print(
        _table(
            "Outbox",
            ("id", "sop instance", "destination", "state", "attempts", "last error"),
            [
                [r[k] for k in ("id", "sop_uid", "destination", "state", "attempts", "last_error")]
                for r in outbox
            ],
        )
    )
    return 0


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """A rich table of `rows`, None shown as an empty cell."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    return table


_DESTINATION = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d+)$")


def cmd_reroute(args: argparse.Namespace) -> int:
    index = _index(_settings(args))
    if index is None:
        return 1
    if not args.study and not args.not_routed:
        err.print("name studies by UID, or --not-routed for every study without a job")
        return 2
    try:
        studies = index.reroute(args.study, args.not_routed)
    except KeyError as exc:
        err.print(exc.args[0])
        return 1
    for study_uid in studies:
        print(study_uid)
    err.print(
        f"{len(studies)} studies marked for routing; the running node (or the next "
        "`myonode serve`) routes them with its current profiles and engines"
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from myonode.store.retention import prune

    settings = _settings(args)
    index = _index(settings)
    if index is None:
        return 1
    retention = settings.storage.retention
    keep_days = retention.keep_days if args.keep_days is None else args.keep_days
    free_mb = retention.free_mb if args.free_mb is None else args.free_mb
    if keep_days is None and free_mb is None:
        err.print("nothing to prune by: set storage.retention, or --keep-days / --free-mb")
        return 2
    report = prune(
        index,
        settings.instances_dir,
        settings.results_dir,
        keep_days,
        free_mb,
        dry_run=args.dry_run,
    )
    for study_uid in report.studies:
        print(study_uid)
    verb = "would delete" if report.dry_run else "deleted"
    err.print(
        f"{verb} {report.files} files ({report.bytes / 2**20:.1f} MiB) of "
        f"{len(report.studies)} studies (done or not routed only)"
    )
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from myonode.dispatch.scu import SendError, describe, send_files

    match = _DESTINATION.match(args.to)
    if not match:
        err.print(f"--to must look like AET@HOST:PORT, got {args.to!r}")
        return 2
    files = []
    for path in args.paths:
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    items, unreadable = [], []
    for path in files:
        try:
            items.append(describe(path))
        except Exception as exc:  # not DICOM Part 10: report, do not send
            unreadable.append((path, exc))
    for path, exc in unreadable:
        err.print(f"skipped {path}: not a DICOM file with meta header ({exc})")
    failures = 0
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("C-STORE", total=len(items))

        def on_result(result) -> None:
            nonlocal failures
            progress.advance(task)
            if not result.ok:
                failures += 1
                status = "no response" if result.status is None else f"0x{result.status:04X}"
                progress.console.print(f"[red]failed[/] {result.path}: {status} {result.comment}")

        try:
            results = send_files(
                items,
                args.aet,
                match["aet"],
                match["host"],
                int(match["port"]),
                on_result=on_result,
            )
        except SendError as exc:
            err.print(f"[red]{exc}[/]")
            return 1
    sent = sum(r.ok for r in results)
    console.print(
        f"sent {sent} of {len(items)} instances; {failures} failed, {len(unreadable)} skipped"
    )
    return 0 if failures == 0 and not unreadable else 1


def cmd_process(args: argparse.Namespace) -> int:
    from myonode.app.process import process_folder

    report, index = process_folder(args.path, args.out, load_settings(args.config))
    for reason, count in report.refused.items():
        err.print(f"refused {count} file(s): {reason}")
    for study_uid in index.study_uids():
        for d in index.decisions(study_uid):
            verdict = f"-> {d['pipeline']}" if d["selected"] else "not routed"
            console.print(f"series {d['series_uid']}: {verdict}: {d['reason']}")
    for job in index.jobs(state="failed")[::-1]:
        err.print(f"[red]job {job['id']} failed[/]: {job['error']}")
    for table in _summary_tables(index):
        console.print(table)
    for path in sorted((args.out / "results").rglob("*.dcm")):
        console.print(f"  {path}")
    console.print(
        f"{report.stored}/{report.files} files indexed, {report.jobs_done} jobs done, "
        f"{report.jobs_failed} failed; outputs under {args.out / 'results'}"
    )
    return 0 if report.jobs_failed == 0 and report.jobs_done > 0 else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from myonode.app.demo.run import run_demo

    console.print("[bold]myonode demo[/]: node + receiving archive on loopback")
    outcome = run_demo(args.out, timeout_s=args.timeout)
    console.print(f"study source: {outcome.source}")
    if outcome.index is not None:
        for table in _summary_tables(outcome.index, outcome.study_uid):
            console.print(table)
    if not outcome.ok:
        err.print(f"[red]demo failed:[/] {outcome.message}")
        return 1
    console.print(f"[green]{outcome.message}[/] to the demo archive:")
    for path in outcome.received:
        console.print(f"  {path}")
    console.print(f"node data (index, instances, results): {args.out / 'node'}")
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _records_table(records) -> Table:
    table = Table(title="Results")
    for column in ("patient", "study date", "study", "pipeline", "structure", "QC", "quantity"):
        table.add_column(column)
    table.add_column("value", justify="right")
    table.add_column("unit")
    for r in records:
        value = r.text if r.value is None else f"{r.value:.6g}"
        table.add_row(
            r.patient_id,
            r.study_date,
            r.study_uid,
            r.pipeline,
            r.structure or "(study)",
            r.qc or "",
            r.quantity,
            escape(value or ""),
            escape(r.unit),
        )
    return table


def cmd_results(args: argparse.Namespace) -> int:
    from myonode.store.records import ResultFilter, as_dicts, records_csv

    wanted = ResultFilter(
        args.patient,
        args.study,
        args.since,
        args.until,
        args.pipeline,
        args.structure,
        args.quantity,
    )
    if args.from_archive:
        from myonode.dispatch.archive import Archive, ArchiveError

        try:
            records = Archive(args.from_archive).results(wanted)
        except ArchiveError as exc:
            err.print(f"[red]{exc}[/]")
            return 1
    else:
        index = _index(_settings(args))
        if index is None:
            return 1
        records = index.query_results(wanted)
    if args.format == "json":
        print(json.dumps(as_dicts(records), indent=2))
    elif args.format == "csv":
        print(records_csv(records), end="")
    else:
        console.print(_records_table(records))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from myonode.pipelines import pipeline_versions
    from myonode.route import folder_studies, route_indexed_study, route_rows
    from myonode.route.explain import render
    from myonode.route.profiles import configured_pipelines, load_profiles, profile_dirs

    settings = _settings(args)
    profiles = load_profiles(profile_dirs(settings.routing.profiles_dir))
    version_of = pipeline_versions(configured_pipelines(profiles))
    routings = []
    target = Path(args.study)
    if target.exists():
        studies = folder_studies(target)
        if not studies:
            err.print(f"no DICOM files under {target}")
            return 1
        for study_uid, rows in sorted(studies.items()):
            routings.append(route_rows(study_uid, rows, profiles, version_of))
    else:
        if not settings.store.url and not settings.index_path.exists():
            err.print(f"{args.study} is not a path, and there is no index at {settings.index_path}")
            return 1
        index = Index(settings.store_location)
        if index.study(args.study) is None:
            err.print(f"study {args.study} is not in the index {index.location}")
            return 1
        routings.append(
            route_indexed_study(index, args.study, profiles, version_of, index.job_done_for)
        )
    if args.json:
        print(json.dumps([r.to_json() for r in routings], indent=2, default=str))
        return 0
    for routing in routings:
        render(routing, console)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from myonode.models.bundle import BundleError
    from myonode.models.checkpoints import TrainOptions
    from myonode.models.data import DataError
    from myonode.models.training import train

    options = TrainOptions(
        epochs=args.epochs,
        resume=args.resume,
        finetune=args.finetune,
        device=args.device,
        intended_use=args.intended_use,
        progress=True,
        seed=args.seed,
        command=" ".join(["myonode", *sys.argv[1:]]),
    )
    try:
        result = train(args.bundle, args.data, args.out, options)
    except (BundleError, DataError) as exc:
        err.print(f"[red]cannot train[/]: {escape(str(exc))}")
        return 1
    manifest = result.bundle.manifest
    console.print(
        f"trained {manifest.name} {manifest.version} for {result.epochs} epochs "
        f"(intended use: {manifest.intended_use}); weights in {result.bundle.root / 'models'}"
    )
    for name, value in result.validation.items():
        console.print(f"  validation {name}: {value:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from myonode.models.bundle import BundleError, load_bundle
    from myonode.models.data import DataError
    from myonode.models.evaluate import evaluate_bundle

    out = args.out or args.bundle / "evaluation"
    try:
        bundle = load_bundle(args.bundle)
        report = evaluate_bundle(bundle, args.data, out, args.device)
    except (BundleError, DataError) as exc:
        err.print(f"[red]cannot evaluate[/]: {escape(str(exc))}")
        return 1
    table = Table(
        title=f"{report['bundle']} {report['version']} on {report['cases']} cases "
        f"(intended use: {report['intended_use']})"
    )
    if "labels" in report:
        for column in ("structure", "cases", "Dice", "volume error cm³", "error %", "LoA cm³"):
            table.add_column(column, justify="left" if column == "structure" else "right")
        for row in report["labels"]:
            percent = row["volume_error_percent_mean"]
            low, high = row["limits_of_agreement_cm3"]
            table.add_row(
                row["structure"],
                str(row["cases"]),
                f"{row['dice_mean']:.3f} ± {row['dice_sd']:.3f}",
                f"{row['volume_error_cm3_mean']:+.2f}",
                "" if percent is None else f"{percent:+.1f}",
                f"{low:+.2f} … {high:+.2f}",
            )
    else:
        for column in ("target", "unit", "CCC", "MAE", "bias", "mean σ"):
            table.add_column(column)
        for name, row in report["targets"].items():
            table.add_row(
                name,
                row["unit"],
                *(f"{row[k]:.3f}" for k in ("ccc", "mae", "bias", "sigma_mean")),
            )
    console.print(table)
    if "sarcopenia" in report:
        console.print(f"sarcopenia probability: {report['sarcopenia']}")
    console.print(
        f"report: {out / 'evaluation.json'}; Bland–Altman plot: {out / 'bland_altman.png'}"
    )
    return 0


def cmd_bundle_init(args: argparse.Namespace) -> int:
    from myonode.models.bundle import write_bundle
    from myonode.models.templates import TEMPLATES

    if (args.out / "configs").exists():
        err.print(f"{args.out} already holds a bundle")
        return 1
    template = TEMPLATES[args.template](args.demo)
    bundle = write_bundle(
        args.out, template.manifest, template.inference, template.train, template.readme
    )
    console.print(
        f"wrote {bundle.manifest.name} (no weights yet) to {args.out}; "
        f"train it with: myonode train {args.out} --data DIR"
    )
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from myonode.models.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(args.bundle)
        weights = bundle.verified_weights()
    except BundleError as exc:
        err.print(f"[red]bundle refused[/]: {escape(str(exc))}")
        return 1
    manifest = bundle.manifest
    console.print(
        f"{manifest.name} {manifest.version}: {manifest.task}, {manifest.modality}, "
        f"intended use {manifest.intended_use}; {len(weights)} weights file(s) match their sha256"
    )
    console.print(
        f"configs {', '.join(sorted(manifest.configs))} match their sha256 and use only "
        "allowed components (no $ expressions)"
    )
    if manifest.validation:
        console.print(f"validation ({manifest.validation.data}): {manifest.validation.metrics}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from myonode.core.types import EngineError
    from myonode.infer.engines.nnunet import describe_folder, model_folder
    from myonode.infer.engines.totalsegmentator import TASK_DATASETS, weights_dir

    root = weights_dir()
    folders: list[tuple[str, Path]] = []
    for task, datasets in TASK_DATASETS.items():
        for dataset in datasets:
            for path in sorted(root.glob(f"Dataset{dataset}_*")):
                folders.append((f"totalsegmentator:{task}", path))
    for path in args.paths:
        if (path / "plans.json").is_file() or any(path.glob("*/plans.json")):
            folders.append(("nnunet", path))
        else:
            folders += [("nnunet", p) for p in sorted(path.glob("Dataset*")) if p.is_dir()]
    rows, records = [], []
    for engine, path in folders:
        try:
            d = describe_folder(model_folder(path))
        except EngineError as exc:
            rows.append((engine, path.name, "[red]refused[/]", escape(str(exc)), ""))
            records.append({"engine": engine, "path": str(path), "error": str(exc)})
            continue
        keys = sorted(set(d.structures.values()))
        what = ", ".join(keys) or f"no muscle the node measures ({len(d.classes)} classes)"
        source = f"{d.modality}, folds {'+'.join(d.folds)}"
        rows.append((engine, d.dataset, source, what, d.version))
        records.append(
            {
                "engine": engine,
                "path": str(d.path),
                "modality": d.modality,
                "folds": list(d.folds),
                "structures": keys,
                "unmapped_classes": d.unmapped,
                "sha256": d.checksum,
            }
        )
    if args.json:
        print(json.dumps({"totalsegmentator_weights": str(root), "models": records}, indent=2))
        return 0
    console.print(f"TotalSegmentator weights: {root}")
    if not rows:
        console.print("no model folders installed (README, TotalSegmentator weights)")
        return 0
    columns = ("engine", "dataset", "input", "segments (node structures)", "checksum")
    console.print(_table("Installed models", columns, rows))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(dump_settings(_settings(args)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from myonode.models.templates import TEMPLATES  # configs only: no torch at start-up

    parser = argparse.ArgumentParser(prog="myonode", description=__doc__)
    parser.add_argument("--version", action="version", version=f"myonode {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--config", type=Path, help="YAML config (default: $MYONODE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the DICOM node")
    serve.add_argument(
        "--role",
        action="append",
        choices=("receiver", "router", "worker", "dispatcher", "web", "all"),
        help="what this process runs (repeat for several; default all). With queue.kind celery "
        "a worker is a Celery worker process of its own: `--role worker` alone",
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser(
        "viewer", help="serve OHIF with the archive's DICOMweb on the same origin"
    ).set_defaults(func=cmd_viewer)

    status = sub.add_parser("status", help="studies, routing, jobs and outbox")
    status.add_argument("--json", action="store_true")
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(func=cmd_status)

    reroute = sub.add_parser(
        "reroute", help="route studies again (e.g. after configuring a model bundle)"
    )
    reroute.add_argument("study", nargs="*", help="Study Instance UIDs")
    reroute.add_argument(
        "--not-routed", action="store_true", help="also every study that got no job"
    )
    reroute.set_defaults(func=cmd_reroute)

    prune_cmd = sub.add_parser(
        "prune", help="delete images and outputs of old studies that are done (retention)"
    )
    prune_cmd.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    prune_cmd.add_argument("--keep-days", type=float, help="override storage.retention.keep_days")
    prune_cmd.add_argument("--free-mb", type=int, help="override storage.retention.free_mb")
    prune_cmd.set_defaults(func=cmd_prune)

    send = sub.add_parser("send", help="C-STORE files or folders to a peer")
    send.add_argument("paths", nargs="+", type=Path)
    send.add_argument("--to", required=True, help="AET@HOST:PORT")
    send.add_argument("--aet", default="MYONODE-SCU", help="calling AE title")
    send.set_defaults(func=cmd_send)

    demo = sub.add_parser("demo", help="node + archive on loopback, one CT study, results")
    demo.add_argument("--out", type=Path, default=Path("myonode-demo"))
    demo.add_argument("--timeout", type=float, default=600.0)
    demo.set_defaults(func=cmd_demo)

    process = sub.add_parser("process", help="route and measure a folder without the network")
    process.add_argument("path", type=Path)
    process.add_argument("--out", type=Path, required=True)
    process.set_defaults(func=cmd_process)

    results = sub.add_parser("results", help="query measured results (index or archive)")
    results.add_argument("--patient", help="PatientID")
    results.add_argument("--study", help="StudyInstanceUID")
    results.add_argument("--since", type=_date, help="first study date, YYYY-MM-DD")
    results.add_argument("--until", type=_date, help="last study date, YYYY-MM-DD")
    results.add_argument("--pipeline")
    results.add_argument("--structure", help="e.g. psoas_left; '' for study-level values")
    results.add_argument("--quantity", help="e.g. mass, volume, imi, l3_smi")
    results.add_argument("--format", choices=("table", "csv", "json"), default="table")
    results.add_argument(
        "--from-archive",
        metavar="URL",
        help="DICOMweb root of an archive: read the node's SRs from there",
    )
    results.set_defaults(func=cmd_results)

    explain = sub.add_parser(
        "explain", help="every series, every routing rule and the decision per pipeline"
    )
    explain.add_argument("study", help="a folder or file of DICOM, or a Study Instance UID")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(func=cmd_explain)

    train = sub.add_parser("train", help="train a model bundle (MONAI) on labelled data")
    train.add_argument("bundle", type=Path, help="bundle folder (a template or a trained one)")
    train.add_argument("--data", type=Path, required=True, help="case folders, see README")
    train.add_argument("--out", type=Path, help="write a new bundle here (default: in place)")
    train.add_argument("--epochs", type=int, help="run only the first N epochs of the recipe")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    train.add_argument("--finetune", action="store_true", help="start from the bundle's weights")
    train.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    train.add_argument("--intended-use", choices=["demo", "research"], default="research")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="Dice, volume error and Bland–Altman of a bundle")
    evaluate.add_argument("bundle", type=Path)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, help="report folder (default: BUNDLE/evaluation)")
    evaluate.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    evaluate.set_defaults(func=cmd_evaluate)

    bundle = sub.add_parser("bundle", help="model bundles")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True)
    init = bundle_sub.add_parser("init", help="write a seed-architecture bundle without weights")
    init.add_argument("template", choices=sorted(TEMPLATES))
    init.add_argument("out", type=Path)
    init.add_argument("--demo", action="store_true", help="the tiny CPU-sized variant")
    init.set_defaults(func=cmd_bundle_init)
    verify = bundle_sub.add_parser("verify", help="check a bundle's manifest and checksums")
    verify.add_argument("bundle", type=Path)
    verify.set_defaults(func=cmd_bundle_verify)

    models = sub.add_parser(
        "models", help="installed nnU-Net and TotalSegmentator model folders and their checksums"
    )
    models.add_argument("paths", nargs="*", type=Path, help="nnU-Net folders or folders of them")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("show", help="print the effective configuration").set_defaults(
        func=cmd_config_show
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        max_line_chars = load_settings(args.config).logging.max_line_chars
    except ConfigError:  # reported below, by the command that needs the settings
        max_line_chars = LogSettings().max_line_chars
    configure_logging(args.verbose, max_line_chars)
    try:
        return args.func(args)
    except ConfigError as exc:
        err.print(f"[red]configuration error[/]: {exc}")
        return 2
    except ProfileError as exc:
        err.print(f"[red]routing profile error[/]: {escape(str(exc))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
