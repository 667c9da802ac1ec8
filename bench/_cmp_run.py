"""``make bench``: rosetta-jobs next to a Celery worker of the old design, on the same machine.

On a 200,000-row, 12-column source table: end-to-end preview latency (submit -> SUCCESS seen by the
client) over 200 distinct 500-row previews with the cache off, and over repeated identical ones
(cache hits); the throughput of 400 distinct previews submitted at once with default worker settings;
peak worker RSS; then the serialiser alone at 500 and 50,000 rows against a row-by-row baseline.
Every figure is printed; nothing is asserted. Ratios are old / new (above 1: rosetta-jobs is faster).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from celery import Celery
from celery.result import AsyncResult as CeleryResult

import common  # bench/ is on sys.path when run as `python bench/run.py`
from rosetta_jobs.client import JobClient

Submit = Callable[[str | None], str]
Wait = Callable[[str], dict]


def _filter(offset: int) -> str:
    return json.dumps({"version": 2, "groups": [{"conditions": [{"column": "id", "operator": ">", "value": offset}]}]})


def latencies(submit: Callable[[], str], wait: Wait, count: int) -> list[float]:
    values = []
    for _ in range(count):
        started = time.perf_counter()
        result = wait(submit())
        values.append(time.perf_counter() - started)
        assert result.get("error") is None, result
        assert len(result["data"]) == 500
    return values


def throughput(submit: Callable[[int], str], wait: Wait, count: int) -> float:
    started = time.perf_counter()
    task_ids = [submit(i) for i in range(count)]
    for task_id in task_ids:
        result = wait(task_id)
        assert result.get("error") is None and len(result["data"]) == 500, result.get("error")
    return count / (time.perf_counter() - started)


def measure(name: str, submit_filter: Callable[[str | None], str], wait: Wait, args: argparse.Namespace,
            process: common.Process) -> dict[str, object]:  # fmt: skip
    """Run the three phases against one runner; distinct filters make every distinct preview a miss."""
    sampler = common.RssSampler(process)
    for i in range(5):  # warm-up: sessions, caches, imports
        wait(submit_filter(_filter(10_000_000 + i)))
    distinct = iter(range(args.previews * 10))
    cold = latencies(lambda: submit_filter(_filter(next(distinct) * 500)), wait, args.previews)
    wait(submit_filter(None))
    hits = latencies(lambda: submit_filter(None), wait, args.previews)
    rate = throughput(lambda i: submit_filter(_filter(100_000 + i * 17)), wait, args.burst)
    idle = []
    for i in range(args.idle_previews):  # a user's first preview after a quiet spell
        time.sleep(args.idle_seconds)
        idle += latencies(lambda i=i: submit_filter(_filter(150_000 + i * 500)), wait, 1)
    sampler.stop()
    print(f"{name:13} distinct  {common.summary(cold)}")
    print(f"{name:13} cache hit {common.summary(hits)}")
    print(f"{name:13} after {args.idle_seconds:g} s idle {common.summary(idle)}")
    print(f"{name:13} burst of {args.burst}: {rate:6.1f} previews/s; peak RSS {sampler.peak_total / 2**20:6.0f} MiB "
          f"(largest process {sampler.peak_single / 2**20:.0f} MiB)")  # fmt: skip
    return {"cold": cold, "hits": hits, "idle": idle, "rate": rate, "rss": sampler.peak_total}


def run_ours(args: argparse.Namespace, config_url: str, source_id: int, destination_id: int) -> dict[str, object]:
    process = common.dramatiq_worker({"DATABASE_URL": config_url}, name="bench-worker")
    client = JobClient(broker_url=common.url(common.BROKER_DB), result_backend_url=common.url(common.RESULTS_DB))
    try:
        return measure(
            "rosetta-jobs",
            lambda flt: client.submit_preview(None, source_id, destination_id, "events", flt),
            lambda task_id: client.result(task_id).get(timeout=120),
            args,
            process,
        )
    finally:
        process.stop()


def run_celery(args: argparse.Namespace, config_url: str, source_id: int, destination_id: int) -> dict[str, object]:
    env = {"CELERY_BROKER_URL": common.url(common.CELERY_BROKER_DB), "DATABASE_URL": config_url,
           "CELERY_RESULT_BACKEND": common.url(common.CELERY_RESULTS_DB), "REDIS_URL": common.url(common.CACHE_DB),
           "CREDENTIAL_ENCRYPTION_KEY": common.KEY}  # fmt: skip
    celery_args = [sys.executable, "-m", "celery", "-A", "celery_baseline", "--workdir", str(common.ROOT / "bench"),
                   "worker", "--pool=threads", "-c", "10", "-Q", "preview", "--loglevel=INFO", "--without-gossip",
                   "--without-mingle", "--without-heartbeat"]  # fmt: skip
    process = common.Process(celery_args, env, "bench-celery", " ready.")
    app = Celery("backend", broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    try:
        return measure(
            "celery (old)",
            lambda flt: (
                app.send_task(
                    "worker.preview.execute", args=[None, source_id, destination_id, "events", flt], queue="preview"
                ).id
            ),
            lambda task_id: CeleryResult(task_id, app=app).get(timeout=120),
            args,
            process,
        )
    finally:
        process.stop()
        app.close()


def ratios(old: dict[str, object], ours: dict[str, object]) -> None:
    def p(figures: dict[str, object], key: str, q: float) -> float:
        values = figures[key]
        assert isinstance(values, list)
        return common.percentile(values, q)

    def number(figures: dict[str, object], key: str) -> float:
        value = figures[key]
        assert isinstance(value, int | float)
        return float(value)

    print("ratios old/new (above 1: rosetta-jobs is better):")
    print(f"  distinct p50 {p(old, 'cold', 50) / p(ours, 'cold', 50):5.2f}x   "
          f"p99 {p(old, 'cold', 99) / p(ours, 'cold', 99):5.2f}x   "
          f"cache hit p50 {p(old, 'hits', 50) / p(ours, 'hits', 50):5.2f}x   "
          f"after idle p50 {p(old, 'idle', 50) / p(ours, 'idle', 50):5.2f}x")  # fmt: skip
    print(f"  throughput {number(ours, 'rate') / number(old, 'rate'):5.2f}x   "
          f"peak RSS {number(old, 'rss') / number(ours, 'rss'):5.2f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--previews", type=int, default=200)
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--idle-previews", type=int, default=15, help="previews sent after a quiet spell")
    parser.add_argument("--idle-seconds", type=float, default=2.0)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--skip-celery", action="store_true")
    args = parser.parse_args()

    _, config_url, source_id, destination_id = common.seed(args.rows, reseed=args.reseed)
    common.flush()
    print(f"source: {args.rows:,} rows x 12 columns; previews of 500 rows; defaults: dramatiq -p<cpus> -t8")
    try:
        ours = run_ours(args, config_url, source_id, destination_id)
        if not args.skip_celery:
            common.flush()
            old = run_celery(args, config_url, source_id, destination_id)
            ratios(old, ours)
    finally:
        common.flush()
    print()
    import bench_serializer

    sys.argv = [sys.argv[0]]
    bench_serializer.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
