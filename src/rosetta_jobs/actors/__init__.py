"""What ``dramatiq rosetta_jobs.actors`` imports: the broker first, then one module per job family.

A new job is one more module here and one more import below.
"""

from __future__ import annotations

import dramatiq

from ..broker import build_broker
from ..logs import configure_logging

configure_logging()
broker = build_broker()
dramatiq.set_broker(broker)

from . import preview, test  # noqa: E402  (actors must be declared after the broker)

__all__ = ["broker", "preview", "test"]
