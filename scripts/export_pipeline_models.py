#!/usr/bin/env python3
"""Writes pipelines/models/efficientnet-lite0-preprocess.onnx: the image front of the
bundled classifier (uint8 [H, W, 3] -> float32 [1, 3, 224, 224]) as a model of its own,
so the example pipeline can run preprocessing and the network as separate stages.

It is cut out of `wasinn.apps.classify.composed_model()` with onnx's extractor, so it is
the classifier's own front, not a second implementation of it.

    python scripts/export_pipeline_models.py
"""
from __future__ import annotations

import pathlib
import sys
import tempfile

import onnx
import onnx.utils

from wasinn.apps import classifier_model
from wasinn.apps.classify import composed_model

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "pipelines" / "models" / "efficientnet-lite0-preprocess.onnx"
BASE = ROOT / "models" / "efficientnet-lite0" / "model.onnx"


def main() -> int:
    network_input = onnx.load(BASE, load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        composed = composed_model(pathlib.Path(tmp), lambda m: print(m, file=sys.stderr))
        onnx.utils.extract_model(str(composed), str(OUT), [classifier_model.IMAGE], [network_input])
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
