"""A real KServe model server (the `kserve` package's ModelServer, the Open Inference
Protocol v2 over HTTP) hosting ONNX models on onnxruntime, for the remote-backend tests
and benchmark. It runs in its own environment, .venv-kserve (scripts/setup-kserve.sh):

    .venv-kserve/bin/python tests/support/kserve_server.py PORT NAME=MODEL.onnx [NAME=MODEL.onnx ...]

Each model is served as /v2/models/NAME; gRPC is off.
"""
import sys
import uuid

import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import from_np_dtype

# onnxruntime's element type names -> the protocol's datatypes.
DATATYPES = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64",
             "tensor(bfloat16)": "BF16", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
             "tensor(int32)": "INT32", "tensor(int64)": "INT64", "tensor(bool)": "BOOL",
             "tensor(string)": "BYTES"}


def _metadata(args) -> list[dict]:
    return [{"name": a.name, "datatype": DATATYPES.get(a.type, a.type),
             "shape": [d if isinstance(d, int) else -1 for d in a.shape]} for a in args]


class OnnxModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.session = None

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # the tests share two cores with the client
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def get_input_types(self) -> list[dict]:
        return _metadata(self.session.get_inputs())

    def get_output_types(self) -> list[dict]:
        return _metadata(self.session.get_outputs())

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, feeds)
        outputs = [InferOutput(n, list(v.shape), from_np_dtype(v.dtype), data=v) for n, v in zip(names, values)]
        return InferResponse(payload.id or str(uuid.uuid4()), self.name, outputs,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)


def main(argv: list[str]) -> None:
    port, specs = int(argv[0]), argv[1:]
    models = []
    for spec in specs:
        name, _, path = spec.partition("=")
        model = OnnxModel(name, path)
        model.load()
        models.append(model)
    ModelServer(http_port=port, enable_grpc=False, workers=1, grace_period=1).start(models)


if __name__ == "__main__":
    main(sys.argv[1:])
