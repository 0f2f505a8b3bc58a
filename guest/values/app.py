"""Gives back what it gets (see values.wit); tests call it with values right and wrong."""
import struct

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import graph, tensor


def _floats(data: bytes) -> tuple:
    return struct.unpack(f"<{len(data) // 4}f", data)


class Echo(exports.Echo):
    def echo_bool(self, v):
        return v

    echo_s8 = echo_u16 = echo_s64 = echo_f32 = echo_f64 = echo_char = echo_string = echo_bytes = echo_bool
    echo_color = echo_perms = echo_shape = echo_option = echo_points = echo_pair = echo_bool

    def echo_result(self, v):
        if isinstance(v, Err):
            raise v
        return v.value

    def score_list(self, v):
        return sum(v) / len(v) if v else 0.0

    def normalize(self, t):
        with t:
            dims, values = t.dimensions(), _floats(t.data())
        total = sum(values) or 1.0
        return tensor.Tensor(dims, tensor.TensorType.FP32, struct.pack(f"<{len(values)}f", *(v / total for v in values)))

    def total(self, t):
        return sum(_floats(t.data()))

    def load_graph(self, name):
        return graph.load_by_name(name)

    def forget(self, g):
        with g:
            pass
