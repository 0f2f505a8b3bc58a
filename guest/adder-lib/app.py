import struct

from componentize_py_types import Err
from wit_world import WitWorld
from wit_world.imports import graph, tensor


class WitWorld(WitWorld):
    def add(self, a: list[float], b: list[float]) -> list[float]:
        if len(a) != len(b):  # the model would broadcast a list of 1 to the other's length
            raise Err(f"add takes two lists of one length, got {len(a)} and {len(b)} values")
        try:
            ctx = graph.load_by_name("adder").init_execution_context()
            inputs = [(name, tensor.Tensor([len(v)], tensor.TensorType.FP32, struct.pack(f"<{len(v)}f", *v)))
                      for name, v in (("a", a), ("b", b))]
            [(_, total)] = ctx.compute(inputs)
        except Err as e:  # a wasi:nn error becomes this function's own err(string)
            raise Err(f"{e.value.code().name}: {e.value.data()}")
        return list(struct.unpack(f"<{len(a)}f", total.data()))
