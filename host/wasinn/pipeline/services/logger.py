"""The `logger` interface: an operator's lines into wasinn's JSON log.

Each line is an event "operator-log" with the operator's name, its context and message,
at the log level that matches the WIT level (trace → debug, critical → error). What an
operator writes to its WASI stdout and stderr comes the same way, a line at a time
(context `stdout` or `stderr`), not to the process's own streams, where a guest could
write lines that read as the host's. An operator may write at most `max-log-lines`
lines per second; the rest are counted, and the next line written says how many were
dropped.
"""
from __future__ import annotations

import time

from ..jsonlog import LEVELS as LOG_LEVELS, EventLog

LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "error": "error",
          "critical": "error"}
# A guest's context and message are cut to this many characters: a log line is for people.
MAX_TEXT = 4096


class OperatorLog:
    """The log lines of one operator: its `logger` calls, and what it writes to its WASI
    stdout and stderr (`output`)."""

    def __init__(self, log: EventLog, operator: str, lines_per_second: int, clock=time.monotonic):
        self._log = log.bind(operator=operator)
        self._rate = lines_per_second
        self._clock = clock
        self._window = -1
        self._written = 0
        self.dropped = 0
        self._partial: dict[str, bytes] = {}  # per stream, the start of a line not ended yet

    def write(self, level: str, context: str, message: str) -> None:
        if LOG_LEVELS[LEVELS[level]] < LOG_LEVELS[self._log.level]:
            return  # below the log's level: neither written nor counted
        if self._room():
            self._emit(level, context, message)

    def output(self, stream: str, data: bytes) -> None:
        """One write of the operator to its WASI `stream` ("stdout" or "stderr"): each
        line a log line of that context (level info; stderr, where componentize-py
        writes a guest's tracebacks: warn), cut to MAX_TEXT, under the same rate as its
        `logger` lines. Lines past the rate are counted without being made: a guest's
        write holds any number of them."""
        level = "info" if stream == "stdout" else "warn"
        if LOG_LEVELS[LEVELS[level]] < LOG_LEVELS[self._log.level]:
            return
        start, partial = 0, self._partial.pop(stream, b"")
        while (end := data.find(b"\n", start)) >= 0:
            if not self._room():
                self.dropped += data.count(b"\n", end + 1)
                return
            line = partial + data[start:min(end, start + MAX_TEXT)]
            self._emit(level, stream, line[:MAX_TEXT].decode("utf-8", "replace"))
            start, partial = end + 1, b""
        if start < len(data) or partial:  # a line to be ended by a later write (its start kept)
            self._partial[stream] = (partial + data[start:start + MAX_TEXT])[:MAX_TEXT]

    def _room(self) -> bool:
        """Whether one more line fits this second's `max-log-lines` (else it is counted)."""
        window = int(self._clock())
        if window != self._window:
            self._window, self._written = window, 0
        if self._written >= self._rate:
            self.dropped += 1
            return False
        self._written += 1
        return True

    def _emit(self, level: str, context: str, message: str) -> None:
        fields = {"context": context[:MAX_TEXT], "message": message[:MAX_TEXT], "guest_level": level}
        if self.dropped:
            fields["dropped_lines"], self.dropped = self.dropped, 0
        self._log.emit(LEVELS[level], "operator-log", **fields)
