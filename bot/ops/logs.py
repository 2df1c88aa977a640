"""Log lines that carry the ids of what is being handled (team, channel, thread, turn), and a JSON
formatter for LOG_FORMAT=json.

The ids live in a context variable: set where a request or a turn is handled (`log_context`), inherited
by every task started from there. Only ids and the log message itself go out: never a payload, a user's
text or a token (the messages the bot logs hold none).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

FIELDS = ("team", "channel", "thread", "turn")

_ids: ContextVar[dict[str, str] | None] = ContextVar("slack_assistant_log_ids", default=None)


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Within the block (and the tasks it starts) log lines carry these ids (None or "" ones are left
    out); only `FIELDS` are accepted. Ids bound inside the block end with it."""
    token = _ids.set(_merged(ids))
    try:
        yield
    finally:
        _ids.reset(token)


def bind_log_ids(**ids: str | None) -> None:
    """From here on in the current task (and the tasks it starts), log lines carry these ids too: for a
    step that can't wrap what follows it (a Bolt middleware). Each request runs in a task of its own."""
    _ids.set(_merged(ids))


def _merged(ids: dict[str, str | None]) -> dict[str, str]:
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log ids: {sorted(unknown)}")
    return {**(_ids.get() or {}), **{k: v[:64] for k, v in ids.items() if v}}


def current_ids() -> dict[str, str]:
    return dict(_ids.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids known, and the
    exception's traceback (`exc_info`) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **current_ids(),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
