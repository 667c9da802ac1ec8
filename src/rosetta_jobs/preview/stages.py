"""Where a preview's time goes: milliseconds per stage, for its log line (and ``make bench``'s breakdown).

Used on both sides of the executor's wire: the worker's pipeline times its stages, the executor its own,
and the pipeline splits the executor's share into them.
"""

from __future__ import annotations

import time

__all__ = ["Stages"]


class Stages:
    """Milliseconds per stage into ``took``, each from the end of the one before."""

    def __init__(self, took: dict[str, float] | None = None) -> None:
        self.took = took if took is not None else {}
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.took[stage] = round((now - self._last) * 1000, 3)
        self._last = now

    def split(self, stage: str, parts: dict[str, float]) -> None:
        """``parts`` of ``stage`` measured elsewhere (the executor's); what they leave is ``<stage>_wire``."""
        whole = self.took.pop(stage, 0.0)
        self.took.update(parts)
        self.took[f"{stage}_wire"] = round(max(whole - sum(parts.values()), 0.0), 3)
