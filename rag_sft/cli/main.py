"""`rag-sft`: generate sample events, run the daily pipeline, benchmark it.

    rag-sft generate --days 7 --out data/landing [--events-per-day N] [--malformed-share 0.01]
    rag-sft run                     # what `make run` does
    rag-sft bench --events 200000   # what `make bench` does
    rag-sft bench --events 50000 --local-s3  # the same with the warehouse on a local S3 server
    rag-sft bench-llm               # what `make bench-llm` does
    rag-sft llm-stub --port 8199    # a local OpenAI-compatible server for the llm strategy
    rag-sft version --start D --end D  # the dataset version of the exportable days in a range
    rag-sft train --version v002    # lora_training_job on a dataset version
    rag-sft model list | promote v0003 --reason R | rollback --reason R  # the model registry
    rag-sft erase --request-id ID [--request-id ID ...] | --from-file ids.txt [--dvc]  # erasure on request
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from datetime import date
from pathlib import Path

from rag_sft.cli.generate import write_days
from rag_sft.cli.home import ensure_dagster_home
from rag_sft.core.generator import GeneratorSettings, recent_days


def _generator_settings(args: argparse.Namespace) -> GeneratorSettings:
    return GeneratorSettings(
        events_per_day=args.events_per_day,
        english_share=args.english_share,
        malformed_share=args.malformed_share,
        duplicate_share=args.duplicate_share,
        factuality_share=args.factuality_share,
        seed=args.seed,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    days = [date.fromisoformat(d) for d in args.date] if args.date else recent_days(args.days)
    for path in write_days(Path(args.out), days, _generator_settings(args)):
        print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    ensure_dagster_home()

    import dagster as dg

    from rag_sft.cli.runner import format_summary, materialize_day, partition_days
    from rag_sft.cli.sample_data import SAMPLE_DAYS, STAND_IN_NOTE, stand_in_corrector, wants_stand_in, write_sample_days
    from rag_sft.cli.versions import params_run_config
    from rag_sft.definitions import DAILY_JOB, defs
    from rag_sft.io.sources.landing import LandingFolder
    from rag_sft.io.sources.lines import SourceUnavailable
    from rag_sft.io.storage.location import StorageUnavailable
    from rag_sft.jobs import FINGERPRINT_TAG

    source = defs.resources["event_source"]
    if source.kind == "landing":
        landing = LandingFolder(source.landing_dir, pattern=source.landing_pattern)
        try:
            has_events = landing.has_events()
        except StorageUnavailable as error:  # a landing prefix whose bucket or store is not there
            print(f"error: {error}", file=sys.stderr)
            return 2
        if not has_events:
            from rag_sft.resources import local_data_dir

            sample_folder = local_data_dir() / "landing"
            is_sample_folder = landing.root.absolute() == sample_folder
            if not landing.root.is_dir() and not is_sample_folder:
                print(f"error: landing folder {landing.root} does not exist", file=sys.stderr)
                return 2
            if not is_sample_folder:
                # A user's folder that is still empty must not be filled with made-up events that
                # would then be trained on as if they were real.
                print(
                    f"error: landing folder {landing.root} holds no events (*.jsonl, *.ndjson, also .gz and .zst); "
                    f"sample events are only generated into the project's own folder {sample_folder} "
                    "(unset RAG_SFT_LANDING_DIR to try them)",
                    file=sys.stderr,
                )
                return 2
            print(f"No events in {landing.root}: generating {SAMPLE_DAYS} days of sample events")
            write_sample_days(landing.root, args.sample_events_per_day)
    try:
        opened = source.open(defs.resources["warehouse"].state_dir())
        days_found = opened.days_present()
        if isinstance(opened, LandingFolder):
            # A day whose files went away is run too: its run refuses and says so.
            days_found.update({loss.day: 0 for loss in opened.index().losses()})
            ignored = opened.ignored_files()
            if ignored:
                print(f"warning: {len(ignored)} files in the landing folder are not JSON Lines by name and are not read "
                      f"(RAG_SFT_LANDING_PATTERN): {', '.join(ignored[:20])}")
    except (SourceUnavailable, StorageUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    days, outside = partition_days(list(days_found))
    days = [day for day in days if (not args.start or day >= args.start) and (not args.end or day <= args.end)]
    if outside:
        print(f"warning: {sum(days_found[date.fromisoformat(d)] for d in outside)} events fall on days outside "
              f"the partition range ({', '.join(outside)}); set RAG_SFT_START_DATE to include them")
    if not days:
        print("No events on any partition day.")
        return 1
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(DAILY_JOB)
    run_config = params_run_config(args.params, "export")
    stand_in = source.kind == "landing" and wants_stand_in(landing.root, run_config)
    reports = []
    with stand_in_corrector(run_config) if stand_in else nullcontext(run_config) as run_config:
        if stand_in:
            print(STAND_IN_NOTE, flush=True)
        for day in days:
            print(f"materializing {day} ...", flush=True)
            fingerprint = {FINGERPRINT_TAG: opened.fingerprint(date.fromisoformat(day))}
            reports.append(materialize_day(job, day, instance, run_config=run_config, tags=fingerprint))
    print()
    print(f"Dagster instance: {os.environ['DAGSTER_HOME']} (open it with `make ui`)")
    print(format_summary(reports), flush=True)
    # A day held back by its checks is the pipeline working as configured, not an error.
    status = 1 if any(r.failure for r in reports) else 0
    if args.skip_training:
        return status
    return max(status, _train(instance))


def _train(instance) -> int:
    """Let the daemon's training sensor decide and train (the `[train]` extra must be installed)."""
    from importlib.util import find_spec

    from rag_sft.cli.training_demo import ensure_tiny_base, format_training, train_through_sensor
    from rag_sft.definitions import defs
    from rag_sft.resources import local_data_dir

    if find_spec("torch") is None or find_spec("peft") is None:
        print("\nTraining skipped: install the [train] extra (make run does) to train LoRA adapters.")
        return 0
    base_model = defs.resources["lora_training"].base_model
    built = ensure_tiny_base(base_model, local_data_dir())
    if built:
        print(f"\nBuilt the tiny demo base model (random Llama, tokenizer trained on the corpus): {built}")
    print("Starting the Dagster daemon: its training sensor decides whether to train ...", flush=True)
    report = train_through_sensor(instance, Path(os.environ["DAGSTER_HOME"]) / "daemon.log")
    print(format_training(report))
    return 1 if report.outcome in ("failed", "timed out") else 0


