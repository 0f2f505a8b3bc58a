"""Structured logs: one JSON object per line on stderr.

    log = EventLog(level="info", worker="cams-host-0")
    log.info("message-done", id="abc", ms=31.2)
    -> {"ts": "2026-11-25T14:55:02.123Z", "level": "info", "event": "message-done", "worker": "cams-host-0", "id": "abc", "ms": 31.2}

Each line is written with one `write` call, so the lines of several worker processes
sharing the supervisor's stderr do not interleave. A worker's other writes to stderr
(onnxruntime's and OpenVINO's C++ loggers, Python's warnings and tracebacks) become
lines of its log too: see capture_stderr.
"""
from __future__ import annotations

import atexit
import datetime
import json
import os
import re
import sys
import threading
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


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # onnxruntime colours its warnings


def capture_stderr(log: EventLog) -> EventLog:
    """Points this process's file descriptor 2 at a pipe whose lines become "stderr"
    warnings of `log`, so that its stderr is JSON lines only whoever writes there (C++
    libraries write to the descriptor, not to sys.stderr). Returns `log` writing to the
    original stderr. At exit what is still in the pipe (a traceback) is logged first."""
    sys.stderr.flush()
    original = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="backslashreplace", buffering=1)
    log = EventLog(level=log.level, stream=original, **log._context)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                line = _ANSI.sub("", line).rstrip()
                if line:
                    log.warning("stderr", line=line)

    thread = threading.Thread(target=pump, name="stderr-to-log", daemon=True)
    thread.start()

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(original.fileno(), 2)  # the pipe's last writer (bar forked children) gone: pump reads to its end
        thread.join(timeout=2)

    atexit.register(drain)
    return log
