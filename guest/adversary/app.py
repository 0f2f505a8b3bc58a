"""The reliability tests' guest: primitive wasi:nn operations on objects named by ids,
so the host can drive any sequence of calls, misuse included (see wit/adversary.wit)."""
from componentize_py_types import Err

from wit_world import exports
from wit_world.exports.adversary import Failure, Kind, LiveCounts, TensorValue
from wit_world.imports import graph, inference, tensor

# Module-level: componentize-py may make a new export object per call.
_live: dict = {}
_dead: dict = {}  # dropped or moved: the object keeps its stale handle for `touch`/`drop`
_ids = iter(range(1, 2**32))
_CLASSES = {Kind.TENSOR: tensor.Tensor, Kind.GRAPH: graph.Graph, Kind.CONTEXT: inference.GraphExecutionContext}


def _failure(e: Err) -> Err:
    """wasi:nn raises Err(error resource); hand the host its code and message."""
    with e.value as error:
        return Err(Failure(error.code(), error.data()))


def _keep(obj) -> int:
    key = next(_ids)
    _live[key] = obj
    return key


def _kill(key: int) -> None:
    _dead[key] = _live.pop(key)


def _object(key: int):
    return _live[key] if key in _live else _dead[key]


def _call_one_method(obj) -> None:
    """One cheap call that exercises `obj`'s handle; raises Err on a wasi:nn error."""
    if isinstance(obj, tensor.Tensor):
        obj.dimensions()
    elif isinstance(obj, graph.Graph):
        obj.init_execution_context().__exit__(None, None, None)
    else:
        for _, t in obj.compute([]):
            t.__exit__(None, None, None)


def _drop(obj) -> None:
    obj.__exit__(None, None, None)


class Adversary(exports.Adversary):
    def make_tensor(self, dimensions, ty, data):
        return _keep(tensor.Tensor(dimensions, ty, data))

    def make_filled(self, dimensions, ty, length, fill):
        return _keep(tensor.Tensor(dimensions, ty, bytes([fill]) * length))

    def adopt(self, t):
        return _keep(t)

    def read(self, key):
        t = _live[key]
        return TensorValue(t.dimensions(), t.ty(), t.data())

    def load(self, builders, encoding, target):
        try:
            return _keep(graph.load(builders, encoding, target))
        except Err as e:
            raise _failure(e)

    def load_by_name(self, name):
        try:
            return _keep(graph.load_by_name(name))
        except Err as e:
            raise _failure(e)

    def init_context(self, graph_id):
        try:
            return _keep(_live[graph_id].init_execution_context())
        except Err as e:
            raise _failure(e)

    def compute(self, context, inputs):
        named = [(name, _object(key)) for name, key in inputs]
        for _, key in inputs:  # own handles: moved into the call whatever it returns
            if key in _live:
                _kill(key)
        try:
            outputs = _object(context).compute(named)
        except Err as e:
            raise _failure(e)
        return [(name, _keep(t)) for name, t in outputs]

    def drop(self, key):
        obj = _object(key)
        if key in _live:
            _kill(key)
        _drop(obj)

    def touch(self, key):
        try:
            _call_one_method(_object(key))
        except Err as e:
            raise _failure(e)

    def forge(self, claimed, handle):
        obj = object.__new__(_CLASSES[claimed])
        obj.handle = handle  # componentize-py's resource objects are their handle
        try:
            _call_one_method(obj)
        except Err as e:
            raise _failure(e)

    def counts(self):
        kinds = [type(o) for o in _live.values()]
        return LiveCounts(kinds.count(tensor.Tensor), kinds.count(graph.Graph),
                      kinds.count(inference.GraphExecutionContext))

    def reset(self):
        for obj in _live.values():
            _drop(obj)
        _live.clear()
        _dead.clear()

    def churn_tensors(self, n, length):
        data = bytes(length)
        for _ in range(n):
            _drop(tensor.Tensor([length], tensor.TensorType.U8, data))
        return 0

    def churn_contexts(self, graph_id, n):
        g = _live[graph_id]
        failed = 0
        for _ in range(n):
            try:
                _drop(g.init_execution_context())
            except Err as e:
                _failure(e)
                failed += 1
        return failed

    def churn_graphs(self, models, n):
        failed = 0
        for i in range(n):
            try:
                g = graph.load([models[i % len(models)]], graph.GraphEncoding.ONNX, graph.ExecutionTarget.CPU)
            except Err as e:
                _failure(e)
                failed += 1
                continue
            with g:
                try:
                    _drop(g.init_execution_context())
                except Err as e:
                    _failure(e)
                    failed += 1
        return failed

    def churn_computes(self, context, name, dimensions, ty, length, n):
        ctx = _live[context]
        data = bytes(length)
        failed = 0
        for _ in range(n):
            try:
                outputs = ctx.compute([(name, tensor.Tensor(dimensions, ty, data))])
            except Err as e:
                _failure(e)
                failed += 1
                continue
            for _, t in outputs:
                _drop(t)
        return failed
