"""Host-side tensors: what a wasi:nn `tensor` handle points at.

A tensor is dimensions, an element type and bytes. The constructor in the WIT cannot
fail, so a `HostTensor` accepts any combination of them (nn.py has bounded its rank and
bytes) and `validate()` reports a mismatch later, from a call that can return an error.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping

from .lazy import numpy as np

from ._enums import TensorType
from .errors import BadValue, invalid_argument
from .limits import counted, product

class _Dtypes(Mapping):
    """Every wasi:nn tensor type and the numpy dtype that holds it (little-endian, as
    the bytes on the wire are). numpy has no bfloat16: that one comes from ml_dtypes,
    imported the first time a BF16 tensor needs it (the import alone takes 0.3-0.5 s).
    numpy itself is imported on first use too (lazy.py)."""

    @functools.cached_property
    def _known(self) -> dict:
        return {
            TensorType.FP16: np.dtype("<f2"),
            TensorType.FP32: np.dtype("<f4"),
            TensorType.FP64: np.dtype("<f8"),
            TensorType.U8: np.dtype("u1"),
            TensorType.I32: np.dtype("<i4"),
            TensorType.I64: np.dtype("<i8"),
        }

    @functools.cached_property
    def by_dtype(self) -> dict:
        return {dt: ty for ty, dt in self._known.items()}

    def __getitem__(self, ty: TensorType) -> np.dtype:
        dtype = self._known.get(ty)
        if dtype is None and ty == TensorType.BF16:
            import ml_dtypes
            dtype = self._known[ty] = np.dtype(ml_dtypes.bfloat16)
        if dtype is None:
            raise KeyError(ty)
        return dtype

    def __iter__(self):
        return iter(TensorType)

    def __len__(self) -> int:
        return len(TensorType)


DTYPES: Mapping[TensorType, np.dtype] = _Dtypes()
# Names people and ONNX use, for messages.
TYPE_NAMES = {TensorType.FP16: "float16", TensorType.FP32: "float32", TensorType.FP64: "float64",
              TensorType.BF16: "bfloat16", TensorType.U8: "uint8", TensorType.I32: "int32",
              TensorType.I64: "int64"}


def tensor_type_of(dtype: np.dtype) -> TensorType | None:
    """The wasi:nn type for a numpy dtype, or None if wasi:nn cannot carry it."""
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.name == "bfloat16":  # an ml_dtypes array: ml_dtypes is loaded already
        return TensorType.BF16 if dtype == DTYPES[TensorType.BF16] else None
    return DTYPES.by_dtype.get(dtype)


# Values a tensor's text shows; the rest are elided.
SHOWN_VALUES = 8
# Dimensions a message shows; the rest are counted (a guest's dims go into its error data).
_SHOWN_DIMS = 16


def dtype_refusal(dtype) -> str:
    """Why an array of `dtype` cannot be a tensor, and what can."""
    return (f"numpy dtype {dtype} has no wasi:nn tensor type; one of "
            + ", ".join(f"{name} ({ty.value})" for ty, name in TYPE_NAMES.items()))


def fits(dtype: np.dtype, value) -> bool:
    """Whether a Python number is a value of `dtype`: an integer within its range, or a
    number that stays finite in it (nan and inf are values of every float type)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return isinstance(value, int) and int(info.min) <= value <= int(info.max)
    try:
        value = float(value)
    except OverflowError:  # an int past every float
        return False
    with np.errstate(over="ignore"):
        return not math.isfinite(value) or bool(np.isfinite(np.asarray(value, dtype)))


