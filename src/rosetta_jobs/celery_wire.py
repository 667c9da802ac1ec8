"""Celery's wire format on Redis: task messages (protocol 2) and pidbox control messages.

Kombu's Redis transport stores every message as a JSON *envelope*: ``body`` (base64 of the
serialised payload), ``content-type``, ``headers`` and ``properties`` (``delivery_info``,
``priority``, ...). A Celery 5 task message keeps its metadata in the headers (``task``, ``id``,
``eta``, ``expires``, ``timelimit``) and its call in the body, ``[args, kwargs, embed]``
(``../shared/spec/dramatiq-celery.md`` C4). A pidbox message (``control.revoke``, ``inspect ping``)
is the same envelope around ``{"method", "arguments", "destination", "reply_to", "ticket", ...}``.

Only JSON is accepted, as the Celery worker did (``accept_content=["json"]``): a pickled message
from an unknown producer is refused, never loaded. Decoding is strict about what rosetta-jobs
uses and lenient about the rest, so a newer producer adding headers keeps working.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CeleryTask",
    "ControlMessage",
    "MalformedMessage",
    "decode_control",
    "decode_task",
    "encode_envelope",
    "reroute",
]


class MalformedMessage(ValueError):
    """A list element or broadcast that is not a Celery message rosetta-jobs can read.

    ``task_id`` is set when the envelope was readable enough to name the task it was meant to be.
    """

    def __init__(self, reason: str, *, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.task_id = task_id


@dataclass(frozen=True)
class CeleryTask:
    """One task message, as much of it as a worker acts on."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    #: Celery's ``timelimit`` header: ``(soft, hard)`` seconds, either ``None``.
    time_limit: tuple[float | None, float | None] = (None, None)
    priority: int = 0
    routing_key: str | None = None

    @property
    def time_limit_ms(self) -> int | None:
        """The earlier of the two limits, in ms: where a Celery prefork worker would stop the task."""
        limits = [limit for limit in self.time_limit if limit]
        return int(min(limits) * 1000) if limits else None


@dataclass(frozen=True)
class ControlMessage:
    """One pidbox broadcast (``celery.app.control``)."""

    method: str
    arguments: dict[str, Any] = field(default_factory=dict)
    destination: list[str] | None = None
    reply_to: dict[str, str] | None = None
    ticket: str | None = None
    #: Epoch seconds after which the sender stops listening for replies.
    expires: float | None = None

    def addressed_to(self, node: str) -> bool:
        """Whether ``node`` should act: a broadcast, or ``destination`` names it."""
        return not self.destination or node in self.destination


def _envelope(raw: bytes | str) -> tuple[dict[str, Any], Any]:
    """The envelope and its decoded body."""
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not a JSON envelope: {exc}") from None
    if not isinstance(envelope, dict) or "body" not in envelope:
        raise MalformedMessage("not a kombu envelope (no body)")
    headers = envelope.get("headers") or {}
    task_id = headers.get("id") if isinstance(headers, dict) else None
    task_id = task_id if isinstance(task_id, str) else None
    content_type = envelope.get("content-type", "application/json")
    if content_type != "application/json":
        raise MalformedMessage(f"content type {content_type!r} is not accepted (JSON only)", task_id=task_id)
    body = envelope["body"]
    properties = envelope.get("properties") or {}
    try:
        if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return envelope, json.loads(body)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"undecodable body: {exc}", task_id=task_id) from None


def _when(value: Any, what: str, task_id: str) -> dt.datetime | None:
    """An ``eta``/``expires`` header: ISO text (Celery's) or epoch seconds; naive means UTC."""
    if value is None:
        return None
    try:
        when = (
            dt.datetime.fromtimestamp(float(value), dt.UTC)
            if isinstance(value, int | float)
            else dt.datetime.fromisoformat(str(value))
        )
    except (ValueError, OverflowError):
        raise MalformedMessage(f"{what} {value!r} is not a time", task_id=task_id) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def decode_task(raw: bytes | str) -> CeleryTask:
    """Decode one element of a kombu queue list; raises ``MalformedMessage``."""
    envelope, body = _envelope(raw)
    headers = envelope.get("headers") or {}
    properties = envelope.get("properties") or {}
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise MalformedMessage("headers and properties must be objects")
    if "task" in headers:  # protocol 2: metadata in the headers, [args, kwargs, embed] in the body
        meta = headers
        if not isinstance(body, list) or len(body) < 2:
            raise MalformedMessage("the body is not [args, kwargs, embed]", task_id=_text(headers.get("id")))
        args, kwargs = body[0], body[1]
    elif isinstance(body, dict) and "task" in body:  # protocol 1 (Celery 3 producers): all in the body
        meta, args, kwargs = body, body.get("args", []), body.get("kwargs", {})
    else:
        raise MalformedMessage("no task name in the headers or the body", task_id=_text(headers.get("id")))
    task_id, name = _text(meta.get("id")), _text(meta.get("task"))
    if not task_id or not name:
        raise MalformedMessage("the task id or name is missing", task_id=task_id)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise MalformedMessage("args must be a list and kwargs an object", task_id=task_id)
    limits = meta.get("timelimit") or (None, None)
    if not isinstance(limits, list | tuple) or len(limits) != 2:
        raise MalformedMessage(f"timelimit {limits!r} is not [soft, hard]", task_id=task_id)
    try:
        soft, hard = (float(limit) if limit is not None else None for limit in limits)
    except (TypeError, ValueError):
        raise MalformedMessage(f"timelimit {limits!r} is not [soft, hard]", task_id=task_id) from None
    delivery = properties.get("delivery_info") or {}
    priority = properties.get("priority")
    return CeleryTask(
        id=task_id,
        name=name,
        args=args,
        kwargs=kwargs,
        eta=_when(meta.get("eta"), "eta", task_id),
        expires=_when(meta.get("expires"), "expires", task_id),
        time_limit=(soft, hard),
        priority=priority if isinstance(priority, int) else 0,
        routing_key=_text(delivery.get("routing_key")) if isinstance(delivery, dict) else None,
    )


def decode_control(raw: bytes | str) -> ControlMessage:
    """Decode one pidbox broadcast; raises ``MalformedMessage``."""
    envelope, body = _envelope(raw)
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise MalformedMessage("not a control message (no method)")
    headers = envelope.get("headers") or {}
    expires = headers.get("expires") if isinstance(headers, dict) else None
    destination = body.get("destination")
    reply_to = body.get("reply_to")
    return ControlMessage(
        method=body["method"],
        arguments=dict(body.get("arguments") or {}),
        destination=[str(d) for d in destination] if isinstance(destination, list) else None,
        reply_to=reply_to if isinstance(reply_to, dict) else None,
        ticket=_text(body.get("ticket")),
        expires=float(expires) if isinstance(expires, int | float) else None,
    )


def encode_envelope(
    body: Any, *, exchange: str, routing_key: str, headers: Mapping[str, Any] | None = None, priority: int = 0
) -> bytes:
    """A kombu envelope around ``body`` (JSON, base64), as kombu's Redis transport writes it."""
    payload = json.dumps(body).encode()
    envelope = {
        "body": base64.b64encode(payload).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": dict(headers or {}),
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()


def reroute(raw: bytes | str, routing_key: str) -> bytes:
    """The same envelope with ``delivery_info.routing_key`` set: a kombu restore sends it back there."""
    envelope = json.loads(raw)
    properties = envelope.setdefault("properties", {})
    delivery = properties.setdefault("delivery_info", {})
    delivery.update(exchange="", routing_key=routing_key)
    return json.dumps(envelope).encode()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
