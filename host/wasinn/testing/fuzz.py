"""`wasinn fuzz`: call one export many times with parameters drawn from its WIT types.

Every example runs on a fresh instance (about a millisecond for a small component), so
examples are independent and reproducible and a guest's own leaks cannot pile up.
Each call ends in exactly one outcome, counted once: ok, an `err` result (wasi:nn
errors counted by code), a trap (the guest's own, a limit, the deadline), a host error
(never expected), or, with `roundtrip`, a mismatch between what went in and what came
back. Hypothesis shrinks each distinct kind of failure to a minimal example, which is
reported as one line. With `model`, tensor parameters are drawn as the model accepts
them (`inputs_for`), so calls get past the model's own checks.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import math
import re
import time
import warnings
from typing import Callable

import hypothesis
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st
from wasmtime.component import (F32, F64, ListType, OptionType, RecordType, ResultType, TupleType, Variant,
                                VariantType)

from ..embedding.types import is_bytes
from ..errors import GuestTrap, WasinnError
from ..runtime import Host
from ..tensors import DTYPES, HostTensor
from .strategies import graph_of, input_tensors, inputs_for, is_tensor, type_name, values_for


@dataclasses.dataclass
class Finding:
    """One distinct failure, shrunk: `line` is the counterexample line."""
    kind: str
    line: str
    blob: str | None = None  # hypothesis's choice sequence: `--replay` runs just this example


@dataclasses.dataclass
class Report:
    export: str
    signature: str
    calls: int
    seconds: float
    outcomes: collections.Counter
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(self.outcomes.items(), key=lambda kv: -kv[1]))
        calls = f"{self.calls} call{'' if self.calls == 1 else 's'}"
        return (f"fuzzed {self.export}: {self.signature}: {calls}, each on a fresh instance, "
                f"in {self.seconds:.1f} s\n  {counts or 'no calls'}")


class _Failed(Exception):
    """Raised inside the hypothesis test for a failing example; one subclass per kind of
    failure, because hypothesis tells distinct failures apart by exception type."""
    kind = ""


_KINDS: dict[str, type[_Failed]] = {}


def _failure(kind: str, line: str) -> _Failed:
    if kind not in _KINDS:
        _KINDS[kind] = type(f"Failed_{len(_KINDS)}", (_Failed,), {"kind": kind})
    return _KINDS[kind](line)


def trap_kind(message: str) -> str:
    """What ended a trapped call, from runtime.Instance's explanation of it."""
    if "(limit 'deadline'" in message:
        return "trap: deadline"
    if "(limit '" in message or "per-call limit" in message:
        return "trap: limit"
    return "trap: guest"


def roundtrip_problem(params, result) -> str | None:
    """Why an export cannot be checked for a round trip (None: it can)."""
    if len(params) != 1 or result is None:
        return "it must take one value and return one"
    sent, back = type_name(params[0][1]), type_name(result)
    if sent.replace("borrow<tensor>", "tensor") != back:
        return f"it takes {sent} and returns {back}"
    return None


