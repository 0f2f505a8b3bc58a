"""The data-flow operators the suite builds from source (guest/), once per content."""
from __future__ import annotations

import pathlib

from wasinn import build

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tests"
# the wasm-graph:processor ABI for the C operators (wasm_graph.h)
C_WASM_GRAPH = ROOT / "guest" / "c-wasm-graph"
# guest name -> the world it is built against
WORLDS = {"temperature": "wasinn:guest/operator-set", "operator-probe": "wasinn:guest/operator-probe"}


def operator_wasm(name: str) -> pathlib.Path:
    """guest/<name>, built as a standard component (no wasinn-only imports), cached."""
    return build.build_cached(build.guest_files(ROOT / "guest" / name), name=name, world=WORLDS[name],
                              cache_dir=CACHE, fastpath=False, progress=print)


def snapshot_wasm() -> pathlib.Path:
    """guest/snapshot with the labels and the composed EfficientNet-Lite0 built in."""
    from wasinn.apps.classify import composed_model
    files = {**build.guest_files(ROOT / "guest" / "snapshot"),
             "labels.txt": ROOT / "models" / "efficientnet-lite0" / "labels.txt",
             "model.onnx": composed_model(CACHE, print)}
    return build.build_cached(files, name="snapshot", world="wasinn:guest/snapshot-operator", cache_dir=CACHE,
                              fastpath=False, progress=print)


def js_operator_wasm() -> pathlib.Path:
    """guest/js-operator, built with componentize-js against Azure's map-impl world."""
    from support import guest_builds
    return guest_builds.js_component(ROOT / "guest" / "js-operator" / "app.js", name="js-operator",
                                     world="wasm-graph:processor/map-impl")


def format_wasm() -> pathlib.Path:
    """guest/format: Azure's format module in C (stb_image, vendored beside it, decodes)."""
    from support import guest_builds
    return guest_builds.c_component([ROOT / "guest" / "format" / "format.c"], name="format",
                                    world="wasm-graph:processor/map-impl", includes=(C_WASM_GRAPH,))


def hostile_operator_wasm() -> pathlib.Path:
    """guest/c-hostile-operator: a map whose results MQTT cannot carry, by command."""
    from support import guest_builds
    return guest_builds.c_component([ROOT / "guest" / "c-hostile-operator" / "hostile_operator.c"],
                                    name="hostile-operator", world="wasm-graph:processor/map-impl",
                                    includes=(C_WASM_GRAPH,))


def snapshot_c_wasm(model: pathlib.Path | None = None) -> pathlib.Path:
    """guest/snapshot-c: the snapshot map in C, with the labels and `model` (default: the
    composed EfficientNet-Lite0) built in: .incbin from a directory of links to them,
    which is hashed with the sources."""
    import os
    from support import guest_builds
    from wasinn.apps.classify import composed_model
    model = model or composed_model(CACHE, print)
    data = CACHE / "snapshot-c-data" / model.stem
    data.mkdir(parents=True, exist_ok=True)
    for name, target in (("model.onnx", model), ("labels.txt", ROOT / "models" / "efficientnet-lite0" / "labels.txt")):
        link = data / name
        if not link.is_symlink() or os.readlink(link) != str(target):
            tmp = data / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
    return guest_builds.c_component([ROOT / "guest" / "snapshot-c" / "snapshot.c"], name="snapshot-c",
                                    world="wasinn:guest/snapshot-map", cflags=(f"-DSNAPSHOT_DATA={data}",),
                                    includes=(C_WASM_GRAPH, ROOT / "guest" / "c-nn", data))
