"""Flow preview (``worker.flow_task.preview``) of a 3-node graph over the bench table: absolute figures.

input ``events`` (sampled to the limit, 500) -> clean (filter, two columns, an expression) -> aggregate by
``kind``: end-to-end latency (submit -> SUCCESS seen by the client) of sequential previews, then the
throughput of a burst submitted at once, with the default worker settings. The Celery-design baseline
(``celery_baseline.py``) has no flow engine, so there is no side-by-side figure. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import common  # bench/ is on sys.path when run as `python bench/run.py`
from rosetta_jobs.client import JobClient
from rosetta_jobs.contracts import FLOW_PREVIEW


def graph(source_id: int, offset: int) -> dict[str, Any]:
    """The 3-node graph; ``offset`` makes each preview's SQL distinct."""
    return {
        "nodes": [
            {"id": "in", "type": "input", "data": {"source_id": source_id, "table_name": "events",
                                                   "filter_sql": f"id > {offset}"}},
            {"id": "clean", "type": "clean", "data": {
                "select_columns": ["kind", "amount"], "filter_rows": [{"col": "amount", "op": ">", "val": "10"}],
                "expressions": [{"expr": "amount * 2", "alias": "double_amount"}]}},
            {"id": "agg", "type": "aggregate", "data": {"group_by": ["kind"], "aggregations": [
                {"function": "SUM", "column": "double_amount", "alias": "total"}, {"column": "*"}]}},
        ],
        "edges": [{"id": "e1", "source": "in", "target": "clean"}, {"id": "e2", "source": "clean", "target": "agg"}],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--previews", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args(argv)
    _, config_url, source_id, _ = common.seed(args.rows)
    common.flush()
    process = common.dramatiq_worker({"DATABASE_URL": config_url}, name="bench-flow-worker")
    client = JobClient(broker_url=common.url(common.BROKER_DB), result_backend_url=common.url(common.RESULTS_DB))

    def preview(offset: int) -> str:
        return client.submit(FLOW_PREVIEW, [1, "agg", graph(source_id, offset), 500, False])

    def wait(task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = client.result(task_id).get(timeout=120)
        assert result["row_count"] == 4, result
        return result

    try:
        for i in range(5):  # warm-up: executors, imports
            wait(preview(150_000 + i))
        values = []
        for i in range(args.previews):
            started = time.perf_counter()
            wait(preview(i * 100))
            values.append(time.perf_counter() - started)
        started = time.perf_counter()
        for task_id in [preview(60_000 + i * 3) for i in range(args.burst)]:
            wait(task_id)
        rate = args.burst / (time.perf_counter() - started)
    finally:
        process.stop()
        common.flush()
    print(f"flow preview (3 nodes, 500-row sample) {common.summary(values)}")
    print(f"flow preview burst of {args.burst}: {rate:6.1f} previews/s (no Celery-design baseline: it has no flows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
