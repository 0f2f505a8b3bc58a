"""Azure's `Measurement` JSON (samples/wasm/operators/*: a serde enum, externally tagged),
shared by the Python rewrites of Azure's humidity, collection and enrichment modules
(built into each of them). `dumps` writes what serde_json writes for these structs:
compact, fields in declaration order, `value` left out when absent, f64 with a fraction
or exponent; `display` is Rust's `{}` of an f64 (what Azure's format! strings write).
"""
import decimal
import json

TEMPERATURE = ("value", "count", "max", "min", "average", "last", "unit", "overtemp")
HUMIDITY = ("value", "count", "max", "min", "average", "last")
F64_MIN, F64_MAX = -1.7976931348623157e308, 1.7976931348623157e308


class Invalid(Exception):
    """The payload is not a Measurement."""


def f64(x):
    """serde_json's f64: shortest round trip, always a fraction or exponent."""
    return repr(float(x)).replace("e+", "e")


def display(x):
    """Rust's `{}` of an f64: shortest round trip, positional, no `.0` on integers."""
    x = float(x)
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    text = format(decimal.Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _number(fields, key, default=0.0):
    v = fields.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Invalid(f"{key} is not a number")
    return float(v)


def temperature(fields):
    if not isinstance(fields, dict) or fields.get("unit") not in ("C", "F"):
        raise Invalid("a temperature needs a unit C or F")
    count = fields.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise Invalid("count is not a whole number")
    return {"value": _number(fields, "value", None), "count": count,
            **{k: _number(fields, k) for k in ("max", "min", "average", "last")},
            "unit": fields["unit"], "overtemp": bool(fields.get("overtemp", False))}


def humidity(fields):
    if not isinstance(fields, dict):
        raise Invalid("a humidity is an object")
    count = fields.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise Invalid("count is not a whole number")
    return {"value": _number(fields, "value", None), "count": count,
            **{k: _number(fields, k) for k in ("max", "min", "average", "last")}}


def obj(fields):
    if not isinstance(fields, dict) or not isinstance(fields.get("result"), str):
        raise Invalid("an object needs a result")
    return {"result": fields["result"]}


def sensor_data(fields):
    if not isinstance(fields, dict):
        raise Invalid("sensor_data is an object")
    return {"temperature": [temperature(t) for t in fields.get("temperature", [])],
            "humidity": [humidity(h) for h in fields.get("humidity", [])],
            "object": [obj(o) for o in fields.get("object", [])]}


PARSE = {"temperature": temperature, "humidity": humidity, "object": obj, "sensor_data": sensor_data}


def loads(payload):
    """(kind, fields) of a Measurement's JSON; Invalid when it is none."""
    try:
        data = json.loads(payload)
    except ValueError as e:
        raise Invalid(f"not JSON: {e}") from None
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in PARSE:
        raise Invalid("not a temperature, humidity, object or sensor_data measurement")
    kind, fields = next(iter(data.items()))
    return kind, PARSE[kind](fields)


def _fields(values, names):
    out = []
    for name in names:
        v = values.get(name)
        if name == "value" and v is None:
            continue
        if name == "count":
            out.append(f'"count":{int(v)}')
        elif name == "unit":
            out.append(f'"unit":{json.dumps(v)}')
        elif name == "overtemp":
            out.append('"overtemp":' + ("true" if v else "false"))
        else:
            out.append(f'"{name}":' + f64(v))
    return "{" + ",".join(out) + "}"


def dump_sensor_data(data):
    """The payload of a SensorData measurement, as serde_json writes it."""
    return ('{"temperature":[' + ",".join(_fields(t, TEMPERATURE) for t in data["temperature"]) + '],"humidity":['
            + ",".join(_fields(h, HUMIDITY) for h in data["humidity"]) + '],"object":['
            + ",".join('{"result":' + json.dumps(o["result"]) + "}" for o in data["object"]) + "]}")
