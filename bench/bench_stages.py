"""Where one preview's time goes, stage by stage: for a fresh preview and for a cache hit.

Seen from the client: the enqueue (the send call; for a cache hit answered at the door, the whole
answer: the cache GET and the SUCCESS write), the pickup (send returned -> STARTED published, which
includes the STARTED write), the job as the worker timed it, the result write (the job's end ->
SUCCESS published, by difference) and the client's read (``get()`` of the final state: GET and decode).
Seen from the worker: its log line of each job (``actors/preview.py`` for rosetta-jobs, ``celery_baseline``
for the baseline) names the stages inside the job, in milliseconds. Medians of ``count`` jobs, each run
alone, so nothing queues.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from rosetta_jobs.layout import META_PREFIX

__all__ = ["Breakdown", "measure", "print_side_by_side"]

Send = Callable[[str, str | None], None]
Read = Callable[[str], dict]
Breakdown = dict[str, float]

_STAGES = re.compile(r"(?P<task>[0-9a-f-]{36}).*? in (?P<took>[0-9.]+) s \[(?P<stages>[^\]]*)\]")
_BASELINE = re.compile(r"task (?P<task>[0-9a-f-]{36}) stages \[(?P<stages>[^\]]*)\]")


def _job_stages(log: Path) -> dict[str, dict[str, float]]:
    """Per task id, the stages the worker logged (``took``: the whole job, when the line says it)."""
    found: dict[str, dict[str, float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _STAGES.search(line) or _BASELINE.search(line)
        if not match:
            continue
        parts = match.group("stages").split()
        stages = {k: float(v) for k, v in (p.split("=", 1) for p in parts if "=" in p)}
        if "took" in match.groupdict():
            stages["job"] = float(match.group("took")) * 1000
        else:
            stages["job"] = sum(stages.values())
        found[match.group("task")] = stages
    return found


def measure(send: Send, read: Read, results: redis.Redis, log: Path, filters: Callable[[int], str | None],
            count: int) -> Breakdown:  # fmt: skip
    """Median milliseconds per stage over ``count`` previews sent by ``send(task_id, filter_sql)``."""
    client: dict[str, list[float]] = {}
    ids = []
    door = 0
    for i in range(count):
        task_id = str(uuid.uuid4())
        pubsub = results.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(META_PREFIX + task_id)
        pubsub.get_message(timeout=0.01)
        started = time.perf_counter()
        send(task_id, filters(i))
        sent = time.perf_counter()
        seen: dict[str, float] = {}
        deadline = sent + 60
        while "SUCCESS" not in seen and time.perf_counter() < deadline:
            event = pubsub.get_message(timeout=1.0)
            arrived = time.perf_counter()  # before decoding: a client needs the status only to know it is done
            if event is not None:
                seen.setdefault(json.loads(event["data"])["status"], arrived)
        pubsub.close()
        before_read = time.perf_counter()
        read(task_id)
        done = time.perf_counter()
        if "SUCCESS" not in seen:
            continue
        picked = seen.get("STARTED", sent)  # no STARTED: answered at the door, by the send itself
        door += "STARTED" not in seen
        for stage, ms in (("enqueue", sent - started), ("pickup", picked - sent),
                          ("to SUCCESS", seen["SUCCESS"] - picked), ("client read", done - before_read)):  # fmt: skip
            client.setdefault(stage, []).append(ms * 1000)
        ids.append(task_id)
    time.sleep(0.5)  # the worker's last log lines
    logged = _job_stages(log)
    worker: dict[str, list[float]] = {}
    for task_id in ids:
        for stage, ms in logged.get(task_id, {}).items():
            worker.setdefault(stage, []).append(ms)
    out: Breakdown = {stage: statistics.median(values) for stage, values in client.items()}
    inside = {stage: statistics.median(values) for stage, values in worker.items()}
    job = inside.pop("job", 0.0)
    to_success = out.pop("to SUCCESS", 0.0)
    return {
        f"answered at the door (of {len(ids)})": float(door),
        "enqueue": out.get("enqueue", 0.0),
        "pickup + STARTED": out.get("pickup", 0.0),
        **{f"  {stage}": ms for stage, ms in inside.items()},
        "job (worker's clock)": job,
        "SUCCESS write + publish": max(to_success - job, 0.0),
        "client read": out.get("client read", 0.0),
        "end to end": out.get("enqueue", 0.0) + out.get("pickup", 0.0) + to_success + out.get("client read", 0.0),
    }


def print_side_by_side(title: str, ours: Breakdown, old: Breakdown | None) -> None:
    """One table: each stage of rosetta-jobs, then each of the baseline (their stages differ inside the job)."""
    print(f"{title} (median ms)")
    width = max(len(stage) for stage in [*ours, *(old or {})])
    rows = list(dict.fromkeys([*ours, *(old or {})]))
    order = [r for r in rows if not r.startswith("  ")]
    body = [r for r in rows if r.startswith("  ")]
    at = order.index("job (worker's clock)") if "job (worker's clock)" in order else len(order)
    for stage in [*order[:at], *body, *order[at:]]:
        mine = f"{ours[stage]:8.2f}" if stage in ours else f"{'':8}"
        theirs = f"{old[stage]:8.2f}" if old is not None and stage in old else f"{'':8}"
        if stage.startswith("answered at the door"):
            if not ours.get(stage) and not (old or {}).get(stage):
                continue
            mine, theirs = f"{ours.get(stage, 0):8.0f}", f"{(old or {}).get(stage, 0):8.0f}"
        print(f"  {stage:{width}}  rosetta-jobs {mine}   celery (old) {theirs}")
