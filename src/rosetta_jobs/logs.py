"""Logging through loguru, with the standard library's records (Dramatiq's) routed to it."""

from __future__ import annotations

import logging
import sys

from loguru import logger

from .config import get_settings

__all__ = ["configure_logging"]


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, "{}: {}", record.name, record.getMessage())


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """One sink on stderr: JSON lines when ``LOG_FORMAT=json``, readable text otherwise."""
    settings = get_settings()
    level = level or settings.log_level
    serialize = (fmt or settings.log_format) == "json"
    logger.remove()
    logger.add(sys.stderr, level=level, serialize=serialize, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=level, force=True)
