import struct

from wit_world import exports
from wit_world.imports import graph, tensor


class Run(exports.Run):
    def run(self) -> None:
        g = graph.load_by_name("adder")  # the model the host registered under that name
        ctx = g.init_execution_context()
        a = tensor.Tensor([3], tensor.TensorType.FP32, struct.pack("<3f", 1, 2, 3))
        b = tensor.Tensor([3], tensor.TensorType.FP32, struct.pack("<3f", 10, 20, 30))
        for name, t in ctx.compute([("a", a), ("b", b)]):
            print(name, t.dimensions(), struct.unpack("<3f", t.data()))