def fuzz(host: Host, component, export: str, *, examples: int, roundtrip: bool = False,
         seed: int | None = None, replay: str | None = None, model=None,
         progress: Callable[[int, int], None] | None = None) -> Report:
    """Fuzzes `export` of `component` (a loaded Component); see the module docs. `model`
    (a model file, URL or loaded graph, as `inputs_for` takes) shapes the tensors: a
    `tensor` parameter gets the model's input of its own name, else any of its inputs; a
    `list<tuple<string, tensor>>` all of them by name; a `list<tensor>` all in order.
    Raises WasinnError when the fuzzing cannot run (no such export, a parameter the host
    cannot make, an export `roundtrip` does not fit, a model it cannot read)."""
    inst = host.instantiate(component)
    params, result = inst.signature(export)
    signature = f"func({', '.join(f'{n}: {type_name(t)}' for n, t in params)})" + \
        (f" -> {type_name(result)}" if result is not None else "")
    if roundtrip and (why := roundtrip_problem(params, result)):
        raise WasinnError(f"--roundtrip needs an export that returns what it takes; {export} is {signature}: {why}")
    strategy = st.tuples(*[values_for(t) for _, t in params]) if model is None else _model_strategy(params, model)
    outcomes: collections.Counter = collections.Counter()
    last: dict[str, str] = {}  # the last line of each kind: hypothesis replays the minimal example last
    calls = 0

    def fail(kind: str, args: tuple, what: str) -> _Failed:
        outcomes[kind] += 1
        last[kind] = f"counterexample: {describe_args(params, args)} {what}"
        return _failure(kind, last[kind])

    def one(args: tuple) -> None:
        nonlocal calls
        calls += 1
        if progress:
            progress(calls, examples)
        sent = copy.deepcopy(args) if roundtrip else None  # the call may rewrite records in place
        try:
            got = inst.call(export, *args)
        except GuestTrap as e:
            kind = trap_kind(str(e))
            raise fail(kind, args, f"{kind}: {_trap_cause(str(e))}") from None
        except Exception as e:  # noqa: BLE001 - every host failure is a finding, none may escape
            raise fail("host error", args, f"host error: {type(e).__name__}: {e}") from None
        finally:
            inst.close()
        if roundtrip and (diff := difference(params[0][1], sent[0], got)) is not None:
            raise fail(mismatch_kind(diff), sent, diff)
        outcomes[outcome(result, got)] += 1

    @settings(max_examples=examples, deadline=None, database=None, print_blob=True, report_multiple_bugs=True,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(args=strategy)
    def test(args):
        one(args)

    if seed is not None:
        test = hypothesis.seed(seed)(test)
    if replay is not None:
        test = hypothesis.reproduce_failure(hypothesis.__version__, replay.encode())(test)
    start = time.perf_counter()
    raised: list[BaseException] = []
    try:
        with warnings.catch_warnings():
            # hypothesis warns when it writes out a large example (a 64 KiB tensor's bytes)
            warnings.simplefilter("ignore", hypothesis.errors.HypothesisWarning)
            _hide_wasinn_constants()
            test()
    except _Failed as e:
        raised = [e]
    except BaseExceptionGroup as group:
        raised = list(_leaves(group))
    findings = []
    for e in raised:
        if not isinstance(e, _Failed):
            raise  # hypothesis itself failed (e.g. a flaky example): its message says why
        findings.append(Finding(e.kind, last.get(e.kind, str(e)), _blob(e)))
    return Report(export, signature, calls, time.perf_counter() - start, outcomes, findings)


def outcome(result_type, got) -> str:
    """The outcome of a call that returned: `ok`, or its `err` result (by wasi:nn code)."""
    if isinstance(result_type, ResultType) and isinstance(got, Variant) and got.tag == "err":
        code = getattr(got.payload, "code", None)
        return f"wasi:nn error {code}" if isinstance(code, str) else "err result"
    return "ok"


def _model_strategy(params, model) -> st.SearchStrategy[tuple]:
    model = graph_of(model)  # loaded once for both strategies
    by_name = input_tensors(model)
    named = inputs_for(model)
    any_input = st.one_of(*by_name.values())
    return st.tuples(*[values_for(t, tensors=by_name.get(name, any_input), inputs=named) for name, t in params])


def _leaves(group: BaseExceptionGroup):
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e


def _blob(e: BaseException) -> str | None:
    for note in getattr(e, "__notes__", ()):
        m = re.search(r"reproduce_failure\('[^']+', b'([^']+)'\)", note)
        if m:
            return m.group(1)
    return None


def _trap_cause(message: str) -> str:
    """The cause in a GuestTrap's message, without the part about the torn-down instance."""
    cause = message.split(": ", 1)[-1]
    return cause.split("; the instance was torn down")[0]


# --- describing values and their differences ------------------------------------------
def describe(ty, value) -> str:
    """A value, short: tensors as `TYPE dims=[...]`, lists by length and first elements."""
    if isinstance(value, HostTensor):
        return f"{value.ty.name} dims={list(value.dims)}"
    if is_bytes(ty):
        return f"list<u8> of {len(value)} bytes"
    if isinstance(ty, ListType):
        items = ", ".join(describe(ty.element, v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{type_name(ty)} of {len(value)} [{items}]"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_args(params, args: tuple) -> str:
    if len(params) == 1:
        return describe(params[0][1], args[0])
    return "(" + ", ".join(f"{name}={describe(ty, v)}" for (name, ty), v in zip(params, args)) + ")"


def _bytes_difference(sent: bytes, got: bytes, width: int = 1) -> str | None:
    if sent == got:
        return None
    if len(sent) != len(got):
        return f"length differs: sent {len(sent)} bytes, got {len(got)}"
    i = next(i for i, (a, b) in enumerate(zip(sent, got)) if a != b)
    where = f"byte {i}" + (f" (element {i // width})" if width > 1 else "")
    return f"{where} differs: sent 0x{sent[i]:02x}, got 0x{got[i]:02x}"


def difference(ty, sent, got) -> str | None:
    """What differs between a value sent and the one that came back (None: nothing),
    by the WIT type; floats compare by value with every NaN equal (the component model
    need not keep NaN payloads), tensors and `list<u8>` byte for byte."""
    if is_tensor(ty):
        if not isinstance(got, HostTensor):
            return f"result is not a tensor: {got!r}"
        if got.ty != sent.ty:
            return f"type differs: sent {sent.ty.name}, got {got.ty.name}"
        if got.dims != sent.dims:
            return f"dims differ: sent {list(sent.dims)}, got {list(got.dims)}"
        return _bytes_difference(sent.to_bytes(), got.to_bytes(), DTYPES[sent.ty].itemsize)
    if is_bytes(ty):
        return _bytes_difference(bytes(sent), bytes(got))
    if isinstance(ty, ListType):
        if len(sent) != len(got):
            return f"length differs: sent {len(sent)}, got {len(got)}"
        return _first((f"element {i}", difference(ty.element, a, b)) for i, (a, b) in enumerate(zip(sent, got)))
    if isinstance(ty, TupleType):
        return _first((f"element {i}", difference(t, a, b)) for i, (t, a, b) in enumerate(zip(ty.elements, sent, got)))
    if isinstance(ty, RecordType):
        return _first((f"field {n}", difference(t, getattr(sent, n), getattr(got, n, None))) for n, t in ty.fields)
    if isinstance(ty, OptionType):
        if (sent is None) != (got is None):
            return f"option differs: sent {sent!r}, got {got!r}"
        return None if sent is None else difference(ty.payload, sent, got)
    if isinstance(ty, (VariantType, ResultType)):
        if not isinstance(got, Variant) or got.tag != sent.tag:
            return f"case differs: sent {sent.tag}, got {getattr(got, 'tag', got)!r}"
        case_ty = dict(ty.cases if isinstance(ty, VariantType) else [("ok", ty.ok), ("err", ty.err)])[sent.tag]
        return None if case_ty is None else _first([(sent.tag, difference(case_ty, sent.payload, got.payload))])
    if isinstance(ty, (F32, F64)) and isinstance(got, float) and math.isnan(sent) and math.isnan(got):
        return None
    return None if sent == got else f"value differs: sent {sent!r}, got {got!r}"


def _first(labelled) -> str | None:
    """The first difference of (where, difference) pairs, prefixed with where it is."""
    for where, diff in labelled:
        if diff is not None:
            return f"{where}: {diff}"
    return None


def mismatch_kind(diff: str) -> str:
    """The kind of a difference (type, dims, length, bytes, ...), wherever in the value it is."""
    m = re.search(r"\b(type|dims|length|byte|case|option|value|result) (?:differs?|\d|is not)", diff)
    return "mismatch: " + {"byte": "bytes", "result": "not a tensor"}.get(m.group(1), m.group(1)) if m else "mismatch"


def _hide_wasinn_constants() -> None:
    """hypothesis (6.13x on) mixes integer, float and string constants from the source of
    every local module it finds in sys.modules into what it draws. wasinn's own modules
    are local in a checkout (an editable install), and their constants (syscall numbers,
    limits) are not the guest's: they made a fuzz run, seed and all, draw and shrink
    differently by which of wasinn's modules the process had imported (a planted bug
    shrunk to a 64-element tensor instead of a scalar). Hidden before the scan first runs
    in this process; constants an earlier test in the same process gathered stay. The one
    reach into hypothesis' privates, checked by tests/testing/test_fuzz.py's
    test_hypothesis_local_constants_hook."""
    import os
    import sys
    from hypothesis.internal.conjecture import providers
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    providers._seen_modules.update(id(m) for m in list(sys.modules.values())
                                   if os.path.abspath(getattr(m, "__file__", None) or "/").startswith(package))
