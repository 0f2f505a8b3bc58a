"""Runs one message through a pipeline's stages, in one process.

    runner = GraphRunner(load_pipeline("pipelines/image-classification.yaml"), Host())
    outcome = runner.run(image)          # uint8 [H, W, 3]
    outcome.result                       # the JSON text the last stage made
    outcome.seconds                      # {"preprocess": 0.004, "inference": 0.021, ...}

Each map operation gets its own instance of its module's component (compiled once
per process, cached on disk), configured once. Tensors go from stage to stage as
wasi:nn handles: the host takes the `HostTensor`s one stage returns and hands the
same objects to the next stage, so tensor bytes are never copied between stages.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time

import numpy as np
from wasmtime.component import Variant

from .._bindings import WASINN_GUEST_STAGE
from ..errors import GuestTrap, WasinnError
from ..runtime import Host, Instance
from ..tensors import HostTensor
from .components import component_path
from .schema import Module, Pipeline

# The name of the tensor the source hands to the stages connected after it.
SOURCE_TENSOR = "image"
_CONFIGURE = f"{WASINN_GUEST_STAGE}#configure"
_PROCESS = f"{WASINN_GUEST_STAGE}#process"


# The characters of a failure's text kept: a guest's error case may say anything.
MAX_FAILURE_TEXT = 16384


class StageFailure(WasinnError):
    """One message failed in one stage; the service sends it to the dead-letter topic.

    `kind` is the stage's error case (invalid-input, backend-error), `trap` when the
    guest trapped, or `contract` when a stage handed on the wrong kind of output.
    """

    def __init__(self, stage: str, kind: str, message: str):
        if len(message) > MAX_FAILURE_TEXT:  # a guest's error text: into a log line and a dead letter
            message = f"{message[:MAX_FAILURE_TEXT]}... (cut: {len(message)} characters)"
        super().__init__(f"stage {stage!r} failed ({kind}): {message}")
        self.stage, self.kind, self.message = stage, kind, message


@dataclasses.dataclass
class Outcome:
    result: str                 # JSON text
    seconds: dict[str, float]   # per map operation
    value: object = None        # the result, parsed


def model_name(module: Module) -> str:
    """The name a module's model is registered under for `graph.load-by-name`: one per
    model file, so pipelines sharing a host never get each other's models."""
    return f"pipeline/{module.name}-{hashlib.sha256(module.config['model'].encode()).hexdigest()[:12]}"


class _Stage:
    def __init__(self, name: str, module: Module, instance: Instance, config: list[tuple[str, str]]):
        self.name, self.module, self.instance, self.config = name, module, instance, config
        self.configured = False

    def configure(self) -> None:
        result = self.instance.call(_CONFIGURE, self.config)
        if result.tag == "err":
            raise WasinnError(f"module {self.module.name!r} (line {self.module.line}) rejected its config: "
                              f"{result.payload}")
        self.configured = True

    def process(self, inputs: list[tuple[str, HostTensor]]) -> Variant:
        try:
            if not self.configured:  # first use, or a fresh instance after a trap
                self.configure()
            result = self.instance.call(_PROCESS, inputs)
        except GuestTrap as e:
            self.configured = False
            raise StageFailure(self.name, "trap", str(e)) from None
        if result.tag == "err":
            raise StageFailure(self.name, result.payload.tag, result.payload.payload)
        return result.payload


class GraphRunner:
    """The stages of `pipeline`, instantiated and configured in `host`."""

    def __init__(self, pipeline: Pipeline, host: Host, *, cache_dir: pathlib.Path | None = None):
        self.pipeline, self.limits = pipeline, host.limits
        cache = cache_dir or host.cache_dir
        if cache is None:
            raise WasinnError("GraphRunner needs a cache directory for the components it builds")
        for module in pipeline.modules.values():
            if "model" in module.config and model_name(module) not in host.models.names():
                host.models.register(model_name(module), module.config["model"])
        components = {}
        self.stages: dict[str, _Stage] = {}
        for name in pipeline.map_order():
            module = pipeline.modules[pipeline.operations[name].module]
            if module.name not in components:
                components[module.name] = host.load_component(component_path(module, cache, host.progress))
            self.stages[name] = _Stage(name, module, host.instantiate(components[module.name]),
                                       _guest_config(module))
        for stage in self.stages.values():
            stage.configure()

    def run(self, image: np.ndarray) -> Outcome:
        """One image through every stage; raises `StageFailure` naming the stage that failed."""
        p = self.pipeline
        outputs: dict[str, list[tuple[str, HostTensor]] | str] = {
            p.source.name: [(SOURCE_TENSOR, HostTensor.from_array(image))]}
        seconds = {}
        for name, stage in self.stages.items():
            inputs = []
            for before in p.inputs_of(name):
                handed = outputs[before]
                if isinstance(handed, str):
                    raise StageFailure(before, "contract", f"it returned its JSON result, but it is connected to "
                                                           f"{name!r}, which takes tensors")
                inputs += handed
            start = time.perf_counter()
            out = stage.process(inputs)
            seconds[name] = time.perf_counter() - start
            outputs[name] = out.payload
        (last,) = p.inputs_of(p.sink.name)
        result = outputs[last]
        if not isinstance(result, str):
            raise StageFailure(last, "contract", f"it returned tensors, but it is connected to the sink "
                                                 f"{p.sink.name!r}, which takes a JSON result")
        # json.loads holds the GIL throughout (the epoch ticker's, every other instance's):
        # 22 MB of small objects held it 1.8 s
        limit = self.limits.max_result_bytes
        # (a string of more characters holds more bytes: only other text is encoded to count them)
        if len(result) > limit or (not result.isascii() and len(result.encode()) > limit):
            raise StageFailure(last, "contract", f"its JSON result is over {limit} bytes of UTF-8 "
                                                 "(limit 'max-result-bytes', --max-result-bytes)")
        try:
            value = json.loads(result)
        except (ValueError, RecursionError) as e:
            raise StageFailure(last, "contract", f"its result is not JSON: {e}") from None
        return Outcome(result, seconds, value)

    def close(self) -> None:
        for stage in self.stages.values():
            stage.instance.close()


def _guest_config(module: Module) -> list[tuple[str, str]]:
    """The module's config as its guest sees it: a model by its registered name, labels
    by their text (guests never see host paths)."""
    config = []
    for key, value in module.config.items():
        if key == "model":
            value = model_name(module)
        elif key == "labels":
            value = pathlib.Path(value).read_text()
        config.append((key, value))
    return config
