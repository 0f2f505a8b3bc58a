"""Echo exports for the fuzzer's tests (wit/fuzz.wit): two correct, five with a
marshalling bug planted on purpose."""
from wit_world import exports
from wit_world.imports import tensor

T = tensor.TensorType


def _read(t):
    with t:
        return t.dimensions(), t.ty(), t.data()


class FuzzEcho(exports.FuzzEcho):
    def echo(self, t):
        return tensor.Tensor(*_read(t))

    def echo_many(self, ts):
        return [self.echo(t) for t in ts]

    def echo_swapped_fp32(self, t):
        dims, ty, data = _read(t)
        if ty == T.FP32:
            data = b"".join(data[i:i + 4][::-1] for i in range(0, len(data), 4))
        return tensor.Tensor(dims, ty, data)

    def echo_lost_zero_axis(self, t):
        dims, ty, data = _read(t)
        return tensor.Tensor([d for d in dims if d != 0], ty, data)

    def echo_threshold(self, t):
        dims, ty, data = _read(t)
        return tensor.Tensor(dims, ty, data[:-1] if len(data) >= 65536 else data)

    def echo_wrong_tag(self, t):
        dims, ty, data = _read(t)
        return tensor.Tensor(dims, T.FP16 if ty == T.BF16 else ty, data)

    def echo_many_dropping(self, ts):
        return [self.echo(t) for t in ts][:2]
