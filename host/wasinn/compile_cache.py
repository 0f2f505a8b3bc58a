"""Compiled components on disk, so a second run skips the seconds of compilation.

An entry is keyed on the component's sha256 plus the wasmtime version and wasinn's
engine settings, so it is never served for a changed file or a different runtime.
Hashing a 37 MB component costs ~20 ms, more than loading it, so a path is first looked
up by its file identity (path, size, mtime, ctime, inode, device): any write to the
file changes its ctime, and ctime cannot be set back, so a match means the same bytes
as when the hash was taken. A stat is microseconds.

An engine may keep a sidecar file beside each entry (the host-memory engine keeps the
component's memory images there, abi/images.py): `compile` then returns a component
whose record (embedding/records.py) holds its bytes as `sidecar`, written before the
entry; an entry found without its sidecar is a miss, and a loaded one's record holds
the sidecar's path there.
"""
from __future__ import annotations

import os
import pathlib
from typing import Callable

from wasmtime import Engine, WasmtimeError
from wasmtime.component import Component

from .digests import sha256
from .embedding.records import record
from .files import making, write_atomic
from .versions import version

WASMTIME_VERSION = version("wasmtime")  # part of every key: a compiled form is this wasmtime's


class IdentityMemo:
    """Keys computed from files' bytes, remembered under the files' identities (see the
    module doc), so that the files are read and hashed again only once one changed."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory

    def _slot(self, paths: tuple[pathlib.Path, ...]) -> pathlib.Path:
        identity = "\n".join(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"
                              for p, st in ((p, os.stat(p)) for p in paths))
        return self.directory / sha256(identity.encode()).hexdigest()[:32]

    def get(self, *paths: pathlib.Path) -> str | None:
        try:
            return self._slot(paths).read_text().strip()
        except OSError:
            return None

    def put(self, key: str, *paths: pathlib.Path) -> None:
        try:
            _write_quietly(self._slot(paths), key.encode())
        except OSError:
            pass  # a file gone since it was read: the next run hashes again


class CompileCache:
    def __init__(self, directory: pathlib.Path, engine: Engine, tag: str, sidecar: str | None = None):
        self.directory = directory
        self.engine = engine
        self.tag = tag
        self.sidecar = sidecar  # the sidecar file's suffix, or None
        # one memo per engine: a path is remembered only for the engine its content chose,
        # so an entry another engine (or an older wasinn) left for the same bytes is never
        # taken for it by the stat-only lookup
        self.identities = IdentityMemo(directory / f"by-stat-{tag}")

    def _entry(self, content_key: str) -> pathlib.Path:
        return self.directory / f"{content_key}-{self.tag}.cwasm"

    def _deserialize(self, entry: pathlib.Path) -> Component | None:
        side = entry.with_suffix(self.sidecar) if self.sidecar else None
        if side is not None and not side.is_file():
            return None
        try:
            component = Component.deserialize_file(self.engine, str(entry))
        except WasmtimeError:
            entry.unlink(missing_ok=True)  # truncated or from another build: compile again
            return None
        if side is not None:
            record(component).sidecar = side
        return component

    def lookup(self, path: pathlib.Path) -> Component | None:
        """The compiled component for `path` if its identity is known; no read, no hash."""
        content_key = self.identities.get(path)
        if content_key is None:
            return None
        entry = self._entry(content_key)
        return self._deserialize(entry) if entry.is_file() else None

    def load(self, wasm: bytes, compile: Callable[[bytes], Component], path: pathlib.Path | None = None,
             waiting: Callable[[], None] | None = None, patience: float | None = None) -> Component:
        """The compiled form of `wasm`: from the cache, or compiled by `compile` and kept.
        A process that finds another compiling the same bytes waits for its entry
        (`waiting` is told) rather than compiling them too, for up to `patience` seconds."""
        key = content_key(wasm)
        entry = self._entry(key)
        component = self._deserialize(entry) if entry.is_file() else None
        if component is None:
            with making(entry, waiting, patience):
                component = self._deserialize(entry) if entry.is_file() else None
                if component is None:
                    component = compile(wasm)
                    # an entry without its sidecar is never taken: not written unless the sidecar is
                    if not self.sidecar or _write_quietly(entry.with_suffix(self.sidecar), record(component).sidecar):
                        _write_quietly(entry, component.serialize())
        if path is not None and self.identities.get(path) != key:  # written once, not every run
            self.identities.put(key, path)
        return component


def waiting_for(label: str, compile_timeout: float, progress: Callable[[str], None]
                ) -> tuple[Callable[[], None], float | None]:
    """What a load says when another process is compiling the same binary, and how long
    it waits for it (CompileCache.load): no longer than it would let its own compile take
    (compile-timeout; 0, no limit), then it compiles too."""
    timeout = compile_timeout or None
    return (lambda: progress(f"waiting for another process compiling {label}"
                             f"{f' (at most {timeout:g} s)' if timeout else ''}...")), timeout


def content_key(wasm: bytes) -> str:
    """The part of an entry's name its component's bytes decide."""
    return sha256(wasm).hexdigest()[:32]


def _write_quietly(path: pathlib.Path, data: bytes) -> bool:
    try:
        write_atomic(path, data)
    except OSError:
        return False  # an unwritable cache only costs time
    return True
