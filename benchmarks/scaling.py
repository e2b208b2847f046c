"""Scaling: trials per minute with 1, 2 and 4 workers sharing one study on SQLite, Optuna's journal file and
PostgreSQL, for a cheap objective and for the real trainer; the storage's own cost per trial; and the real
pipeline's search wall-clock with ``search.parallelism`` 1 vs 2 (Dask worker processes) on two shipped configs.

Workers are separate processes running the search engine against one study, as machines sharing a database
would. Prints Markdown tables and saves a plot and the raw numbers under ``benchmarks/results/``.

    .venv/bin/python benchmarks/scaling.py            # about 15 minutes on 2 CPU cores
    .venv/bin/python benchmarks/scaling.py --quick    # smoke run

PostgreSQL: the server in AUTOML_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test) gets a
throwaway database; without a reachable server that column is left out and the output says so.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORKERS = (1, 2, 4)
CHEAP_SECONDS = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cheap-trials", type=int, default=40)
    parser.add_argument("--trainer-trials", type=int, default=16)
    parser.add_argument("--mlp-trials", type=int, default=40, help="pipeline search trials, mlp_tabular")
    parser.add_argument("--lstm-trials", type=int, default=12, help="pipeline search trials, lstm_baseline")
    parser.add_argument("--repeats", type=int, default=2, help="pipeline runs per setting (best is reported)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.cheap_trials, args.trainer_trials, args.mlp_trials, args.lstm_trials, args.repeats = 8, 4, 4, 2, 1
    os.environ["AUTOML_HOME"] = tempfile.mkdtemp(prefix="automl-scaling-")
    from automl.tasks.runtime.state import configure_environment

    configure_environment()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    storages, postgres_note = storage_urls(Path(os.environ["AUTOML_HOME"]))
    rows = []
    for objective, n_trials in (("cheap", args.cheap_trials), ("trainer", args.trainer_trials)):
        for storage_name, url in storages.items():
            for workers in WORKERS:
                seconds = run_workers(url, objective, n_trials, workers)
                rows.append(
                    {
                        "objective": objective,
                        "storage": storage_name,
                        "workers": workers,
                        "trials": n_trials,
                        "seconds": seconds,
                        "per_minute": 60 * n_trials / seconds,
                    }
                )
                print(
                    f"{objective:<8} {storage_name:<11} {workers} workers: {rows[-1]['per_minute']:7.1f} trials/min",
                    file=sys.stderr,
                )
    overhead = {name: storage_overhead(url) for name, url in storages.items()}
    pipeline = pipeline_parallelism({"mlp_tabular": args.mlp_trials, "lstm_baseline": args.lstm_trials}, args.repeats)

    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "scaling.csv", index=False)
    pd.DataFrame(pipeline).to_csv(out / "scaling_pipeline.csv", index=False)
    print(tables(rows, overhead, pipeline, postgres_note, args))
    plot(rows, pipeline, out / "scaling.png")
    print(f"\nraw results: {out / 'scaling.csv'}; plot: {out / 'scaling.png'}")


def storage_urls(home: Path) -> tuple[dict[str, str], str]:
    urls = {"sqlite": f"sqlite:///{home / 'bench.db'}", "journal": f"journal://{home / 'bench.journal'}"}
    server = os.environ.get("AUTOML_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg2
        from sqlalchemy.engine import make_url

        url = make_url(server)
        admin = psycopg2.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=3,
        )
        admin.autocommit = True
        name = f"automl_bench_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        urls["postgresql"] = url.set(drivername="postgresql+psycopg2", database=name).render_as_string(
            hide_password=False
        )
        return urls, f"PostgreSQL: {url.host}:{url.port or 5432}, throwaway database {name}."
    except Exception as exc:  # the benchmark still measures the file storages
        return urls, f"PostgreSQL left out: no server at {server} ({type(exc).__name__})."


def _worker(url: str, study_name: str, objective: str, n_trials: int, threads: int, barrier, result) -> None:
    import optuna
    import torch

    from automl.tasks.search import SearchEngine, SearchSpace, make_backend, make_scheduler
    from automl.tasks.search_stage.studies import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(threads)
    if objective == "cheap":
        space = SearchSpace.from_dict({"x": {"type": "float", "low": -5, "high": 5}})

        def evaluate(params, fidelity):
            time.sleep(CHEAP_SECONDS)
            return (params["x"] - 1) ** 2
    else:
        evaluate = _trainer_objective(threads)
        space = SearchSpace.from_dict(
            {
                "hidden_size": {"type": "int", "low": 32, "high": 128, "step": 32},
                "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                "batch_size": {"type": "categorical", "choices": [64, 128]},
            }
        )
    storage = make_storage(url)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True)
    engine = SearchEngine(
        evaluate,
        make_backend("optuna", "tpe", study, space, os.getpid() % 997, 3),
        make_scheduler("none", 3, 1),
        n_trials=n_trials,
        storage=storage,
    )
    barrier.wait()
    engine.run()
    result.put(time.perf_counter())


def _trainer_objective(threads: int):
    from automl.configs import load_config
    from automl.models import get_family
    from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    from automl.tasks.search_stage.objective import TrainerObjective

    cfg = load_config(REPO / "configs" / "lstm_baseline.yaml")
    checked = load_and_check(cfg)
    frame, plan, fp = checked.frame, checked.plan, checked.fingerprint
    prepared, _ = prepare(frame, DataPrepJob.of(cfg), plan, fp)
    family = get_family("lstm")
    objective = TrainerObjective("lstm", prepared, {**family.defaults}, epochs=1, loss="mse", threads=threads)
    return objective


def run_workers(url: str, objective: str, n_trials: int, workers: int) -> float:
    """Wall-clock seconds for ``workers`` processes to run ``n_trials`` trials together on one new study."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    result = ctx.Queue()
    study_name = f"{objective}-{workers}-{uuid.uuid4().hex[:6]}"
    import optuna

    from automl.tasks.search_stage.studies import make_storage

    optuna.create_study(study_name=study_name, storage=make_storage(url))  # created once, before workers race
    share = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [
        ctx.Process(target=_worker, args=(url, study_name, objective, k, threads, barrier, result)) for k in share
    ]
    for process in processes:
        process.start()
    barrier.wait()  # every worker has imported and loaded its data: timing starts now
    started = time.perf_counter()
    finished = [result.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    return max(finished) - started


def storage_overhead(url: str, n: int = 60) -> float:
    """Milliseconds of storage work per trial (ask, user attributes, report, tell) with a free objective."""
    import optuna

    from automl.tasks.search import SearchEngine, SearchSpace, make_backend, make_scheduler
    from automl.tasks.search_stage.studies import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_dict({"x": {"type": "float", "low": -5, "high": 5}})
    storage = make_storage(url)
    study = optuna.create_study(study_name=f"overhead-{uuid.uuid4().hex[:6]}", storage=storage)
    engine = SearchEngine(
        lambda p, f: p["x"] ** 2,
        make_backend("optuna", "random", study, space, 0, 0),
        make_scheduler("none", 3, 1),
        n_trials=n,
        run_id="overhead",
        storage=storage,  # for heartbeats, as the pipeline's search does
    )
    started = time.perf_counter()
    engine.run()
    return 1000 * (time.perf_counter() - started) / n


# The real pipeline's search on two shipped configs: small MLPs on the penguins table (one torch process cannot
# keep two cores busy on them) and the LSTM forecaster (up to 3 x 256 units, where it can).
PIPELINE_WORKLOADS = {
    "mlp_tabular": ("mlp_tabular.yaml", ["search.epochs=60"]),
    "lstm_baseline": ("lstm_baseline.yaml", []),
}


def pipeline_parallelism(trials: dict[str, int], repeats: int) -> list[dict]:
    """The real pipeline with search.parallelism 1 and 2, alternating, ``repeats`` times per workload: the
    search stage's wall-clock (Dask cluster start and stop included) and its trial loop alone, best of the
    repeats. Full fidelity and a seeded random sampler, so both settings train the same configs."""
    from automl.cli import setup_console
    from automl.flows.pipeline import automl_pipeline

    setup_console(progress=False)
    rows = []
    for workload, (config, extra) in PIPELINE_WORKLOADS.items():
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(repeats):
            for parallelism in runs:
                summary = automl_pipeline(
                    config_path=str(REPO / "configs" / config),
                    overrides=[
                        *extra,
                        f"search.parallelism={parallelism}",
                        f"search.n_trials={trials[workload]}",
                        "search.fidelity=none",
                        "search.sampler=random",
                        "warm_start.enabled=false",
                        "registry.enabled=false",
                        "final.epochs=1",
                    ],
                )
                runs[parallelism].append(
                    {
                        "stage": summary.stage_seconds["search"],
                        "loop": summary.search_seconds,
                        "trials": sum(summary.trials.as_dict().values()),
                    }
                )
                print(
                    f"pipeline {workload} parallelism {parallelism}: stage {runs[parallelism][-1]['stage']:.1f}s",
                    file=sys.stderr,
                )
        for parallelism, done in runs.items():
            rows.append(
                {
                    "workload": workload,
                    "parallelism": parallelism,
                    "trials": done[0]["trials"],
                    "stage_seconds": min(r["stage"] for r in done),
                    "loop_seconds": min(r["loop"] for r in done),
                }
            )
    return rows


def tables(rows: list[dict], overhead: dict[str, float], pipeline: list[dict], note: str, args) -> str:
    storages = list(dict.fromkeys(r["storage"] for r in rows))
    lines = [f"\n### Trials per minute, workers sharing one study ({os.cpu_count()} CPU cores)\n"]
    header = "| objective | workers | " + " | ".join(storages) + " |"
    lines += [header, "|---|---|" + "---|" * len(storages)]
    for objective in ("cheap", "trainer"):
        base = {
            s: next(r for r in rows if r["objective"] == objective and r["storage"] == s and r["workers"] == 1)
            for s in storages
        }
        for workers in WORKERS:
            cells = []
            for storage in storages:
                row = next(
                    r
                    for r in rows
                    if r["objective"] == objective and r["storage"] == storage and r["workers"] == workers
                )
                cells.append(f"{row['per_minute']:.0f} ({row['per_minute'] / base[storage]['per_minute']:.2f}x)")
            lines.append(f"| {objective} | {workers} | " + " | ".join(cells) + " |")
    lines += [
        f"\ncheap: a {CHEAP_SECONDS:.1f}s objective, {args.cheap_trials} trials; trainer: an LSTM (32-128 units)"
        f" on all the CO2 training windows (lookback 52) for 1 epoch, {args.trainer_trials} trials. {note}",
        "\n### Storage cost per trial (ask, attributes, tell; one worker, free objective)\n",
        "| storage | ms per trial |",
        "|---|---|",
        *[f"| {name} | {ms:.1f} |" for name, ms in overhead.items()],
        "\n### The pipeline's search with search.parallelism (Dask worker processes, same configs)\n",
        "| config | parallelism | trials | search stage (s) | trial loop (s) | speed-up (stage) | speed-up (loop) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in pipeline:
        one = next(r for r in pipeline if r["workload"] == row["workload"] and r["parallelism"] == 1)
        lines.append(
            f"| {row['workload']} | {row['parallelism']} | {row['trials']} | {row['stage_seconds']:.1f} "
            f"| {row['loop_seconds']:.1f} | {one['stage_seconds'] / row['stage_seconds']:.2f}x "
            f"| {one['loop_seconds'] / row['loop_seconds']:.2f}x |"
        )
    lines.append(
        f"\nBest of {args.repeats} alternating runs each. mlp_tabular: its default space, 60 epochs; lstm_baseline: its"
        " space, 5 epochs. Search stage: the subflow, Dask cluster start and stop included; trial loop: the engine."
    )
    return "\n".join(lines)


def plot(rows: list[dict], pipeline: list[dict], path: Path) -> None:
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, objective in zip(axes[:2], ("cheap", "trainer"), strict=True):
        for storage in dict.fromkeys(r["storage"] for r in rows):
            mine = [r for r in rows if r["objective"] == objective and r["storage"] == storage]
            ax.plot([r["workers"] for r in mine], [r["per_minute"] for r in mine], marker="o", label=storage)
        ax.set(title=f"{objective} objective", xlabel="workers", ylabel="trials per minute", xticks=list(WORKERS))
        ax.legend()
    workloads = list(dict.fromkeys(r["workload"] for r in pipeline))
    for offset, parallelism in ((-0.2, 1), (0.2, 2)):
        seconds = [
            next(r["stage_seconds"] for r in pipeline if r["workload"] == w and r["parallelism"] == parallelism)
            for w in workloads
        ]
        axes[2].bar([i + offset for i in range(len(workloads))], seconds, width=0.4, label=f"parallelism {parallelism}")
    axes[2].set(title="pipeline search stage", ylabel="seconds", xticks=range(len(workloads)), xticklabels=workloads)
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"total {time.time() - started:.0f}s", file=sys.stderr)
