"""Pipeline stage: runs one model through wasi:nn on the tensors it is given.

The pipeline's preprocess and inference modules are both this component with a
different `model` (the image front, then the network): the stage itself only loads
its model, feeds it the incoming tensors and hands the outputs on, as handles.

Config: `model`, the name the host registered the module's model under.
Inputs go to the model in the order they arrive (wasi:nn's decimal-index names), so
a stage needs no knowledge of the previous model's output names.
"""
from componentize_py_types import Err

from wit_world import exports
from wit_world.exports.stage import StageError_BackendError, StageError_InvalidInput, StageOutput_Tensors
from wit_world.imports import graph
from wit_world.imports.errors import ErrorCode

KNOWN_KEYS = {"model"}


def _failure(e: Err) -> tuple[ErrorCode, str]:
    with e.value as error:
        code, data = error.code(), error.data()
    return code, f"{code.name.lower().replace('_', '-')}: {data}"


class _Model:
    """Loaded once per instance (module state: componentize-py may make a new `Stage`
    object for each call)."""
    name = None
    graph = None
    context = None


class Stage(exports.Stage):
    def configure(self, config) -> None:
        settings = dict(config)
        unknown = sorted(set(settings) - KNOWN_KEYS)
        if unknown:
            raise Err(f"unknown config key(s) {', '.join(unknown)}; this stage takes: model")
        name = settings.get("model")
        if not name:
            raise Err("config needs `model`: the ONNX file this stage runs")
        try:
            g = graph.load_by_name(name)
            context = g.init_execution_context()
        except Err as e:
            raise Err(f"cannot load model {name!r}: {_failure(e)[1]}")
        _Model.name, _Model.graph, _Model.context = name, g, context

    def process(self, inputs):
        if _Model.context is None:
            for _, t in inputs:
                t.__exit__(None, None, None)
            raise Err(StageError_BackendError("the stage was not configured"))
        try:
            # compute takes the handles (own<tensor>): the host moves them to the backend
            outputs = _Model.context.compute([(str(i), t) for i, (_, t) in enumerate(inputs)])
        except Err as e:
            code, message = _failure(e)
            if code == ErrorCode.INVALID_ARGUMENT:
                raise Err(StageError_InvalidInput(f"model {_Model.name!r}: {message}"))
            raise Err(StageError_BackendError(f"model {_Model.name!r}: {message}"))
        return StageOutput_Tensors(outputs)
