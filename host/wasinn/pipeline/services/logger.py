"""The `logger` interface: an operator's lines into wasinn's JSON log.

Each line is an event "operator-log" with the operator's name, its context and message,
at the log level that matches the WIT level (trace → debug, critical → error). An
operator may write at most `max-log-lines` lines per second; the rest are counted, and
the next line written says how many were dropped.
"""
from __future__ import annotations

import time

from ..jsonlog import LEVELS as LOG_LEVELS, EventLog, LineBudget

LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "error": "error",
          "critical": "error"}
# A guest's context and message are cut to this many characters: a log line is for people.
MAX_TEXT = 4096


class OperatorLog:
    """The log lines of one operator."""

    def __init__(self, log: EventLog, operator: str, lines_per_second: int, clock=time.monotonic):
        self._log = log.bind(operator=operator)
        self._budget = LineBudget(lines_per_second, clock)

    def write(self, level: str, context: str, message: str) -> None:
        if LOG_LEVELS[LEVELS[level]] < LOG_LEVELS[self._log.level]:
            return  # below the log's level: neither written nor counted
        if self._budget.take():
            self._log.emit(LEVELS[level], "operator-log", context=context[:MAX_TEXT], message=message[:MAX_TEXT],
                           guest_level=level, **self._budget.dropped_fields())
