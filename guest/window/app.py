"""Azure IoT Operations' window module (samples/wasm/operators/window), in Python: a delay
operator that moves a message's timestamp to the end of its window, the next multiple of
`window_ms` milliseconds (default 10000, Azure's fixed 10 s), so that the accumulate
operators after it fold the messages of each window together. The counter becomes 0, as
in Azure's module. Configuration is kept at module level (componentize-py 0.25 makes a
new export object for each call).
"""
from wit_world import exports
from wit_world.imports import logger, metrics, types

CONTEXT = "module-window/delay"


class _Config:
    window_ms = 10_000


class Delay(exports.Delay):
    def init(self, configuration):
        logger.log(logger.Level.INFO, CONTEXT, "Initialization function invoked")
        for key, value in configuration.properties:
            if key == "window_ms" and value.isdigit() and int(value) > 0:
                _Config.window_ms = int(value)
        return True

    def process(self, data, timestamp):
        try:
            metrics.add_to_counter("requests", metrics.CounterValue_U64(1),
                                   [metrics.Label("module", CONTEXT)])
        except Exception:
            pass  # a metric the host refuses must not fail the message
        if isinstance(data, (types.DataModel_Message, types.DataModel_Snapshot)):
            time = data.value.timestamp.timestamp
        else:
            time = timestamp.timestamp
        window = _Config.window_ms
        ms = time.secs * 1000 + time.nanos // 1_000_000
        if (time.secs * 1_000_000_000 + time.nanos) % (window * 1_000_000):
            ms = (ms // window + 1) * window
            time = type(time)(ms // 1000, (ms % 1000) * 1_000_000)
        timestamp.timestamp = time
        timestamp.counter = 0
        return timestamp
