"""Structured logs: one JSON object per line on stderr.

    log = EventLog(level="info", worker="cams-host-0")
    log.info("message-done", id="abc", ms=31.2)
    -> {"ts": "2026-11-25T14:55:02.123Z", "level": "info", "event": "message-done", "worker": "cams-host-0", "id": "abc", "ms": 31.2}

Each line is written with one `write` call, so the lines of several worker processes
sharing the supervisor's stderr do not interleave.
"""
from __future__ import annotations

import datetime
import json
import sys
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class EventLog:
    def __init__(self, *, level: str = "info", stream: TextIO | None = None, **context: Any):
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.level = level
        self._threshold = LEVELS[level]
        self._stream = stream
        self._context = context

    def bind(self, **context: Any) -> "EventLog":
        """The same log with more fields on every line."""
        return EventLog(level=self.level, stream=self._stream, **{**self._context, **context})

    def emit(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS[level] < self._threshold:
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        record = {"ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": level,
                  "event": event, **self._context, **fields}
        stream = self._stream or sys.stderr
        stream.write(json.dumps(record, default=str) + "\n")
        stream.flush()

    def debug(self, event: str, **fields: Any) -> None:
        self.emit("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.emit("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.emit("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.emit("error", event, **fields)
