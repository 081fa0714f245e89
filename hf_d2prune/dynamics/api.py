"""``train_dynamics``: train a model on a ``datasets.Dataset`` and add one column per dynamics score."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..arrays import missing_rows, require_columns
from ..errors import ColumnTypeError, InvalidParameterError, InvalidValuesError
from ..validation import check_fraction, check_positive_int, describe_rows
from .recorder import DEFAULT_SCORES, DynamicsRecorder, check_epochs, check_scores

logger = logging.getLogger(__name__)

__all__ = ["train_dynamics", "subset_rows"]


def subset_rows(labels: np.ndarray, fraction: float, *, stratify: bool = True, seed: int = 0) -> np.ndarray:
    """Sorted row ids of a seeded random subset of ``round(fraction · n)`` rows (at least 1).

    With ``stratify``, each class gets its proportional share (largest remainders get the
    leftover rows; ties broken by the seeded shuffle), so class balance is kept.
    """
    n = len(labels)
    size = max(1, int(np.floor(fraction * n + 0.5)))
    rng = np.random.default_rng(seed)
    if not stratify:
        return np.sort(rng.permutation(n)[:size])
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / n
    take = np.floor(exact).astype(np.int64)
    order = np.lexsort((rng.permutation(len(classes)), -(exact - take)))
    take[order[: size - int(take.sum())]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def _labels_and_classes(ds: Any, label: str) -> tuple[np.ndarray, Optional[int]]:
    import datasets
    import pyarrow as pa

    from ..arrays import column_array

    require_columns(ds, label)
    feature = ds.features[label]
    arrow_type = ds.data.schema.field(label).type
    if isinstance(feature, datasets.ClassLabel):
        labels, num_classes = column_array(ds, label, dtype=np.int64), feature.num_classes
    elif pa.types.is_integer(arrow_type):
        labels, num_classes = column_array(ds, label, dtype=np.int64), None
    elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        raise ColumnTypeError(
            f"label column '{label}' holds strings; cast it to class ids first: "
            f"ds = ds.class_encode_column('{label}')."
        )
    else:
        raise ColumnTypeError(f"label column '{label}' holds {arrow_type} values; integer class ids (or a ClassLabel) are needed.")
    bad = np.flatnonzero((labels < 0) | ((labels >= num_classes) if num_classes else False))
    if bad.size:
        raise InvalidValuesError(
            f"label column '{label}' has ids outside [0, {num_classes or 'C'}) in {describe_rows(bad)} "
            f"(e.g. {labels[bad[0]]}); drop unlabelled rows (ds.filter) before training."
        )
    return labels, num_classes


def _is_vector_column(feature: Any) -> bool:
    import datasets

    inner = getattr(feature, "feature", None)
    lists = tuple(getattr(datasets, name) for name in ("Sequence", "List", "LargeList") if hasattr(datasets, name))
    return isinstance(feature, lists) and isinstance(inner, datasets.Value) \
        and (inner.dtype.startswith("float") or inner.dtype.startswith("int"))


def _pixels(images: list, mode: str) -> "Any":
    """PIL images → float tensor (B, channels, H, W) in [0, 1], each image converted to ``mode``
    ("L": 1 channel, or "RGB"), so a dataset whose images differ in mode still stacks."""
    import torch

    _refuse_deep(images)
    arrays = [np.asarray(img if img.mode == mode else img.convert(mode), dtype=np.float32) / 255.0 for img in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ColumnTypeError(
            f"the images of one batch differ in size ({', '.join(str(s[:2]) for s in sorted(shapes))}); the pixels "
            f"path stacks them as they are: resize them first (ds.map), or pass processor= or collate_fn=.")
    batch = np.stack(arrays)
    batch = batch[:, None] if batch.ndim == 3 else batch.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch))


def _refuse_deep(images: list) -> None:
    """Raise for images of more than 8 bits per channel (PIL modes I, I;16, I;16B, F, ...)."""
    deep = sorted({img.mode for img in images if img.mode.startswith(("I", "F"))})
    if deep:
        raise ColumnTypeError(
            f"images of mode {', '.join(deep)} (16-bit or float pixels) have no fixed 0-255 range to scale from; "
            f"pass processor= or collate_fn= to turn them into model inputs.")


def _input_builder(ds: Any, inputs: Optional["str | Sequence[str]"], label: str, *, collate_fn: Optional[Callable],
                   tokenizer: Any, processor: Any, max_length: Optional[int]) -> tuple[Callable[[np.ndarray], Any], list[str], str]:
    """(row ids → model batch, the columns read, a description for provenance)."""
    import datasets
    import torch

    from ..arrays import embedding_matrix

    columns = [inputs] if isinstance(inputs, str) else list(inputs) if inputs is not None else None
    if columns is None:
        if tokenizer is not None:
            columns = ["text"]
        elif processor is not None:
            columns = ["image"]
        elif collate_fn is not None:
            columns = [c for c in ds.column_names if c != label]
        elif "embedding" in ds.column_names:
            columns = ["embedding"]
        else:
            raise InvalidParameterError(
                f"say which column(s) feed the model: inputs='...' (columns: {', '.join(ds.column_names)}); "
                f"e.g. inputs='embedding' for a head on frozen embeddings (ds.d2.embed first)."
            )
    require_columns(ds, *columns)
    source = ds.select_columns(columns)  # in the dataset's format: what a collate_fn gets

    if collate_fn is not None:
        return (lambda ids: collate_fn(source[ids.tolist()])), columns, "collate_fn"
    if len(columns) != 1:
        raise InvalidParameterError(f"inputs={columns} names several columns; pass collate_fn= to combine them.")
    column = columns[0]
    feature = ds.features[column]
    source = source.with_format(None)  # strings and PIL images, whatever format the dataset has
    if tokenizer is not None or processor is not None or isinstance(feature, datasets.Image):  # texts, images
        empty = missing_rows(ds, column)
        if empty.size:
            raise InvalidValuesError(
                f"column '{column}' is missing (None) in {describe_rows(empty)}; drop or fill those rows first "
                f"(ds.filter(lambda row: row['{column}'] is not None)).")
    if tokenizer is not None:
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise ColumnTypeError(f"column '{column}' holds {feature}; the tokenizer needs a text column (inputs='...').")

        def tokenize(ids: np.ndarray) -> Any:
            texts = source[ids.tolist()][column]
            return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        return tokenize, columns, "tokenizer"
    if processor is not None:
        def process(ids: np.ndarray) -> Any:
            images = [img.convert("RGB") for img in source[ids.tolist()][column]]
            return dict(processor(images=images, return_tensors="pt"))
        return process, columns, "processor"
    if isinstance(feature, datasets.Image):
        first = source[0][column]
        _refuse_deep([first])
        mode = "L" if first.mode in ("1", "L") else "RGB"  # grayscale stays 1 channel
        return (lambda ids: _pixels(source[ids.tolist()][column], mode)), columns, "pixels"
    if _is_vector_column(feature) or isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        if _is_vector_column(feature):
            matrix = torch.from_numpy(np.array(embedding_matrix(ds, column), dtype=np.float32))
        else:
            matrix = torch.from_numpy(np.asarray(source.with_format("numpy")[column], dtype=np.float32))
        return (lambda ids: matrix[torch.from_numpy(ids)]), columns, "tensor"
    raise ColumnTypeError(
        f"column '{column}' holds {feature}; pass tokenizer= (text), processor= (images) or collate_fn= "
        f"(anything) to turn it into model inputs."
    )


def _model_identity(model: Any) -> tuple[str, str]:
    """(fingerprint identity from the initial weights, a readable name for provenance)."""
    from ..embedding import _hash_module

    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or type(model).__name__
    return _hash_module(model), name


def train_dynamics(
    ds: Any,
    model: Any,
    *,
    label: str = "label",
    inputs: Optional["str | Sequence[str]"] = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: Any = None,
    scores: Sequence[str] = DEFAULT_SCORES,
    subset: Optional[float] = None,
    stratify: bool = True,
    match_steps: Optional[bool] = None,
    seed: int = 0,
    shuffle: bool = True,
    accelerator: Any = None,
    collate_fn: Optional[Callable] = None,
    tokenizer: Any = None,
    processor: Any = None,
    max_length: Optional[int] = None,
    eval_pass: bool = False,
    progress: bool = True,
    **score_options: Any,
):
    """Train ``model`` on ``ds`` and add one float32 column per training-dynamics score.

    The model is trained in place (cross-entropy, AdamW by default) with Accelerate — one
    process, or several under ``accelerate launch`` / ``torchrun`` (rows are sharded, results
    gathered by row id: every process returns the same dataset). Scores are accumulated online
    (see :mod:`hf_d2prune.dynamics.accumulators`; memory O(n × window)), each stored
    **higher = harder / more important**.

    Args:
        ds: the dataset (not modified).
        model: a transformers ``AutoModelFor{Sequence,Image}Classification`` (with ``tokenizer=``
            / ``processor=``), or any ``torch.nn.Module`` returning logits (a tensor, a dict with
            ``"logits"`` or an object with ``.logits``) — fed by ``collate_fn``, or directly from
            a vector column (``inputs="embedding"``: a head on frozen embeddings) or an image
            column (float pixels (B, C, H, W) in [0, 1]).
        label: integer / ClassLabel class column.
        inputs: column(s) read for the model (default: ``"text"`` with a tokenizer, ``"image"``
            with a processor, every non-label column with ``collate_fn``, else ``"embedding"``).
        epochs: training epochs (at least what windowed scores need, see :func:`required_epochs`).
        batch_size: global batch size, split across processes (with an ``accelerator`` of your own
            that does not split batches, the batch of each process).
        lr: learning rate of the default AdamW (weight decay 0).
        optimizer: your own torch optimizer over ``model.parameters()`` instead.
        scores: names from :data:`KNOWN_SCORES` (default forgetting, aum, el2n, entropy).
        subset: train on a seeded random fraction in (0, 1] of the rows only; the other rows get
            NaN and ``<score>_measured`` bool columns are added (``ds.d2.extrapolate`` fills them).
        stratify: draw the subset per class, in proportion.
        match_steps: with ``subset``, train with the smallest batch (≈ ``batch_size × subset``, a
            multiple of the number of processes) that gives an epoch over the subset as many
            optimizer steps as an epoch over all rows: the subset run then follows the full run's
            schedule, which windowed scores measure. With the full batch a 10% run takes 10× fewer
            steps, and Dynamic Uncertainty / TDDS from it can rank rows even *opposite* to a full
            run (benchmarks/RESULTS.md, score extrapolation). It costs as many steps as a full run,
            each on a tenth of the rows: a saving where per-row compute dominates the step.
            ``None`` (default): on when ``subset`` is given and ``dynamic_uncertainty`` or ``tdds``
            is requested.
        seed: seeds torch, the subset and the per-epoch shuffles (deterministic on CPU).
        shuffle: reshuffle rows each epoch (``False``: dataset order, for comparisons).
        accelerator: an ``accelerate.Accelerator`` (default: one with ``split_batches=True``).
        collate_fn: ``batch dict (ds[ids] of the input columns, in the dataset's format: lists
            unless you set one) → model input`` (a tensor, passed positionally, or a dict, passed as
            keyword arguments).
        tokenizer, processor: for transformers text / image models.
        max_length: tokenizer truncation length (default: the tokenizer's).
        eval_pass: record from a no-grad eval-mode pass after each epoch instead of the training
            forward passes (as the EL2N and Dynamic Uncertainty authors do; costs an extra pass).
        progress: progress bar (``datasets.disable_progress_bars()`` hides it too).
        **score_options: ``du_window`` (10), ``tdds_window`` (10), ``tdds_decay`` (0.9),
            ``el2n_epochs`` (10), ``grand_epochs`` (1), ``grand_bias`` (from the model).

    Returns:
        A new dataset with one ``float32`` column per score (replaced if present), plus
        ``<score>_measured`` columns when ``subset`` is given. Provenance step ``train_dynamics``.

    Raises:
        ColumnNotFoundError: ``label`` or an input column is missing.
        ColumnTypeError: string labels (use ``ds.class_encode_column``), unusable input column.
        InvalidParameterError: unknown score or option, too few epochs for a windowed score,
            ``subset`` outside (0, 1], bad sizes, a model with too few outputs.
        InvalidValuesError: labels out of range, a model output without logits, empty dataset.

    Example:
        >>> ds = ds.d2.embed("text")                                           # doctest: +SKIP
        >>> head = torch.nn.Linear(384, 2)                                     # doctest: +SKIP
        >>> ds = train_dynamics(ds, head, inputs="embedding", epochs=5, scores=["aum", "forgetting"])  # doctest: +SKIP
    """
    import torch

    from ..namespace import _add_columns
    from ..provenance import with_step
    from .loop import call_model, fit_and_record, last_linear, model_logits

    # --- validate everything before any training
    if len(ds) == 0:
        raise InvalidValuesError("the dataset is empty: nothing to train on.")
    if not isinstance(model, torch.nn.Module):
        raise InvalidParameterError(f"model must be a torch.nn.Module (e.g. a transformers AutoModelFor...Classification), got {type(model).__name__}.")
    names = check_scores(scores, score_options)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_fraction(lr, "lr", low=0.0, high=float("inf"), low_inclusive=False)
    check_epochs(names, score_options, epochs)
    if subset is not None:
        subset = check_fraction(subset, "subset", low=0.0, high=1.0, low_inclusive=False, high_inclusive=True)
    if match_steps is not None and not isinstance(match_steps, bool):
        raise InvalidParameterError(f"match_steps must be True, False or None (automatic), got {match_steps!r}.")
    if match_steps is None:
        match_steps = subset is not None and any(n in ("dynamic_uncertainty", "tdds") for n in names)
    seed = check_positive_int(seed, "seed", minimum=0)
    labels, num_classes = _labels_and_classes(ds, label)
    make_inputs, input_columns, input_kind = _input_builder(
        ds, inputs, label, collate_fn=collate_fn, tokenizer=tokenizer, processor=processor, max_length=max_length)
    if accelerator is None:
        from .loop import default_accelerator

        accelerator = default_accelerator()
    if getattr(accelerator, "gradient_accumulation_steps", 1) > 1:
        raise InvalidParameterError(
            f"the accelerator accumulates gradients over {accelerator.gradient_accumulation_steps} steps, but "
            f"train_dynamics takes an optimizer step every batch (each score is defined per step): pass an "
            f"Accelerator without gradient_accumulation_steps and raise batch_size instead.")
    if accelerator.split_batches and batch_size % accelerator.num_processes:
        raise InvalidParameterError(
            f"batch_size={batch_size} must be a multiple of the {accelerator.num_processes} processes "
            f"(each gets batch_size / processes rows of every global batch)."
        )
    rows = np.arange(len(ds)) if subset is None else subset_rows(labels, subset, stratify=stratify, seed=seed)
    step_batch = batch_size
    if match_steps and subset is not None:
        # As many steps per epoch as over all rows: ceil(len(rows) / b) == ceil(len(ds) / batch_size).
        processes = accelerator.num_processes
        steps = -(-len(ds) // batch_size)
        candidates = {max(processes, -(-b // processes) * processes)
                      for b in (len(rows) // steps, -(-len(rows) // steps))}
        # The batch whose step count comes closest (ties: the larger, cheaper batch).
        step_batch = min(candidates, key=lambda b: (abs(-(-len(rows) // b) - steps), -b))
        logger.info("subset of %d rows with batch %d: %d steps per epoch, as over all %d rows with batch %d",
                    len(rows), step_batch, -(-len(rows) // step_batch), len(ds), batch_size)

    identity, model_name = _model_identity(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # probe: logits present, enough classes (eval mode: no state changes)
            probe_ids = rows[:2]
            device = next(model.parameters()).device
            from accelerate.utils import send_to_device

            try:
                logits = model_logits(call_model(model, send_to_device(make_inputs(probe_ids), device)))
            except RuntimeError as err:  # e.g. a Linear(384, C) head fed 64-d vectors: say which input
                raise InvalidParameterError(
                    f"the model cannot take inputs {input_columns} as built ({input_kind}): {str(err).splitlines()[0]}. "
                    f"Check that the model's input size matches the column, or pass collate_fn=."
                ) from err
    finally:
        model.train(was_training)
    width = int(logits.shape[1])
    if num_classes is not None and width != num_classes:
        raise InvalidParameterError(
            f"the model outputs {width} logits but label column '{label}' has {num_classes} classes; build the "
            f"model with num_labels={num_classes}."
        )
    if labels.max() >= width:
        raise InvalidParameterError(
            f"label column '{label}' has class id {int(labels.max())} but the model outputs only {width} logits; "
            f"build the model with num_labels={int(labels.max()) + 1}."
        )
    if "grand" in names and "grand_bias" not in score_options:
        score_options = {**score_options, "grand_bias": last_linear(model).bias is not None}

    recorder = DynamicsRecorder(len(ds), width, names, **score_options)
    fit_and_record(model, make_inputs, labels, rows, recorder, epochs=epochs, batch_size=step_batch,
                   optimizer=optimizer, lr=lr, seed=seed, shuffle=shuffle, accelerator=accelerator,
                   eval_pass=eval_pass, progress=progress)

    results = recorder.results()
    columns: dict[str, np.ndarray] = dict(results)
    if subset is not None:
        measured = np.zeros(len(ds), dtype=bool)
        measured[rows] = True
        for name in names:
            columns[f"{name}_measured"] = measured & ~np.isnan(results[name])
    params = {
        "label": label, "inputs": input_columns, "input_kind": input_kind, "epochs": epochs, "batch_size": batch_size,
        "lr": lr if optimizer is None else None,
        "optimizer": type(optimizer).__name__ if optimizer is not None else "AdamW",
        "scores": list(names), "score_options": recorder.options, "subset": subset, "stratify": stratify,
        "match_steps": bool(match_steps and subset is not None),
        "subset_batch_size": step_batch if subset is not None else None,
        "seed": seed, "shuffle": shuffle, "eval_pass": bool(eval_pass), "num_processes": accelerator.num_processes,
    }
    # with the scores themselves: a tokenizer, collate_fn or optimizer of another run gives another fingerprint
    out = _add_columns(ds, columns, ("hf_d2prune.train_dynamics", identity, params, columns))
    return with_step(out, {
        "step": "train_dynamics", "output": list(names), "model": model_name, "model_class": type(model).__name__,
        "model_weights_hash": identity, "rows_trained": int(len(rows)), **params,
    })
