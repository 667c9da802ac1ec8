"""Queue depths and dead letters read from the real broker keys, repaired with requeue and delete."""

from __future__ import annotations

from collections.abc import Callable

from dramatiq import Message

from rosetta_jobs.client import JobClient
from rosetta_jobs.queues import QueueInspector, is_queue_name

from .conftest import WorkerProcess, wait_until


def _inspector(client: JobClient) -> QueueInspector:
    return QueueInspector(client=client.broker.client, namespace="dramatiq", store=client.store)


def _depth(inspector: QueueInspector, queue: str) -> dict[str, int]:
    (depth,) = inspector.depths([queue])
    return {k: v for k, v in depth.asdict().items() if k != "name"}


def test_depths_count_ready_delayed_and_dead_lettered_messages(
    client: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given two failed jobs (dead-lettered by a worker that then stops)
    inspector = _inspector(client)
    worker = start_worker()
    failed = [client.send("tests.fail", (f"boom {i}",)) for i in range(2)]
    wait_until(lambda: all(client.store.is_final(task) for task in failed))
    worker.stop()

    # And, with no worker, three ready messages and one delayed by a minute
    for i in range(3):
        client.send("worker.test.echo", (str(i),))
    message: Message[object] = Message(
        queue_name="default", actor_name="worker.test.echo", args=("later",), kwargs={}, options={}
    )
    client.broker.enqueue(message, delay=60_000)

    # When the queues are inspected
    names = inspector.queue_names()

    # Then the queue is found from its keys, with every count in its place
    assert "default" in names
    assert _depth(inspector, "default") == {"ready": 3, "delayed": 1, "dead_lettered": 2, "in_progress": 0}


def test_dead_letters_show_arguments_error_and_traceback(
    client: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a job that failed
    start_worker()
    task_id = client.send("tests.fail", ("the disk is full",))
    wait_until(lambda: client.store.is_final(task_id))
    inspector = _inspector(client)
    wait_until(lambda: _depth(inspector, "default")["dead_lettered"] == 1)

    # When the dead letters are listed
    (letter,) = inspector.dead_letters("default")

    # Then the arguments, the error and the traceback are there
    assert letter.task_id == task_id and letter.actor == "tests.fail"
    assert letter.args == ["the disk is full"]
    assert letter.state == "FAILURE" and letter.exc_type == "ValueError" and letter.error == "the disk is full"
    assert letter.traceback and "ValueError: the disk is full" in letter.traceback
    assert letter.dead_lettered_at > letter.enqueued_at > 0  # type: ignore[operator]


def test_a_requeued_dead_letter_runs_again_and_completes(
    client: JobClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given a job dead-lettered because the worker did not know its actor (a missing deploy)
    old = start_worker(modules=())
    task_id = client.send("tests.pid", (0.0,))
    wait_until(lambda: client.store.is_final(task_id))
    assert client.get_task_status(task_id)["status"] == "failed"
    old.stop()
    inspector = _inspector(client)
    (letter,) = inspector.dead_letters("default")

    # When a worker that knows the actor runs, and the dead letter is requeued
    start_worker()
    assert inspector.requeue("default", letter.redis_id) is True

    # Then it runs again under the same task id and completes
    wait_until(lambda: client.get_task_status(task_id)["status"] == "completed")
    assert isinstance(client.get_task_status(task_id)["result"], int)
    assert _depth(inspector, "default")["dead_lettered"] == 0
    # And a second requeue of the same letter does nothing
    assert inspector.requeue("default", letter.redis_id) is False


def test_requeue_all_and_delete(client: JobClient, start_worker: Callable[..., WorkerProcess]) -> None:
    # Given three failed jobs, dead-lettered
    worker = start_worker()
    tasks = [client.send("tests.fail", (str(i),)) for i in range(3)]
    wait_until(lambda: all(client.store.is_final(task) for task in tasks))
    worker.stop()
    inspector = _inspector(client)
    letters = inspector.dead_letters("default")
    assert len(letters) == 3

    # When one is deleted and the others requeued (no worker runs now)
    assert inspector.delete("default", letters[0].redis_id) is True
    assert inspector.delete("default", letters[0].redis_id) is False
    moved = inspector.requeue_all("default")

    # Then the deleted one is gone, the two others wait in the queue with their state cleared
    assert moved == 2
    assert _depth(inspector, "default") == {"ready": 2, "delayed": 0, "dead_lettered": 0, "in_progress": 0}
    assert [client.get_task_status(letter.task_id)["state"] for letter in letters[1:]] == ["PENDING", "PENDING"]


def test_unsafe_queue_names_are_refused(client: JobClient) -> None:
    # Given names that are not Dramatiq queues
    inspector = _inspector(client)
    for name in ("", "a b", "x:y", "default.XQ", "../etc", "*"):
        # Then they are refused before any key is built from them
        assert not is_queue_name(name)
        assert inspector.dead_letters(name) == []
        assert inspector.requeue(name, "id") is False
        assert inspector.delete(name, "id") is False


def test_waiting_lists_ready_then_delayed_and_purge_revokes_them(client: JobClient) -> None:
    # Given two ready jobs and one delayed by a minute, with no worker running
    inspector = _inspector(client)
    ready = [client.send("worker.test.echo", (str(i),), user_id="u1") for i in range(2)]
    later: Message[object] = Message(queue_name="default", actor_name="worker.test.echo", args=("later",), kwargs={},
                                     options={})  # fmt: skip
    client.store.mark_submitted(later.message_id, "default")
    client.broker.enqueue(later, delay=60_000)

    # When the waiting jobs are listed, Then the ready ones come first in order, then the delayed one with its eta
    waiting = inspector.waiting("default")
    assert [(j.task_id, j.state, j.position) for j in waiting] == [
        (ready[0], "ready", 1), (ready[1], "ready", 2), (later.message_id, "delayed", 3)
    ]  # fmt: skip
    assert waiting[0].user == "u1" and waiting[2].eta is not None and waiting[2].eta > waiting[2].enqueued_at + 50  # type: ignore[operator]

    # When the queue is purged, Then all three are gone and REVOKED, and their history says why
    purged = inspector.purge("default")
    assert {j.task_id for j in purged} == {*ready, later.message_id}
    assert _depth(inspector, "default") == {"ready": 0, "delayed": 0, "dead_lettered": 0, "in_progress": 0}
    assert {client.get_task_status(j.task_id)["state"] for j in purged} == {"REVOKED"}
    entry = client.store.client.hget("rosetta-jobs:dramatiq:history-entries", ready[0])
    assert entry is not None and b'"reason":"purged"' in entry.replace(b" ", b"") and b'"user":"u1"' in entry
