"""Azure IoT Operations' OPC UA module (samples/wasm/operators/opc-ua), in Python: a map
operator that flattens an OPC UA tag map into database-friendly rows, with the JSON
Azure's Rust module writes (serde_json without preserve_order: tags and keys sorted,
compact).

    {"Temperature": {"Value": 23.5, "SourceTimestamp": "..."}}
    -> [{"tag":"Temperature","timestamp":"...","value":23.5}]

Entries that are not OPC UA DataValues (no Value or no SourceTimestamp) make no row;
with `copy_all` = true they are copied into every row. `headers`
("header1=column1;header2=column2") copies those user properties into every row;
`dataschema` overwrites the message's `dataschema` user property. Configuration is kept
at module level (componentize-py 0.25 makes a new export object for each call).
"""
import json

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import types


class _Config:
    schema = None
    headers = None
    copy_all = False


def _text(value):
    if isinstance(value, types.BufferOrString_String):
        return value.value
    try:
        return value.value.read().decode()
    except UnicodeDecodeError:
        return None


def _parse_mapping(text):
    out = {}
    for pair in text.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key and value:
            out[key.strip()] = value.strip()
    return out


def tag_map_to_array(data, copy_all, headers):
    rows, others = [], []
    if isinstance(data, dict):
        for tag in sorted(data):
            v = data[tag]
            if isinstance(v, dict) and "Value" in v and "SourceTimestamp" in v:
                rows.append({"tag": tag, "value": v["Value"], "timestamp": v["SourceTimestamp"]})
            else:
                others.append((tag, v))
    for row in rows:
        if copy_all:
            row.update(others)
        if headers:
            row.update(headers)
    return rows


class Map(exports.Map):
    def init(self, configuration):
        for key, value in configuration.properties:
            if key == "dataschema":
                _Config.schema = value
            elif key == "headers":
                _Config.headers = _parse_mapping(value)
            elif key == "copy_all" and value in ("true", "false"):
                _Config.copy_all = value == "true"
        return True

    def process(self, message):
        if not isinstance(message, types.DataModel_Message):
            raise Err(types.Error("Unexpected input type"))
        m = message.value
        props = []
        headers = {} if _Config.headers is not None else None
        for key, value in m.properties.user_properties:
            name = _text(key)
            if name == "dataschema" and _Config.schema is not None:
                value = types.BufferOrString_String(_Config.schema)
            if headers is not None and name in _Config.headers:
                text = _text(value)
                if text is not None:
                    headers[_Config.headers[name]] = text
            props.append((key, value))
        m.properties.user_properties = props
        payload = m.payload.value.read() if isinstance(m.payload, types.BufferOrBytes_Buffer) else m.payload.value
        try:
            data = json.loads(payload)
        except ValueError as e:
            raise Err(types.Error(f"Failed to deserialize json object. Reason: {e}"))
        rows = tag_map_to_array(data, _Config.copy_all, headers)
        m.payload = types.BufferOrBytes_Bytes(json.dumps(rows, separators=(",", ":"), sort_keys=True).encode())
        return types.DataModel_Message(m)
