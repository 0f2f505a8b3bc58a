"""The host's one exception type for wasi:nn failures.

Everything below the bindings raises `NnError` (or lets a backend exception escape,
which `nn.py` maps to an `error-code`); `nn.py` turns it into a wasi:nn `error`
resource in one place, so nothing ever raises across the wasmtime boundary.
"""
from __future__ import annotations

from ._enums import ErrorCode


class NnError(Exception):
    """A wasi:nn failure: an `ErrorCode` plus the full message the guest will read."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


def invalid_argument(message: str) -> NnError:
    return NnError(ErrorCode.INVALID_ARGUMENT, message)


def invalid_encoding(message: str) -> NnError:
    return NnError(ErrorCode.INVALID_ENCODING, message)


def unsupported(message: str) -> NnError:
    return NnError(ErrorCode.UNSUPPORTED_OPERATION, message)


def runtime_error(message: str) -> NnError:
    return NnError(ErrorCode.RUNTIME_ERROR, message)


def not_found(message: str) -> NnError:
    return NnError(ErrorCode.NOT_FOUND, message)


def too_large(message: str) -> NnError:
    return NnError(ErrorCode.TOO_LARGE, message)


# Characters of a guest's name that a message shows: the message goes back to the guest
# (error.data) and to stderr, and the name is the guest's, of any length.
_QUOTED = 200


def quoted(name) -> str:
    """`repr(name)`, cut short past 200 characters."""
    return repr(name) if len(name) <= _QUOTED else f"{name[:_QUOTED]!r}... ({len(name)} characters)"


class WasinnError(Exception):
    """A host-side failure outside wasi:nn: bad CLI input, a component that does not
    load, a guest that traps. Its message is one line meant for a person."""


class BadValue(WasinnError):
    """A value given to an export does not fit its WIT type, or `--invoke`'s text does
    not read as a value: the caller's mistake (the CLI's usage error, exit status 2)."""


class GuestTrap(WasinnError):
    """The guest trapped (or a host limit ended it). Its instance was torn down and its
    host resources freed; the next call runs on a fresh instance."""
