"""The ONNX backend node test suite (shipped in the `onnx` wheel), run natively on
onnxruntime and through a guest component on wasinn, with onnx's own comparison rules.

Through wasinn, each case goes the whole guest path (guest/adversary): the model bytes
are `graph.load`ed by the guest, each input is built in the guest with the tensor
constructor from its bytes, the guest computes, and reads every output back with
`dimensions`, `ty` and `data`. Used by tests/backends/test_conformance.py (a subset) and
tests/support/run_conformance.py (all of it).
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from wasinn import TensorType
from wasinn.tensors import DTYPES, tensor_type_of

PASS, FAIL, ERROR, UNSUPPORTED, NOT_EXPRESSIBLE = "pass", "fail", "error", "unsupported", "not expressible in wasi:nn"
OUTCOMES = (PASS, FAIL, ERROR, UNSUPPORTED, NOT_EXPRESSIBLE)


@dataclasses.dataclass
class Case:
    name: str
    model: bytes
    input_names: list[str]
    inputs: list  # numpy arrays, or what else the suite feeds (lists for sequences, None)
    expected: list
    rtol: float
    atol: float

    def not_expressible(self) -> str | None:
        """Why wasi:nn's seven tensor types cannot carry this case, or None."""
        for role, values in (("input", self.inputs), ("output", self.expected)):
            for v in values:
                if not isinstance(v, np.ndarray):
                    return f"an {role} is a {type(v).__name__}, not a tensor"
                if tensor_type_of(v.dtype) is None:
                    return f"an {role} is {v.dtype}"
        return None


@dataclasses.dataclass
class Result:
    outcome: str
    detail: str = ""


def _array(value):
    """The suite's values as numpy: TensorProtos (types numpy lacks) and scalars too."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.generic):
        return np.asarray(value)
    return value


@functools.cache
def cases() -> list[Case]:
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():  # the generators compute expected values with overflows on purpose
        warnings.simplefilter("ignore")
        suite = collect_testcases(None)
    out = []
    for tc in suite:
        graph = tc.model.graph
        initialized = {i.name for i in graph.initializer}
        names = [i.name for i in graph.input if i.name not in initialized]
        for n, (inputs, expected) in enumerate(tc.data_sets):
            out.append(Case(tc.name if len(tc.data_sets) == 1 else f"{tc.name}[{n}]", tc.model.SerializeToString(),
                            names, [_array(v) for v in inputs], [_array(v) for v in expected], tc.rtol, tc.atol))
    return out


def compare(expected: list, got: list, rtol: float, atol: float) -> str | None:
    """onnx's assert_similar_outputs: same count, shapes and dtypes; values allclose
    (bfloat16 within two of its ulps, compared as float32). The mismatch, or None."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (out, ref) in enumerate(zip(got, expected)):
        if isinstance(ref, (list, tuple)) or ref is None:
            if not isinstance(out, (list, tuple)) and out is not ref:
                return f"output {i}: got {type(out).__name__}, expected {type(ref).__name__}"
            problem = compare(list(ref or []), list(out or []), rtol, atol)
            if problem:
                return f"output {i}: {problem}"
            continue
        out = np.asarray(out)
        if out.shape != ref.shape:
            return f"output {i}: shape {out.shape}, expected {ref.shape}"
        try:
            if ref.dtype == object:
                np.testing.assert_array_equal(out, ref)
                continue
            if out.dtype != ref.dtype:
                return f"output {i}: dtype {out.dtype}, expected {ref.dtype}"
            tol = rtol
            if ref.dtype.name == "bfloat16":
                tol, out, ref = max(rtol, 2**-6), out.astype(np.float32), ref.astype(np.float32)
            np.testing.assert_allclose(out, ref, rtol=tol, atol=atol)
        except AssertionError as e:
            return f"output {i}: " + " ".join(str(e).split())[:300]
    return None


