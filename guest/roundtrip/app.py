"""The test-suite's guest: every wasi:nn call, driven from the host with plain values."""
import time

from componentize_py_types import Err

from wit_world import exports
from wit_world.exports.roundtrip import NnFailure, TensorValue
from wit_world.imports import graph, tensor

_graphs: dict = {}
_contexts: dict = {}
_ids = iter(range(1, 2**32))


def _failure(e: Err) -> Err:
    """wasi:nn raises Err(error resource); hand the host its code and message."""
    with e.value as error:
        return Err(NnFailure(error.code(), error.data()))


def _value(t: tensor.Tensor) -> TensorValue:
    return TensorValue(t.dimensions(), t.ty(), t.data())


def _tensor(v: TensorValue) -> tensor.Tensor:
    return tensor.Tensor(v.dimensions, v.ty, v.data)


def _keep(table: dict, obj) -> int:
    key = next(_ids)
    table[key] = obj
    return key


class Roundtrip(exports.Roundtrip):
    def make(self, value):
        return _tensor(value)

    def inspect(self, t):
        return _value(t)

    def echo(self, t):
        with t:
            return _tensor(_value(t))

    def load(self, builders, encoding, target):
        try:
            return _keep(_graphs, graph.load(builders, encoding, target))
        except Err as e:
            raise _failure(e)

    def load_file(self, path, encoding, target):
        with open(path, "rb") as f:
            model = f.read()
        return self.load([model], encoding, target)

    def load_by_name(self, name):
        try:
            return _keep(_graphs, graph.load_by_name(name))
        except Err as e:
            raise _failure(e)

    def init_context(self, graph_id):
        try:
            return _keep(_contexts, _graphs[graph_id].init_execution_context())
        except Err as e:
            raise _failure(e)

    def compute(self, context, inputs):
        try:
            outputs = _contexts[context].compute([(name, _tensor(v)) for name, v in inputs])
        except Err as e:
            raise _failure(e)
        result = []
        for name, t in outputs:
            with t:
                result.append((name, _value(t)))
        return result

    def compute_tensors(self, context, inputs):
        try:
            return _contexts[context].compute(inputs)
        except Err as e:
            raise _failure(e)

    def drop_graph(self, graph_id):
        _graphs.pop(graph_id).__exit__(None, None, None)

    def drop_context(self, context):
        _contexts.pop(context).__exit__(None, None, None)

    def bulk_span(self, op, addr, length):
        from wit_world.imports import bulk  # only in components built with the fast path
        try:
            if op == "load":
                return _keep(_graphs, bulk.load([bulk.Span(addr, length)], graph.GraphEncoding.ONNX,
                                                graph.ExecutionTarget.CPU))
            with bulk.tensor_from_memory([length], tensor.TensorType.U8, bulk.Span(addr, length)):
                return 0
        except Err as e:
            raise _failure(e)

    def spin(self, seconds):
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            n += 1
        return n

    def allocate(self, size):
        return len(bytearray(size))

    def misuse(self, kind, context):
        t = tensor.Tensor([1], tensor.TensorType.U8, b"\x00")
        if kind == "use-after-drop":
            t.__exit__(None, None, None)
            t.dimensions()
        elif kind == "reuse-moved":
            inputs = [("0", t)]
            for _ in range(2):
                try:
                    _contexts[context].compute(inputs)
                except Err as e:
                    _failure(e)
        else:
            raise ValueError(f"unknown misuse {kind!r}")