def _versions():
    from rag_sft.cli import versions

    return versions


def _start_date():
    from rag_sft.cli import start_date

    return start_date


def cmd_tiny_base(args: argparse.Namespace) -> int:
    from rag_sft.cli.training_demo import corpus_texts
    from rag_sft.resources import local_data_dir
    from rag_sft.training.tiny_base import build_tiny_base_model

    data_dir = local_data_dir()
    texts = corpus_texts(data_dir)
    if not texts:
        print(f"error: no exported JSONL under {data_dir / 'datasets' / 'sft'}; run `make run` first", file=sys.stderr)
        return 2
    print(build_tiny_base_model(texts, Path(args.out) if args.out else data_dir / "models" / "base" / "tiny-llama"))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rag_sft.cli.bench import run_bench

    workdir = Path(args.workdir) if args.workdir else None
    if not args.local_s3:
        return run_bench(args.events, workdir, args.keep, args.data_dir, args.many_files)
    from rag_sft.testing.s3_server import start_s3_server

    server = start_s3_server()
    try:
        os.environ.update(server.env())
        print(f"warehouse on a local SeaweedFS S3 server at {server.endpoint}", flush=True)
        return run_bench(args.events, workdir, args.keep, server.uri("bench"))
    finally:
        server.remove()


def cmd_bench_history(args: argparse.Namespace) -> int:
    from rag_sft.cli.history_bench import run_history_bench

    return run_history_bench(args.events_per_day, args.days, Path(args.workdir) if args.workdir else None, args.sources.split(","))


def cmd_bench_llm(args: argparse.Namespace) -> int:
    from rag_sft.cli.llm_bench import run_llm_bench

    return run_llm_bench(args.samples, args.latency, args.concurrency, Path(args.workdir) if args.workdir else None)


def cmd_llm_stub(args: argparse.Namespace) -> int:
    from rag_sft.testing.openai_server import main as serve

    serve(["--port", str(args.port), "--latency", str(args.latency)])
    return 0


