"""The `schema-registry` interface: schemas from a file the operator gives
(`--schemas FILE`), or none (every `get` returns `not-available`).

The file is JSON: a list of schemas, each an object with `name` and `content` (the
schema itself: text, or a JSON value written out as text) and optionally `version`
(default "1"), `namespace`, `format` ("json" or "delta", default "json"),
`description`, `displayName`, `hash` and `tags` (an object of strings). `get(id,
version)` finds a schema whose name (or `namespace/name`) is `id` with that version.

A data-flow graph names a schema of the registry by reference, as Azure's schema
registry does: `aio-sr://NAMESPACE/NAME:VERSION` (`resolve`).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re

from ...errors import WasinnError

FORMATS = ("json", "delta")
_REFERENCE = re.compile(r"aio-sr://([^/:]+)/([^/:]+):([^/:]+)")


def parse_reference(ref: str) -> tuple[str, str, str] | None:
    """`aio-sr://NAMESPACE/NAME:VERSION` as (namespace, name, version); None if it is not one."""
    m = _REFERENCE.fullmatch(ref)
    return (m[1], m[2], m[3]) if m else None


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str
    namespace: str
    version: str
    format: str
    content: str
    description: str | None = None
    display_name: str | None = None
    hash: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


class SchemaRegistry:
    """Schemas by (id, version); `available` is False when no file was given."""

    def __init__(self, schemas: list[Schema] | None = None):
        self.available = schemas is not None
        self._by_id: dict[tuple[str, str], Schema] = {}
        for s in schemas or ():
            self._by_id[(s.name, s.version)] = s
            if s.namespace:
                self._by_id[(f"{s.namespace}/{s.name}", s.version)] = s

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> "SchemaRegistry":
        try:
            data = json.loads(pathlib.Path(path).read_text())
        except OSError as e:
            raise WasinnError(f"--schemas {path}: {e.strerror}") from None
        except ValueError as e:
            raise WasinnError(f"--schemas {path}: not JSON: {e}") from None
        if not isinstance(data, list):
            raise WasinnError(f"--schemas {path}: expected a list of schemas")
        schemas = []
        for i, entry in enumerate(data):
            where = f"--schemas {path}: schema {i + 1}"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or "content" not in entry:
                raise WasinnError(f"{where}: needs a name and a content")
            content = entry["content"]
            fmt = entry.get("format", "json")
            if fmt not in FORMATS:
                raise WasinnError(f"{where}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
            tags = entry.get("tags", {})
            if not isinstance(tags, dict):
                raise WasinnError(f"{where}: tags must be an object of strings")
            schemas.append(Schema(
                name=entry["name"], namespace=str(entry.get("namespace", "")), version=str(entry.get("version", "1")),
                format=fmt, content=content if isinstance(content, str) else json.dumps(content),
                description=entry.get("description"), display_name=entry.get("displayName"),
                hash=entry.get("hash"), tags=tuple((str(k), str(v)) for k, v in tags.items())))
        return cls(schemas)

    def get(self, schema_id: str, version: str) -> Schema | None:
        return self._by_id.get((schema_id, version))

    def resolve(self, ref: str) -> Schema | None:
        """The schema an `aio-sr://NAMESPACE/NAME:VERSION` reference names."""
        parts = parse_reference(ref)
        if parts is None:
            return None
        namespace, name, version = parts
        found = self.get(f"{namespace}/{name}", version)
        return found if found is not None and found.namespace == namespace else None

    def references(self) -> list[str]:
        """The reference of every schema that has a namespace (what `resolve` finds)."""
        return sorted({f"aio-sr://{s.namespace}/{s.name}:{s.version}" for s in self._by_id.values() if s.namespace})
