"""Azure IoT Operations' temperature module, in Python: ONE component exporting a map, a
filter, a branch and an accumulate operator (world wasinn:guest/operator-set), with the
behaviour and JSON of Azure's Rust module (samples/wasm/operators/temperature):

- map: a `{"temperature": {"value": V, "unit": "F"}}` measurement becomes Celsius
  ((V - 32) * 5 / 9), written back as serde_json writes Azure's struct (every field, in
  its order); Celsius measurements and other kinds pass unchanged. A user property
  `test_property_key` gets the value "new_value". Counts `requests` (labels module,
  unit).
- filter: passes Celsius temperatures strictly between `temperature_lower_bound`
  (default -40) and `temperature_upper_bound` (default 3422, tungsten's melting point).
- branch: true for temperature measurements, false for other kinds.
- accumulate: folds the window's temperatures into the staged message's payload
  `{"temperature":{"count":N,"max":..,"min":..,"average":..,"last":..,"unit":"C"}}`
  (numbers as Rust's Display writes f64), taking the latest message's timestamp and topic.

A payload that is not a measurement is the operator's error "Failed to parse payload as
JSON" (Azure's filter and accumulate panic there instead). Configuration is kept at
module level: componentize-py 0.25 makes a new export object for each call.
"""
import decimal
import json

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import logger, metrics, types

KINDS = ("temperature", "humidity", "object", "sensor_data")
UNITS = ("C", "F")
F64_MIN, F64_MAX = -1.7976931348623157e308, 1.7976931348623157e308


class _Bounds:
    lower = -40.0
    upper = 3422.0


def _log(level, op, text):
    logger.log(level, f"module-temperature/{op}", text)


def _count(op, unit=None):
    labels = [metrics.Label("module", f"module-temperature/{op}")]
    if unit is not None:
        labels.append(metrics.Label("unit", unit))
    try:
        metrics.add_to_counter("requests", metrics.CounterValue_U64(1), labels)
    except Err:
        pass  # a metric the host refuses must not fail the message (Azure ignores it too)


def _bytes(value):
    if isinstance(value, types.BufferOrBytes_Buffer):
        return value.value.read()
    return value.value


def _error(text):
    return Err(types.Error(text))


def _measurement(payload):
    """(kind, fields) as serde reads Azure's externally tagged `Measurement` enum."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise _error("Failed to parse payload as JSON") from None
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in KINDS:
        raise _error("Failed to parse payload as JSON")
    kind, fields = next(iter(data.items()))
    if kind == "temperature":
        if not isinstance(fields, dict) or fields.get("unit") not in UNITS:
            raise _error("Failed to parse payload as JSON")
        for key in ("value", "max", "min", "average", "last"):
            if fields.get(key) is not None and (isinstance(fields[key], bool) or
                                                not isinstance(fields[key], (int, float))):
                raise _error("Failed to parse payload as JSON")
    return kind, fields


def _serde_f64(x):
    """serde_json's f64: shortest round trip, always with a fraction or exponent."""
    text = repr(float(x))
    return text.replace("e+", "e")