def iso_day(text: str) -> str:
    """An argparse type: a calendar day as YYYY-MM-DD, refused with its text otherwise (exit 2),
    so a typo never reads as a range with no events."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def optional_iso_day(text: str) -> str:
    """`iso_day`, or "" for none (the default, as dvc.yaml passes it)."""
    return text and iso_day(text)


def main(argv: list[str] | None = None) -> int:
    from rag_sft import settings

    parser = argparse.ArgumentParser(prog="rag-sft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write realistic sample quality events as JSON Lines")
    gen.add_argument("--out", default=settings.LANDING_DIR.raw() or "data/landing")
    gen.add_argument("--days", type=int, default=7, help="the N whole UTC days before today")
    gen.add_argument("--date", action="append", type=iso_day, help="a specific day (repeatable); overrides --days")
    gen.add_argument("--events-per-day", type=int, default=1500)
    gen.add_argument("--english-share", type=float, default=0.15)
    gen.add_argument("--malformed-share", type=float, default=0.0, help="share of malformed lines mixed in")
    gen.add_argument("--duplicate-share", type=float, default=0.0, help="share of repeated request_ids")
    gen.add_argument("--factuality-share", type=float, default=None, help="force a skewed label mix")
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=cmd_generate)

    run = sub.add_parser("run", help="materialize every day present in the source, then let the training sensor decide")
    run.add_argument("--skip-training", action="store_true", help="only materialize the days")
    run.add_argument("--start", default="", type=optional_iso_day, help="first day to materialize (YYYY-MM-DD); default: the first in the source")
    run.add_argument("--end", default="", type=optional_iso_day, help="last day to materialize; default: the last in the source")
    run.add_argument("--params", default="", help="params.yaml: its export.resources settings as run config (DVC)")
    run.add_argument("--sample-events-per-day", type=int, default=1500, help="events per generated day, when the project's landing folder is empty")
    run.set_defaults(func=cmd_run)

    version = sub.add_parser("version", help="create (or find) the dataset version of the exportable days in a range")
    version.add_argument("--start", default="", help="first day; default: the first exportable day")
    version.add_argument("--end", default="", help="last day; default: the last exportable day")
    version.set_defaults(func=lambda args: _versions().cmd_version(args))

    train = sub.add_parser("train", help="run lora_training_job on a dataset version")
    train.add_argument("--version", default="latest", help="a dataset version name (v001, ...) or latest")
    train.add_argument("--params", default="", help="params.yaml: its train.resources settings as run config (DVC)")
    train.set_defaults(func=lambda args: _versions().cmd_train(args))

    from rag_sft.cli import erase, landing, models, state

    models.add_parser(sub)
    erase.add_parser(sub)
    state.add_parser(sub)
    landing.add_parser(sub)

    tiny = sub.add_parser("tiny-base", help="build the tiny demo base model from the exported JSONL")
    tiny.add_argument("--out", default=None, help="default: <data>/models/base/tiny-llama")
    tiny.set_defaults(func=cmd_tiny_base)

    start = sub.add_parser("start-date", help="the first partition day: the first day of the events, kept in DAGSTER_HOME")
    start.set_defaults(func=lambda args: _start_date().cmd_start_date(args))

    init_home = sub.add_parser("init-home", help="create DAGSTER_HOME (SQLite storage) if it is missing")
    init_home.set_defaults(func=lambda args: print(ensure_dagster_home()) or 0)

    bench = sub.add_parser("bench", help="one day of N realistic events through all assets")
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument(
        "--many-files", type=int, default=0, help="also run the same events split into this many files (make bench: 20000)"
    )
    bench.add_argument("--workdir", default=None, help="keep inputs and outputs here (default: a temp folder)")
    bench.add_argument("--keep", action="store_true", help="do not delete the temp folder")
    bench.add_argument(
        "--data-dir", default=None, help="the warehouse's root: a folder or s3://bucket/prefix (default: <workdir>/data)"
    )
    bench.add_argument(
        "--local-s3", action="store_true", help="the warehouse on an S3 server started for the run (SeaweedFS, dev extras)"
    )
    bench.set_defaults(func=cmd_bench)

    history = sub.add_parser("bench-history", help="a day's cost with 1 and with N days in the source (landing and SQL)")
    history.add_argument("--events-per-day", type=int, default=20_000)
    history.add_argument("--days", type=int, default=30)
    history.add_argument("--sources", default="landing,sql", help="landing, sql or both (comma list)")
    history.add_argument("--workdir", default=None, help="keep inputs and outputs here (default: a temp folder)")
    history.set_defaults(func=cmd_bench_history)

    bench_llm = sub.add_parser("bench-llm", help="LLM corrections of N samples from a local server: sequential vs concurrent")
    bench_llm.add_argument("--samples", type=int, default=2000)
    bench_llm.add_argument("--latency", type=float, default=0.1, help="seconds the server waits before each answer")
    bench_llm.add_argument("--concurrency", type=int, default=16)
    bench_llm.add_argument("--workdir", default=None, help="keep inputs and outputs here (default: a temp folder)")
    bench_llm.set_defaults(func=cmd_bench_llm)

    stub = sub.add_parser("llm-stub", help="a local OpenAI-compatible server (deterministic answers) to try the llm strategy")
    stub.add_argument("--port", type=int, default=8199)
    stub.add_argument("--latency", type=float, default=0.0)
    stub.set_defaults(func=cmd_llm_stub)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
