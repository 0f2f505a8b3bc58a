"""Structured logs: one JSON object per line on stderr.

    log = EventLog(level="info", worker="cams-host-0")
    log.info("message-done", id="abc", ms=31.2)
    -> {"ts": "2026-11-25T14:55:02.123Z", "level": "info", "event": "message-done", "worker": "cams-host-0", "id": "abc", "ms": 31.2}

Each line is written with one `write` call, so the lines of several worker processes
sharing the supervisor's stderr do not interleave. A worker's other writes to stdout and
stderr (onnxruntime's and OpenVINO's C++ loggers, Python's warnings and tracebacks, and
what its guests write to their WASI streams) become lines of its log too: see
capture_output.
"""
from __future__ import annotations

import atexit
import datetime
import json
import os
import re
import sys
import threading
import time
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


# What a captured stream may put in the log: lines per second (the rest are counted, and
# the next line says how many were dropped), and characters per line (a longer one goes
# on as further lines). A guest writes to them too.
LINES_PER_SECOND = 100
MAX_LINE = 4096


def capture_output(log: EventLog) -> EventLog:
    """Points this process's file descriptors 1 and 2 at pipes whose lines become events
    of `log`, "stdout" (info) and "stderr" (warning), so that its stderr is JSON lines
    only, whoever writes there (C++ libraries write to the descriptor, not to
    sys.stderr; guests write to their WASI streams, which are these), and nothing a guest
    writes reads as a line of the host's own or comes faster than LINES_PER_SECOND.
    Returns `log` writing to the original stderr. At exit what is still in the pipes (a
    traceback) is logged first."""
    sys.stdout.flush()
    sys.stderr.flush()
    original = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="backslashreplace", buffering=1)
    log = EventLog(level=log.level, stream=original, **log._context)
    threads, restore = [], []
    for fd, event, emit in ((1, "stdout", log.info), (2, "stderr", log.warning)):
        read, write = os.pipe()
        restore.append((fd, os.dup(fd)))
        os.dup2(write, fd)
        os.close(write)
        threads.append(threading.Thread(target=_pump, args=(read, event, emit), name=f"{event}-to-log", daemon=True))
        threads[-1].start()

    def drain() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in restore:  # the pipes' last writers (bar forked children) gone: the pumps read to the end
            os.dup2(saved, fd)
        for thread in threads:
            thread.join(timeout=2)

    atexit.register(drain)
    return log


class LineBudget:
    """At most `per_second` lines a second; `take()` says whether one more may be
    written, or counts it as dropped (`dropped_fields` hands the count to the next line
    written and starts it again)."""

    def __init__(self, per_second: int, clock=time.monotonic):
        self.per_second, self._clock = per_second, clock
        self._window, self._written, self.dropped = -1, 0, 0

    def take(self) -> bool:
        window = int(self._clock())
        if window != self._window:
            self._window, self._written = window, 0
        if self._written >= self.per_second:
            self.dropped += 1
            return False
        self._written += 1
        return True

    def dropped_fields(self) -> dict:
        if not self.dropped:
            return {}
        fields, self.dropped = {"dropped_lines": self.dropped}, 0
        return fields


def _pump(read: int, event: str, emit) -> None:
    budget = LineBudget(LINES_PER_SECOND)
    with os.fdopen(read, "rb") as lines:
        while chunk := lines.readline(MAX_LINE):
            line = _ANSI.sub("", chunk.decode("utf-8", "replace")).rstrip()
            if line and budget.take():
                emit(event, line=line, **budget.dropped_fields())