def _display_f64(x):
    """Rust's `{}` of an f64: shortest round trip, positional, no `.0` on integers."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    text = format(decimal.Decimal(repr(float(x))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _temperature_json(t):
    fields = []
    if t.get("value") is not None:
        fields.append('"value":' + _serde_f64(t["value"]))
    fields.append('"count":%d' % int(t.get("count", 0)))
    for key in ("max", "min", "average", "last"):
        fields.append(f'"{key}":' + _serde_f64(t.get(key, 0.0)))
    fields.append('"unit":"%s"' % t["unit"])
    fields.append('"overtemp":' + ("true" if t.get("overtemp", False) else "false"))
    return '{"temperature":{' + ",".join(fields) + "}}"


def _message(data_model):
    if not isinstance(data_model, types.DataModel_Message):
        raise _error("Unexpected input type")
    return data_model.value


def _configure(op, configuration):
    _log(logger.Level.INFO, op, "Initialization function invoked")
    for key, value in configuration.properties:
        _log(logger.Level.INFO, op, f"Initialization received the property (key='{key}', value='{value}').")
    return True


class Map(exports.Map):
    def init(self, configuration):
        return _configure("map", configuration)

    def process(self, message):
        _count("map")
        result = _message(message)
        kind, fields = _measurement(_bytes(result.payload))
        if kind == "temperature":
            if fields["unit"] == "F":
                _count("map", "Fahrenheit")
                converted = dict(fields, unit="C")
                converted["value"] = (float(fields["value"]) - 32.0) * 5.0 / 9.0
                result.payload = types.BufferOrBytes_Bytes(_temperature_json(converted).encode())
            else:
                _count("map", "Celsius")
        properties = []
        for key, value in result.properties.user_properties:
            name = key.value if isinstance(key, types.BufferOrString_String) else key.value.read().decode()
            if name == "test_property_key":
                value = types.BufferOrString_String("new_value")
            properties.append((key, value))
        result.properties.user_properties = properties
        return types.DataModel_Message(result)


class Filter(exports.Filter):
    def init(self, configuration):
        _configure("filter", configuration)
        for key, value in configuration.properties:
            if key in ("temperature_lower_bound", "temperature_upper_bound"):
                try:
                    bound = float(value)
                except ValueError:
                    _log(logger.Level.ERROR, "filter", f"Failed to parse {key} value: {value}")
                    continue
                if key == "temperature_lower_bound":
                    _Bounds.lower = bound
                else:
                    _Bounds.upper = bound
        return True

    def process(self, message):
        _count("filter")
        kind, fields = _measurement(_bytes(_message(message).payload))
        value = fields.get("value") if kind == "temperature" else None
        return (kind == "temperature" and fields["unit"] == "C" and value is not None
                and _Bounds.lower < value < _Bounds.upper)


class Branch(exports.Branch):
    def init(self, configuration):
        return _configure("branch", configuration)

    def process(self, timestamp, message):
        _count("branch")
        kind, _ = _measurement(_bytes(_message(message).payload))
        return kind == "temperature"


class Accumulate(exports.Accumulate):
    def init(self, configuration):
        return _configure("accumulate", configuration)

    def process(self, staged, message):
        _count("accumulate")
        result = _message(staged)
        staged_payload = _bytes(result.payload)
        count, total, high, low, last = 0, 0.0, F64_MIN, F64_MAX, 0.0
        if staged_payload:
            kind, t = _measurement(staged_payload)
            if kind == "temperature":
                count = int(t.get("count", 0))
                total = float(t.get("average", 0.0)) * count
                high, low, last = float(t.get("max", 0.0)), float(t.get("min", 0.0)), float(t.get("last", 0.0))
        last_secs = last_nanos = 0
        unit = "C"
        topic = types.BufferOrBytes_Bytes(b"")
        for item in message:
            m = _message(item)
            kind, t = _measurement(_bytes(m.payload))
            if kind != "temperature" or t.get("value") is None:
                raise _error("Unexpected measurement type.")
            value = float(t["value"])
            total += value
            count += 1
            high = max(high, value)
            low = min(low, value)
            ts = m.timestamp.timestamp
            if ts.secs >= last_secs or (ts.secs == last_secs and ts.nanos >= last_nanos):
                last, last_secs, last_nanos = value, ts.secs, ts.nanos
            unit = t["unit"]
            topic = m.topic
        average = total / count if count else float("nan")
        payload = ('{"temperature":{"count":%d,"max":%s,"min":%s,"average":%s,"last":%s,"unit":"%s"}}'
                   % (count, _display_f64(high), _display_f64(low), _display_f64(average), _display_f64(last), unit))
        _log(logger.Level.INFO, "accumulate", payload)
        result.payload = types.BufferOrBytes_Bytes(payload.encode())
        result.timestamp.timestamp.secs = last_secs
        result.timestamp.timestamp.nanos = last_nanos
        result.topic = topic
        return types.DataModel_Message(result)
