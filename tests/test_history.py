"""The task history: written by the same Lua call as the final state, bounded by count and age, filtered on read."""

from __future__ import annotations

import time

import redis

from rosetta_jobs.history import HistoryFilter, TaskHistory
from rosetta_jobs.layout import Keys
from rosetta_jobs.redact import sql_digest
from rosetta_jobs.states import FAILURE, PROGRESS, REVOKED, STARTED, SUCCESS, build_meta, encode_exception
from rosetta_jobs.store import TaskStore

from .conftest import RESULTS_DB, redis_url

SQL = "SELECT * FROM orders WHERE note = 'private'"


def store(**retention: int) -> TaskStore:
    return TaskStore.from_url(redis_url(RESULTS_DB), **retention)  # type: ignore[arg-type]


def history(results: redis.Redis) -> TaskHistory:
    return TaskHistory(client=results, namespace="dramatiq")


def test_a_final_state_is_recorded_once_with_its_context(results_redis: redis.Redis) -> None:
    # Given a preview that starts and progresses: no entry yet
    tasks = store()
    args = [SQL, 1, 2, "orders", None, False]
    tasks.write(build_meta("t1", STARTED, {"pid": 1}, name="worker.preview.execute", args=args, queue="preview"))
    tasks.write(build_meta("t1", PROGRESS, {"status": "executing"}, name="worker.preview.execute", args=args))
    assert history(results_redis).get("t1") is None

    # When it ends SUCCESS, with who sent it and when it was enqueued and started
    context = {"user": "u1", "enqueued_at": time.time() - 2, "started_at": time.time() - 1, "worker": "host:42"}
    meta = build_meta("t1", SUCCESS, {"data": []}, name="worker.preview.execute", args=args, queue="preview")
    assert tasks.write(meta, context=context)
    # And a late REVOKED and a redelivered SUCCESS are refused (the final state stays)
    assert not tasks.write(build_meta("t1", REVOKED, None))
    assert not tasks.write(meta, context=context)

    # Then the history holds one entry: the SQL as its digest, the timings, the user, the process
    entry = history(results_redis).get("t1")
    assert entry is not None and history(results_redis).count() == 1
    assert (entry["actor"], entry["queue"], entry["state"], entry["user"], entry["worker"]) == (
        "worker.preview.execute", "preview", "SUCCESS", "u1", "host:42"
    )  # fmt: skip
    assert entry["sql_digest"] == sql_digest(SQL) and "private" not in str(entry)
    assert entry["enqueued_at"] < entry["started_at"] < entry["finished_at"] <= time.time()
    assert entry["error_type"] is None and entry["reason"] is None


def test_failures_keep_their_error_type_and_revoked_its_reason(results_redis: redis.Redis) -> None:
    # Given a failure and a cancel of a task that had started
    tasks = store()
    tasks.write(build_meta("f", FAILURE, encode_exception(ValueError("the disk is full")), name="tests.fail"))
    tasks.write(build_meta("c", STARTED, {"pid": 1}, name="worker.test.echo", args=["x"], queue="default"))
    assert tasks.cancel("c")["cancelled"]
    # Then the failure has its error type, and the cancel its reason, actor and queue (from STARTED)
    failed, cancelled = history(results_redis).get("f"), history(results_redis).get("c")
    assert failed is not None and cancelled is not None
    assert failed["error_type"] == "ValueError" and failed["state"] == FAILURE
    assert (cancelled["state"], cancelled["reason"], cancelled["actor"], cancelled["queue"]) == (
        REVOKED, "revoked", "worker.test.echo", "default"
    )  # fmt: skip


def test_history_is_trimmed_to_its_count_and_age(results_redis: redis.Redis) -> None:
    # Given a history of at most 3 entries
    tasks = store(history_max=3)
    for i in range(5):
        tasks.write(build_meta(f"n{i}", SUCCESS, i, name="worker.test.echo"))
    # Then the 3 newest are kept, newest first, and the others are gone from both keys
    assert [e["task_id"] for e in history(results_redis).recent()] == ["n4", "n3", "n2"]
    assert results_redis.hlen(Keys().history_entries()) == 3

    # Given entries kept one second at most
    short = store(history_max_age=1)
    short.write(build_meta("old", SUCCESS, 1, name="worker.test.echo"))
    time.sleep(1.1)
    # When another task ends, Then the old entry is trimmed, and both keys expire with the retention
    short.write(build_meta("new", SUCCESS, 2, name="worker.test.echo"))
    assert history(results_redis).get("old") is None and history(results_redis).get("new") is not None
    assert 0 < results_redis.pttl(Keys().history()) <= 1000
    assert 0 < results_redis.pttl(Keys().history_entries()) <= 1000


def test_a_history_of_zero_records_nothing(results_redis: redis.Redis) -> None:
    # Given TASK_HISTORY_MAX=0, When a task ends, Then its state is stored and nothing else
    assert store(history_max=0).write(build_meta("z", SUCCESS, 1, name="worker.test.echo"))
    assert store().get("z") is not None
    assert not results_redis.exists(Keys().history(), Keys().history_entries())


def test_filters_and_since(results_redis: redis.Redis) -> None:
    # Given tasks of two actors, states and users, the first finished two seconds before the others
    tasks = store()
    tasks.write(build_meta("a", SUCCESS, 1, name="worker.test.echo", queue="default"), context={"user": "u1"})
    time.sleep(0.3)
    middle = time.time()
    tasks.write(build_meta("b", FAILURE, encode_exception(ValueError("x")), name="tests.fail", queue="default"))
    tasks.write(build_meta("c", SUCCESS, 1, name="worker.test.echo", queue="default"), context={"user": "u2"})
    recent = history(results_redis).recent

    # Then each filter keeps what it names, newest first, within the limit
    assert [e["task_id"] for e in recent(HistoryFilter(actor="worker.test.echo"))] == ["c", "a"]
    assert [e["task_id"] for e in recent(HistoryFilter(state="failure"))] == ["b"]
    assert [e["task_id"] for e in recent(HistoryFilter(user="u1"))] == ["a"]
    assert [e["task_id"] for e in recent(HistoryFilter(since=middle))] == ["c", "b"]
    assert [e["task_id"] for e in recent(limit=1)] == ["c"]
