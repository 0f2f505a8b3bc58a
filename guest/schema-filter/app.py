"""Azure IoT Operations' schema-validating filter (samples/wasm/schema-registry-scenario/
operators/filter), in Python: init takes the first of the module schemas it is given (a
JSON Schema; none: init fails), and a message passes when its payload is JSON valid
against it. Payloads that are not JSON, or not valid, are dropped (logged), as in Azure's
module.

The validator covers the JSON Schema keywords these filters use: type (with "integer"
as a number without fraction, booleans not numbers), properties, required,
additionalProperties (false), items, enum, minimum, maximum, minLength, maxLength; other
keywords are not checked. Configuration is kept at module level (componentize-py 0.25
makes a new export object for each call).
"""
import json

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import logger, types

CONTEXT = "filter"


class _Config:
    schema = None


def _is(kind, value):
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}.get(kind) is type(value)


def errors(schema, value, at="$"):
    if not isinstance(schema, dict):
        return []
    out = []
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is(k, value) for k in kinds):
            return [f"{at}: expected {kind}, got {json.dumps(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{at}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{at}: above {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            out.append(f"{at}: length {len(value)} out of bounds")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{at}: missing {key}")
        for key, item in value.items():
            if key in props:
                out += errors(props[key], item, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{at}: unexpected {key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += errors(schema["items"], item, f"{at}[{i}]")
    return out


class Filter(exports.Filter):
    def init(self, configuration):
        logger.log(logger.Level.INFO, CONTEXT, "Initialization function invoked")
        if not configuration.module_schemas:
            logger.log(logger.Level.ERROR, CONTEXT, "Initialization received no schemas.")
            return False
        if len(configuration.module_schemas) > 1:
            logger.log(logger.Level.WARN, CONTEXT, "Initialization received multiple schemas, only the first will be "
                       "used.")
        try:
            _Config.schema = json.loads(configuration.module_schemas[0].content)
        except ValueError:
            logger.log(logger.Level.ERROR, CONTEXT, "The schema is not JSON.")
            return False
        return True

    def process(self, message):
        if not isinstance(message, types.DataModel_Message):
            raise Err(types.Error("Unexpected input type."))
        payload = message.value.payload
        data = payload.value.read() if isinstance(payload, types.BufferOrBytes_Buffer) else payload.value
        try:
            value = json.loads(data)
        except ValueError as e:
            logger.log(logger.Level.ERROR, CONTEXT, f"Failed to parse payload as JSON: {e}")
            return False
        problems = errors(_Config.schema, value)
        for problem in problems:
            logger.log(logger.Level.INFO, CONTEXT, f"Validation error: {problem}")
        return not problems
