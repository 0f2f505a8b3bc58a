"""One wasi:nn program for every released version (tests/abi/test_nn_versions.py builds it
against each world nn-versions-*): today's compute on named tensors, or the earlier
releases' set-input, compute() and get-output, whichever the version it was built
against has."""
from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import errors, graph, inference, tensor

_context = []  # [graph, execution context] once load-file succeeded
STAGED = hasattr(inference.GraphExecutionContext, "set_input")  # 0.2.0-rc-2024-06-25 and -08-19


def _failure(e: Err) -> Err:
    with e.value as error:
        return Err(f"{error.code().name.lower().replace('_', '-')}: {error.data()}")


class NnVersions(exports.NnVersions):
    def load_file(self, path):
        with open(path, "rb") as f:
            model = f.read()
        try:
            g = graph.load([model], graph.GraphEncoding.ONNX, graph.ExecutionTarget.CPU)
            _context[:] = [g, g.init_execution_context()]
        except Err as e:
            raise _failure(e)

    def infer(self, input, dims, data, output):
        ctx = _context[1]
        t = tensor.Tensor(dims, tensor.TensorType.FP32, data)
        try:
            if STAGED:
                ctx.set_input(input, t)
                ctx.compute()
                out = ctx.get_output(output)
            else:
                outputs = ctx.compute([(input, t)])
                found = [t for name, t in outputs if name == output]
                if not found:
                    raise Err(f"invalid-argument: no output {output!r} among {[n for n, _ in outputs]}")
                out = found[0]
        except Err as e:
            raise _failure(e) if not isinstance(e.value, str) else e
        with out:
            return out.dimensions(), out.data()

    def make_error(self, message):
        try:
            error = errors.Error(errors.ErrorCode.RUNTIME_ERROR, message)
        except Exception:  # a version without the constructor
            return None
        with error:
            return f"{error.code().name.lower().replace('_', '-')}: {error.data()}"
