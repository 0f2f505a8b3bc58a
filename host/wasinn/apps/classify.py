"""The bundled image classifier, end to end: `wasinn classify` and `ImageClassifier`.

    from wasinn.apps.classify import ImageClassifier, load_image
    clf = ImageClassifier()                       # builds/caches the component on first use
    [preds] = clf.classify([load_image("cat.png")], top=3)

The component (guest/classifier) gets each photo as a uint8 RGB tensor handle, so no
pixel crosses the boundary as a `list<u8>`; the model it runs (models/efficientnet-lite0
with the preprocessing front of `classifier_model`) does the crop, resize and softmax.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile

import numpy as np
from wasmtime.component import Variant

from .. import resources
from .._bindings import WASINN_GUEST_IMAGE_CLASSIFIER_WORLD
from ..build import build_cached
from ..compile_cache import IdentityMemo
from ..digests import sha256
from ..errors import WasinnError
from ..files import write_atomic
from ..runtime import Host, Progress

MODEL_NAME = "efficientnet-lite0"
_MODEL_DIR = "models/efficientnet-lite0"
_GUEST_DIR = "guest/classifier"
_COMPOSER = pathlib.Path(__file__).with_name("classifier_model.py")


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decodes a PNG/JPEG/... into uint8 RGB [height, width, 3]; grayscale, palette
    and alpha images are converted to RGB."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise WasinnError(f"no such image: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise WasinnError(f"cannot decode image {path}: {e}") from None


def _digest(*parts: bytes) -> str:
    h = sha256()
    for p in parts:
        h.update(sha256(p).digest())
    return h.hexdigest()[:20]


def composed_model(cache_dir: pathlib.Path, progress: Progress) -> pathlib.Path:
    """The bundled network with its preprocessing front (built once, cached by content)."""
    base_path = resources.path(_MODEL_DIR) / "model.onnx"
    # Reading and hashing the 18 MB network cost ~25 ms of every run: its digest is
    # remembered under the inputs' file identities.
    known = IdentityMemo(cache_dir / "models" / "by-stat")
    name = known.get(base_path, _COMPOSER)
    if name is not None and (cache_dir / "models" / name).is_file():
        return cache_dir / "models" / name
    base = base_path.read_bytes()
    out = cache_dir / "models" / f"{MODEL_NAME}-classifier-{_digest(base, _COMPOSER.read_bytes())}.onnx"
    if not out.is_file():
        progress(f"composing the classifier model from {_MODEL_DIR} (once)...")
        from . import classifier_model  # imports onnx (~10 MB): only when composing
        write_atomic(out, classifier_model.compose(base))
    known.put(out.name, base_path, _COMPOSER)
    return out


def classifier_component(cache_dir: pathlib.Path, progress: Progress, *, embed_model: bool = True) -> pathlib.Path:
    """guest/classifier built into a component, with the labels and (by default) the
    composed model inside it; rebuilt only when one of its inputs changes."""
    files = {"app.py": resources.path(_GUEST_DIR) / "app.py",
             "labels.txt": resources.path(_MODEL_DIR) / "labels.txt"}
    if embed_model:
        files["model.onnx"] = composed_model(cache_dir, progress)
    # Only the embedded model links the bulk shim (its 18.6 MB pass through graph.load
    # once, which componentize-py would leak); without it the component runs on any
    # wasi:nn host.
    return build_cached(files, name="classifier-embedded" if embed_model else "classifier",
                        world=WASINN_GUEST_IMAGE_CLASSIFIER_WORLD, cache_dir=cache_dir, fastpath=embed_model,
                        progress=progress)


class ImageClassifier:
    """The classifier component, instantiated once and kept warm.

    Args:
        host: the `Host` to run in (a new one by default).
        component: a classifier component to use instead of the bundled one.
        model: the name of a model registered in `host.models` to load by name; None
            means the bundled model, which wasinn registers as `efficientnet-lite0`.
        embedded: run the bundled component with the model built into it (loaded with
            `graph.load`, as an atomic deploy would) instead of loading it by name. The
            component is then twice the size and each instance holds the model's bytes.
    """

    def __init__(self, host: Host | None = None, *, component: str | os.PathLike | None = None,
                 model: str | None = None, embedded: bool = False):
        self.host = host or Host()
        progress = self.host.progress
        cache = self.host.cache_dir or pathlib.Path(tempfile.gettempdir()) / "wasinn"
        if not embedded and model is None:
            model = MODEL_NAME
            if MODEL_NAME not in self.host.models.names():
                self.host.models.register(MODEL_NAME, composed_model(cache, progress))
        path = component or classifier_component(cache, progress, embed_model=embedded)
        self.instance = self.host.instantiate(self.host.load_component(path))
        self._unwrap(self.instance.call("use-model", Variant("embedded") if embedded else Variant("named", model)))

    @staticmethod
    def _unwrap(result: Variant):
        if result.tag == "err":
            err = result.payload
            detail = err.payload
            message = detail if isinstance(detail, str) else detail.message
            raise WasinnError(f"{err.tag}: {message}")  # the classifier's own typed error
        return result.payload

    def classify(self, images: list[np.ndarray], top: int = 5) -> list[list[Prediction]]:
        """The `top` most likely classes of each uint8 RGB [height, width, 3] image."""
        if top < 1:
            raise WasinnError(f"--top must be at least 1, got {top}")
        batches = self._unwrap(self.instance.call("classify-batch", list(images), top))
        return [[Prediction(p.label, p.index, p.score) for p in preds] for preds in batches]