def run_native(case: Case, threads: int = 1) -> Result:
    """onnxruntime's Python API on the same bytes and arrays."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = threads, 4
    try:
        session = ort.InferenceSession(case.model, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        return Result(UNSUPPORTED, _line(e))
    names = [i.name for i in session.get_inputs()]
    try:
        if all(isinstance(v, np.ndarray) for v in [*case.inputs, *case.expected]):
            feeds = {name: _ort_value(v) for name, v in zip(names, case.inputs)}
            got = [_from_ort(v) for v in session.run_with_ort_values(None, feeds)]
        else:  # sequences, optionals: only `run` takes and gives them as Python values
            got = session.run(None, dict(zip(names, case.inputs)))
    except Exception as e:
        return Result(ERROR, _line(e))
    problem = compare(case.expected, got, case.rtol, case.atol)
    return Result(FAIL, problem) if problem else Result(PASS)


def _ort_value(value: np.ndarray) -> ort.OrtValue:
    if value.dtype.name == "bfloat16":  # onnxruntime has no numpy bfloat16: hand it the bits
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(value.view(np.uint16), onnx.TensorProto.BFLOAT16)
    return ort.OrtValue.ortvalue_from_numpy(np.require(value, requirements="C"))


def _from_ort(value: ort.OrtValue) -> np.ndarray:
    if value.data_type() == "tensor(bfloat16)":
        n = int(np.prod(value.shape()))
        raw = ctypes.string_at(value.data_ptr(), n * 2) if n else b""
        return np.frombuffer(raw, DTYPES[TensorType.BF16]).reshape(value.shape())
    return value.numpy()


def run_wasinn(inst, case: Case) -> Result:
    """The case through the guest: load, build inputs, compute, read outputs, drop all."""
    reason = case.not_expressible()
    if reason:
        return Result(NOT_EXPRESSIBLE, reason)
    try:
        graph = inst.call("load", [case.model], "onnx", "cpu")
        if graph.tag == "err":
            return Result(UNSUPPORTED, f"{graph.payload.code}: {graph.payload.data}")
        ctx = inst.call("init-context", graph.payload)
        if ctx.tag == "err":
            return Result(ERROR, f"{ctx.payload.code}: {ctx.payload.data}")
        named = []
        for name, value in zip(case.input_names, case.inputs):
            value = np.require(value, requirements="C")  # unlike ascontiguousarray, keeps rank 0
            ty = tensor_type_of(value.dtype)
            named.append((name, inst.call("make-tensor", list(value.shape), ty.value, value.tobytes())))
        result = inst.call("compute", ctx.payload, named)
        if result.tag == "err":
            return Result(ERROR, f"{result.payload.code}: {result.payload.data}")
        got = [_from_value(inst.call("read", key)) for _, key in result.payload]
    finally:
        inst.call("reset")
    problem = compare(case.expected, got, case.rtol, case.atol)
    return Result(FAIL, problem) if problem else Result(PASS)


def _from_value(value) -> np.ndarray:
    dtype = DTYPES[TensorType(value.ty)]
    return np.frombuffer(value.data, dtype).reshape(value.dimensions)


def _line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


@dataclasses.dataclass
class Row:
    case: str
    native: Result
    wasinn: Result

    @property
    def violation(self) -> bool:
        """Native onnxruntime passes, wasi:nn can carry the tensors, wasinn does not pass."""
        return self.native.outcome == PASS and self.wasinn.outcome not in (PASS, NOT_EXPRESSIBLE)


def run(inst, selected: list[Case], progress=None) -> list[Row]:
    rows = []
    for i, case in enumerate(selected, 1):
        rows.append(Row(case.name, run_native(case), run_wasinn(inst, case)))
        if progress and i % 250 == 0:
            progress(f"{i}/{len(selected)} cases")
    return rows


def table(rows: list[Row]) -> str:
    """Outcome counts, native next to wasinn, and how the cases native passes fared."""
    lines = [f"{'':<22}" + "".join(f"{o:>{max(len(o), 6) + 2}}" for o in OUTCOMES) + f"{'total':>8}"]
    for label, pick in (("native onnxruntime", lambda r: r.native), ("wasinn (guest path)", lambda r: r.wasinn)):
        counts = [sum(pick(r).outcome == o for r in rows) for o in OUTCOMES]
        lines.append(f"{label:<22}" + "".join(f"{c:>{max(len(o), 6) + 2}}" for c, o in zip(counts, OUTCOMES))
                     + f"{len(rows):>8}")
    native_pass = [r for r in rows if r.native.outcome == PASS]
    fared = {o: sum(r.wasinn.outcome == o for r in native_pass) for o in OUTCOMES}
    lines.append(f"of the {len(native_pass)} cases native passes, through wasinn: "
                 + ", ".join(f"{n} {o}" for o, n in fared.items() if n))
    return "\n".join(lines)
