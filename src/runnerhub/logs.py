"""Structured logs (structlog) with secrets removed before anything is rendered (I9)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(
    r"token|secret|password|passwd|jit|authorization|private_key|dsn", re.IGNORECASE
)
REDACTED = "[redacted]"
# Secrets inside text: a libpq password, a bearer token, GitHub's token shapes, a PEM key.
_SECRET_TEXT = [
    (re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"(://[^:/\s@]+:)[^@\s]+@"), rf"\1{REDACTED}@"),  # user:password@ in a URL
    (re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"\b(gh[pousr]_|github_pat_)[A-Za-z0-9_]{8,}"), REDACTED),
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        REDACTED,
    ),
]


def scrub(text: str) -> str:
    """`text` with every secret it visibly holds replaced."""
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: Any, depth: int = 0) -> Any:
    """Nested fields whose name says secret blanked, secrets in text scrubbed."""
    if depth > 8:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, MutableMapping):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _clean(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Blank every field whose name says it holds a secret, however deep and however it got
    there, and scrub secrets out of every text (the message too)."""
    for key in list(event):
        if key != "event" and _SECRET_KEY.search(key):
            event[key] = REDACTED
        else:
            event[key] = _clean(event[key])
    return event


class ScrubFilter(logging.Filter):
    """The same for the standard library's loggers (psycopg_pool, uvicorn, asyncio)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def setup(level: str = "info", fmt: str = "json") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())


class Throttle:
    """At most `limit` log lines per `window_s` for something an outsider can trigger at
    will (refused deliveries): beyond that, lines are counted and the count is given with
    the next line let through. Pure: the caller passes the time."""

    def __init__(self, limit: int = 10, window_s: float = 10.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._window_start = float("-inf")
        self._let_through = 0
        self._held_back = 0

    def admit(self, now: float) -> int | None:
        """None: do not log this one. Else log it, with this many held back before it."""
        if now - self._window_start >= self.window_s:
            self._window_start, self._let_through = now, 0
        if self._let_through >= self.limit:
            self._held_back += 1
            return None
        self._let_through += 1
        held, self._held_back = self._held_back, 0
        return held
