"""Loading datasets by name for the command line, and writing outputs atomically."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from .builtin import BUILTIN_DATASETS, load_builtin
from .errors import InvalidParameterError, InvalidValuesError, OutputExistsError

logger = logging.getLogger(__name__)

__all__ = ["load_any", "save_atomic", "replace_atomically"]

_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def load_any(source: str, *, split: str = "train", config: Optional[str] = None, revision: Optional[str] = None):
    """Load a ``datasets.Dataset`` from a built-in name, a ``save_to_disk`` folder, a data file or a Hub id.

    Args:
        source: ``sms_spam`` / ``20newsgroups`` / ``digits`` / ``fashion_mnist`` (built in, offline),
            a directory written by ``Dataset.save_to_disk``, a ``.csv/.tsv/.json/.jsonl/.parquet/.txt``
            file, or a dataset id on the Hugging Face Hub (``user/name``).
        split: which split to load.
        config: Hub dataset configuration name.
        revision: Hub revision.
    """
    import datasets

    if source in BUILTIN_DATASETS:
        return load_builtin(source, split=split)
    path = Path(source)
    saved_markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    if path.is_dir() and any((path / marker).exists() for marker in saved_markers):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise InvalidParameterError(f"'{source}' has splits {', '.join(loaded)}; got --split {split}.")
            loaded = loaded[split]
        return loaded
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise InvalidParameterError(f"cannot read '{source}': use one of {', '.join(_FILE_BUILDERS)}.")
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except ValueError as err:
            if "corresponds to no data" not in str(err):
                raise
            raise InvalidValuesError(f"'{source}' holds no rows: there is nothing to prune.") from None
    if path.suffix.lower() in _FILE_BUILDERS or source.startswith((".", "/", "~")) or path.is_dir():
        # Looks like a local path, so do not fall through to a confusing Hub lookup.
        what = "folder has no Dataset.save_to_disk files" if path.is_dir() else "file or folder does not exist"
        raise InvalidParameterError(
            f"cannot load '{source}': that {what}. Pass a built-in name ({', '.join(BUILTIN_DATASETS)}), a "
            f"save_to_disk folder, a data file ({', '.join(_FILE_BUILDERS)}) or a Hub dataset id."
        )
    return datasets.load_dataset(source, config, split=split, revision=revision)


def replace_atomically(out_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary folder beside ``out_dir``, then move it into place.

    An interrupted or failed write leaves any earlier content of ``out_dir`` intact and removes
    the temporary folder; a completed one replaces ``out_dir`` whole.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {str(out)!r} is a file; choose a folder (the file is left as it is).")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    backup = None
    try:
        write(tmp)
        if out.exists():
            backup = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(backup)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None and backup.exists() and not out.exists():
            backup.rename(out)  # the swap failed half-way: put the earlier output back
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return out


def save_atomic(ds, out_dir: str | os.PathLike) -> Path:
    """``ds.save_to_disk(out_dir)``, written to a temporary folder beside it and moved into place.

    An interrupted or failed save leaves any earlier content of ``out_dir`` intact.
    """
    out = replace_atomically(out_dir, lambda tmp: ds.save_to_disk(str(tmp)))
    logger.info("saved %d rows to %s", len(ds), out)
    return out
