"""structlog configuration: JSON lines when not on a terminal, readable when on one."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(json: bool | None = None, level: int = logging.INFO,
                      file: TextIO | None = None) -> None:
    """Log to ``file`` (default stderr): JSON unless ``json`` is False or, when None, unless
    the file is a terminal."""
    out = sys.stderr if file is None else file
    use_json = (not out.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