def value_range(dtype: np.dtype) -> str:
    """What `fits` accepts, for messages."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return f"integers {info.min}..{info.max}"
    top = np.finfo(dtype).max
    # numpy's shortest text for float16's 65504 is 6.55e+04
    return f"numbers up to {f'{float(top):.0f}' if float(top) < 1e6 else str(top)} in magnitude, nan, inf, -inf"


def tensor_type_named(name: str) -> TensorType:
    """A wasi:nn tensor type by its WIT name (FP32; any case)."""
    try:
        return TensorType[name.upper()]
    except KeyError:
        raise BadValue(f"no tensor type {name}; wasi:nn's are "
                       + ", ".join(t.value for t in TensorType)) from None


def tensor_from_values(ty: TensorType, dims, values) -> "HostTensor":
    """A tensor from its dimensions and its values in row-major order, each checked
    against the type (`fits`); what `tensor(FP32, [2, 2], [1.0, 2.0, 3.0, 4.0])` reads as."""
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**32
                                             for d in dims):
        raise BadValue(f"dims must be a list of integers 0..4294967295, got {dims!r}")
    if not isinstance(values, list):
        raise BadValue(f"values must be a list of numbers, got {values!r}")
    if product(dims) != len(values):
        raise BadValue(f"dims {dims} hold {counted(product(dims))} values, got {len(values)}")
    dtype = DTYPES[ty]
    for i, v in enumerate(values):
        if not fits(dtype, v):
            raise BadValue(f"value [{i}] is {v!r}; {ty.value} takes {value_range(dtype)}")
    return HostTensor.from_array(np.asarray(values, dtype).reshape(dims))


def load_npy(path: str) -> "HostTensor":
    """The array a .npy file holds (numpy's format, no pickles), as a tensor."""
    try:
        array = np.load(path, allow_pickle=False)
    except OSError as e:
        raise BadValue(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, EOFError):
        raise BadValue(f"{path} is not a .npy file of numbers (what np.save writes; no pickled objects)") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise BadValue(f"{path} is a .npz archive of several arrays; save the one to pass with np.save")
    return HostTensor.from_array(array)


def shown_dims(dims) -> str:
    """Dimensions as a message shows them (None: a dynamic axis, `?`)."""
    shown = ",".join("?" if d is None else str(d) for d in dims[:_SHOWN_DIMS])
    return shown + f",... ({len(dims)} dimensions)" if len(dims) > _SHOWN_DIMS else shown


def describe(ty: TensorType, dims) -> str:
    return f"{TYPE_NAMES[ty]} [{shown_dims(dims)}]"


class HostTensor:
    """One tensor: `dims`, `ty` and the raw bytes (`data`, bytes or a uint8 array)."""

    __slots__ = ("dims", "ty", "data")

    def __init__(self, dims, ty: TensorType, data):
        self.dims = tuple(int(d) for d in dims)
        self.ty = ty
        self.data = data

    @classmethod
    def from_array(cls, array: np.ndarray) -> "HostTensor":
        """Wraps a numpy array without copying when it is already C-contiguous."""
        ty = DTYPES.by_dtype.get(array.dtype) if type(array) is np.ndarray and array.flags.c_contiguous else None
        if ty is not None:  # what backends return: a third of the general path's cost
            return cls(array.shape, ty, array.reshape(-1).view(np.uint8))
        array = np.asarray(array)
        ty = tensor_type_of(array.dtype)
        if ty is None:
            raise BadValue(dtype_refusal(array.dtype))
        array = np.require(array, DTYPES[ty], "C")  # unlike ascontiguousarray, keeps rank 0
        return cls(array.shape, ty, array.reshape(-1).view(np.uint8))

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def expected_nbytes(self) -> int:
        """The bytes the dimensions and type call for; past 2^64 elements, more than any
        tensor can have (the product stops there)."""
        return product(self.dims) * DTYPES[self.ty].itemsize

    def validate(self, label: str) -> None:
        """Raises `invalid-argument` unless the bytes fit the dimensions and type."""
        elements, itemsize = product(self.dims), DTYPES[self.ty].itemsize
        if elements * itemsize != len(self.data):
            raise invalid_argument(f"{label}: {describe(self.ty, self.dims)} needs {counted(elements * itemsize)} "
                                   f"bytes ({counted(elements)} elements x {itemsize}), got {len(self.data)}")

    def array(self) -> np.ndarray:
        """The tensor as a typed numpy array (a view, no copy); call `validate` first."""
        buf = self.data if isinstance(self.data, np.ndarray) else np.frombuffer(self.data, np.uint8)
        return buf.view(DTYPES[self.ty]).reshape(self.dims)

    def to_bytes(self) -> bytes:
        return self.data if isinstance(self.data, bytes) else self.data.tobytes()

    def text(self, shown: int = SHOWN_VALUES) -> str:
        """`tensor(FP32, [2, 2], [1.0, 2.0, 3.0, 4.0])`, as `--invoke` writes and reads a
        tensor; values past `shown` are elided (`...`)."""
        head = f"tensor({self.ty.value}, {list(self.dims)}"
        if self.expected_nbytes() != len(self.data):
            return f"{head}, <{len(self.data)} bytes, not the {self.expected_nbytes()} these dims need>)"
        flat = self.array().reshape(-1)
        # numpy's str of an element is the shortest text that reads back as that value
        values = [str(v) for v in flat[:shown]] + (["..."] if flat.size > shown else [])
        return f"{head}, [{', '.join(values)}])"

    def __repr__(self) -> str:
        return f"<HostTensor {self.text()}>"
