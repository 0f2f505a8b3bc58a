"""Azure IoT Operations' otel-enrich module (samples/wasm/statestore-scenario/operators/
otel-enrich), in Python: a map operator that, for each key of its `enrichKeys`
parameter (comma-separated), reads the key from the state store and adds its value to
the message as the user property `otel/KEY`. Keys the store does not hold, or cannot
answer for, are skipped (logged), as in Azure's module; the payload passes unchanged.
Configuration is kept at module level (componentize-py 0.25 makes a new export object
for each call).
"""
from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import logger, metrics, state_store, types

CONTEXT = "module-otel-enrich/map"


class _Config:
    keys = None


class Map(exports.Map):
    def init(self, configuration):
        logger.log(logger.Level.INFO, CONTEXT, "Initialization function invoked")
        for key, value in configuration.properties:
            if key == "enrichKeys":
                _Config.keys = value
            else:
                logger.log(logger.Level.WARN, CONTEXT, f"Unknown property key '{key}'")
        return True

    def process(self, message):
        try:
            metrics.add_to_counter("requests", metrics.CounterValue_U64(1), [metrics.Label("module", CONTEXT)])
        except Err:
            pass  # a metric the host refuses must not fail the message
        if not isinstance(message, types.DataModel_Message):
            raise Err(types.Error("Unexpected input type"))
        result = message.value
        if _Config.keys is None:
            logger.log(logger.Level.ERROR, CONTEXT, "enrichKeys is not set, cannot enrich message")
            return message
        props = list(result.properties.user_properties)
        for key in _Config.keys.split(","):
            key = key.strip()
            if not key:
                continue
            try:
                got = state_store.get(key.encode(), None)
            except Err as e:
                logger.log(logger.Level.ERROR, CONTEXT, f"Failed to get value for key '{key}': {e.value}")
                continue
            if got.response is None:
                logger.log(logger.Level.INFO, CONTEXT, f"'{key}' not found in state store, skipping")
                continue
            props.append((types.BufferOrString_String(f"otel/{key}"),
                          types.BufferOrString_String(got.response.decode("utf-8", "replace"))))
        result.properties.user_properties = props
        return types.DataModel_Message(result)
