"""Publishing a pruned dataset: the Hub repository layout, written locally or pushed in one commit.

``save_for_hub`` and ``push_to_hub`` build the same folder::

    README.md                               the generated card (hf_d2prune.card.build_card)
    data/<split>-00000-of-0000N.parquet     the pruned rows (config "default")
    scores/<split>-00000-of-0000N.parquet   the full scored dataset (config "scores", optional)
    plots/score_kept_vs_dropped.png         kept-vs-dropped plots (when the full dataset is given)
    plots/retention_per_class.png

``save_for_hub`` moves it into ``local_dir`` when complete; ``push_to_hub`` uploads it as one
commit with :meth:`huggingface_hub.HfApi.create_commit`, so a reader of the repo never sees the
data without its card or the card without its data. The parquet shards are written the way
``datasets.Dataset.push_to_hub`` writes them (same file names, the features in the parquet schema
metadata, image/audio bytes embedded) and the card carries ``configs`` and ``dataset_info``, so
``datasets.load_dataset(repo_or_dir)`` returns the same rows and features.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .card import build_card, pipeline_columns, resolve_pruned
from .errors import InvalidParameterError, OutputExistsError
from .io import replace_atomically

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

__all__ = ["save_for_hub", "push_to_hub", "write_hub_layout", "OutputExistsError", "DEFAULT_MAX_SHARD_SIZE"]

DEFAULT_MAX_SHARD_SIZE = "500MB"  # datasets.config.MAX_SHARD_SIZE



def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str):
        raise InvalidParameterError(f"repo_id must be a string like 'user/name', got {type(repo_id).__name__}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise InvalidParameterError(f"invalid repo_id {repo_id!r}: {err} Use 'user/name' or 'org/name'.") from None


def _split_name(ds: "datasets.Dataset", split: Optional[str]) -> str:
    import re

    split = split or (str(ds.split) if ds.split is not None else "train")
    if not re.match(r"^\w+(\.\w+)*$", split):
        raise InvalidParameterError(f"split {split!r} is not a valid split name (letters, digits, '_', '.').")
    return split


def _write_parquet_shards(ds: "datasets.Dataset", folder: Path, split: str, max_shard_size: "int | str") -> int:
    """Write ``ds`` as ``folder/<split>-0000i-of-0000N.parquet`` like ``Dataset.push_to_hub``; return bytes written."""
    from datasets.features.features import require_decoding
    from datasets.table import embed_table_storage
    from datasets.utils.py_utils import convert_file_size_to_int

    folder.mkdir(parents=True, exist_ok=True)
    nbytes = ds._estimate_nbytes()
    num_shards = max(1, int(nbytes / convert_file_size_to_int(max_shard_size)) + 1)
    embed = any(require_decoding(f, ignore_decode_attribute=True) for f in ds.features.values())
    written = 0
    for index in range(num_shards):
        shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
        if embed:  # image/audio files referenced by path become bytes inside the parquet file
            shard = shard.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
            shard = shard.with_format(None)
        path = folder / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.to_parquet(str(path))
        written += path.stat().st_size
    return written


def _dataset_info(ds: "datasets.Dataset", config_name: str, split: str, download_size: int):
    from datasets import DatasetInfo
    from datasets.splits import SplitDict, SplitInfo

    nbytes = ds._estimate_nbytes()
    info = DatasetInfo(config_name=config_name, features=ds.features, splits=SplitDict(),
                       download_size=download_size, dataset_size=nbytes)
    info.splits.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=len(ds)))
    return info


def write_hub_layout(
    ds: "datasets.Dataset",
    folder: "str | Path",
    *,
    full: Optional["datasets.Dataset"] = None,
    keep: "float | int | None" = None,
    card: bool = True,
    include_scores: bool = False,
    scores_config: bool = False,
    split: Optional[str] = None,
    max_shard_size: "int | str" = DEFAULT_MAX_SHARD_SIZE,
    **card_kwargs: Any,
) -> list[str]:
    """Write the repository layout into an existing empty ``folder``; return the relative paths written.

    The building block of :func:`save_for_hub` and :func:`push_to_hub` (see their arguments);
    it writes in place, without the atomic move.
    """
    pruned, full = resolve_pruned(ds, full=full, keep=keep)
    if scores_config and full is None:
        raise InvalidParameterError(
            "scores_config=True pushes the full scored dataset: pass full=<the ranked dataset> "
            "(or pass the ranked dataset as ds with keep=)."
        )
    split = _split_name(pruned, split)
    folder = Path(folder)
    dropped = [] if include_scores else pipeline_columns(pruned)
    data = pruned.remove_columns(dropped) if dropped else pruned
    if len(data.column_names) == 0:
        raise InvalidParameterError("every column of ds was computed by hf_d2prune; pass include_scores=True.")
    infos = {"default": _dataset_info(data, "default", split,
                                      _write_parquet_shards(data, folder / "data", split, max_shard_size))}
    if scores_config:
        infos["scores"] = _dataset_info(full, "scores", split,
                                        _write_parquet_shards(full, folder / "scores", split, max_shard_size))
    if card:
        dataset_card = build_card(
            pruned, full=full, plots_dir=folder / "plots" if full is not None else None, split=split,
            dropped_columns=dropped, scores_config=scores_config, dataset_infos=infos, **card_kwargs,
        )
        dataset_card.save(folder / "README.md")
    return sorted(str(p.relative_to(folder)).replace(os.sep, "/") for p in folder.rglob("*") if p.is_file())


def save_for_hub(
    ds: "datasets.Dataset",
    local_dir: "str | os.PathLike",
    *,
    full: Optional["datasets.Dataset"] = None,
    keep: "float | int | None" = None,
    overwrite: bool = False,
    card: bool = True,
    include_scores: bool = False,
    scores_config: bool = False,
    license: Optional[str] = None,
    source: Optional[str] = None,
    source_revision: Optional[str] = None,
    pretty_name: Optional[str] = None,
    split: Optional[str] = None,
    max_shard_size: "int | str" = DEFAULT_MAX_SHARD_SIZE,
    **card_kwargs: Any,
) -> Path:
    """Write exactly the repository a :func:`push_to_hub` would create, into ``local_dir``, for review.

    Parquet under ``data/`` (and ``scores/``), ``README.md`` with the card, PNG plots under
    ``plots/``. ``datasets.load_dataset(local_dir, split=...)`` loads the rows back with the same
    features (ClassLabel names and fixed-length embedding sequences included).

    Args:
        ds: the pruned dataset, or the full ranked dataset together with ``keep``.
        local_dir: output folder. It must not exist or be empty, unless ``overwrite=True``.
        full: the full ranked dataset ``ds`` was pruned from (plots, per-class retention, budgets).
        keep: prune ``ds`` here (``ds`` is then the full ranked dataset).
        overwrite: replace an existing non-empty ``local_dir`` (its old content is removed only
            after the new layout is complete).
        card: write ``README.md`` and the plots (``False``: data files only).
        include_scores: keep the embedding/score/rank columns in ``data/`` (default: dropped,
            the data has the source's columns only).
        scores_config: also write the full scored dataset as the config ``scores`` (needs ``full``).
        license, source, source_revision, pretty_name, **card_kwargs: passed to
            :func:`hf_d2prune.card.build_card`.
        split: split name (default ``ds.split`` or ``train``).
        max_shard_size: parquet shard size, as in ``Dataset.push_to_hub``.

    Returns:
        The absolute path of ``local_dir``.

    Raises:
        OutputExistsError: ``local_dir`` is not empty and ``overwrite`` is False (nothing is written).
        InvalidParameterError: no license known (``license=``), ``scores_config`` without ``full``, ...

    Example:
        >>> save_for_hub(small, "out/sms-d2-30", full=ranked, license="cc-by-4.0")   # doctest: +SKIP
        >>> datasets.load_dataset("out/sms-d2-30", split="train")                     # doctest: +SKIP
    """
    out = Path(local_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"local_dir {str(out)!r} is a file; choose a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"local_dir {str(out)!r} exists and is not empty; pass overwrite=True to replace it, or choose another folder."
        )
    replace_atomically(out, lambda tmp: write_hub_layout(
        ds, tmp, full=full, keep=keep, card=card, include_scores=include_scores, scores_config=scores_config,
        split=split, max_shard_size=max_shard_size, license=license, source=source,
        source_revision=source_revision, pretty_name=pretty_name, **card_kwargs))
    logger.info("wrote the Hub layout to %s", out)
    return out


def push_to_hub(
    ds: "datasets.Dataset",
    repo_id: str,
    *,
    full: Optional["datasets.Dataset"] = None,
    keep: "float | int | None" = None,
    card: bool = True,
    include_scores: bool = False,
    scores_config: bool = False,
    private: Optional[bool] = None,
    token: "str | bool | None" = None,
    commit_message: Optional[str] = None,
    commit_description: Optional[str] = None,
    revision: Optional[str] = None,
    create_pr: bool = False,
    license: Optional[str] = None,
    source: Optional[str] = None,
    source_revision: Optional[str] = None,
    pretty_name: Optional[str] = None,
    split: Optional[str] = None,
    max_shard_size: "int | str" = DEFAULT_MAX_SHARD_SIZE,
    **card_kwargs: Any,
):
    """Push a pruned dataset and its generated card to a Hub dataset repo, in one commit.

    The repo is created if needed (``HfApi.create_repo``, before any local work, so a missing or
    invalid token fails fast with huggingface_hub's own error). The layout of :func:`save_for_hub`
    is written to a temporary folder and committed with ``HfApi.create_commit``; old shards of the
    same split (``data/<split>-*``, ``scores/<split>-*``) that the new upload does not overwrite
    are deleted in the same commit, and ``README.md`` is replaced by the card. The temporary
    folder is removed whether the push succeeds or fails. The token is passed to huggingface_hub
    only: it is never logged nor written to any file.

    Args:
        ds, full, keep, card, include_scores, scores_config, license, source, source_revision,
            pretty_name, split, max_shard_size, **card_kwargs: as in :func:`save_for_hub`.
        repo_id: ``user/name`` or ``org/name``; validated before any work.
        private: create the repo private (only applies when it is created).
        token: Hub token; default: the stored login / ``HF_TOKEN``.
        commit_message, commit_description, revision, create_pr: as in ``HfApi.create_commit``.

    Returns:
        ``huggingface_hub.CommitInfo`` of the commit.

    Raises:
        InvalidParameterError: invalid ``repo_id``, no license known, ``scores_config`` without ``full``.
        huggingface_hub errors (unchanged): not logged in, no write access, network failures.

    Example:
        >>> small.d2.push_to_hub("me/sms-d2-30", full=ranked, license="cc-by-4.0")   # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_repo_id(repo_id)
    pruned, full = resolve_pruned(ds, full=full, keep=keep)
    if scores_config and full is None:
        raise InvalidParameterError("scores_config=True pushes the full scored dataset: pass full= (or keep=).")
    split = _split_name(pruned, split)
    if card:  # fail on a missing license before creating a repo or writing files
        from .card import _resolve_license

        license = _resolve_license(license, pruned, full)

    api = HfApi(token=token, library_name="hf_d2prune")
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    repo_id = getattr(repo_url, "repo_id", None) or repo_id
    with tempfile.TemporaryDirectory(prefix="hf_d2prune-push-") as tmp:
        folder = Path(tmp)
        paths = write_hub_layout(pruned, folder, full=full, card=card, include_scores=include_scores,
                                 scores_config=scores_config, split=split, max_shard_size=max_shard_size,
                                 license=license, source=source, source_revision=source_revision,
                                 pretty_name=pretty_name, repo_id=repo_id, **card_kwargs)
        existing = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
        stale = [p for p in existing
                 if p not in paths and (p.startswith(f"data/{split}-") or p.startswith(f"scores/{split}-"))]
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p in paths]
        operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
        message = commit_message or _commit_message(pruned)
        logger.info("pushing %d files (%d stale deleted) to dataset repo %s", len(paths), len(stale), repo_id)
        info = api.create_commit(repo_id, operations=operations, commit_message=message,
                                 commit_description=commit_description, repo_type="dataset",
                                 revision=revision, create_pr=create_pr)
    logger.info("pushed %d rows to %s", len(pruned), getattr(info, "commit_url", repo_id))
    return info


def _commit_message(pruned: "datasets.Dataset") -> str:
    from .provenance import read_provenance

    prune = next((s for s in reversed(read_provenance(pruned)) if s.get("step") == "prune"), None)
    if prune is None:
        return f"Upload {len(pruned)} rows with hf_d2prune"
    return (f"Upload {prune['rows']}-row coreset of {prune['source_rows']} rows "
            f"({prune['rank_column']}, keep={prune['keep']!r}) with hf_d2prune")
