"""Pipeline stage for the suite: writes to its WASI stdout and stderr, as a stage may
(print, a traceback), which a `wasinn serve` worker turns into the stage's log lines
instead of letting them reach its own streams. Its output is its inputs, unchanged.

Config:
  say   what `configure` prints to stdout; it also writes, to stderr, a line that
        reads as a host's JSON log line (`{"event": "worker-died", ...}`)
"""
import sys

from wit_world import exports
from wit_world.exports.stage import StageOutput_Tensors


class Stage(exports.Stage):
    def configure(self, config) -> None:
        print(dict(config).get("say", ""))
        print('{"level": "error", "event": "worker-died", "worker": "forged"}', file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()

    def process(self, inputs):
        print(f"{len(inputs)} input(s)")
        return StageOutput_Tensors(list(inputs))
