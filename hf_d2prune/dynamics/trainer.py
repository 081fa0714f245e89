"""Training dynamics from a transformers ``Trainer`` run, in two lines.

A callback alone cannot see per-example logits, so the hook is a small ``Trainer`` mixin that
overrides ``compute_loss``: it pops a row-id column from the batch, lets the parent compute
the loss and outputs, gathers (row ids, logits, labels) across processes with
``accelerator.gather_for_metrics`` (when there are several) and feeds the callback's
:class:`DynamicsRecorder`. The row-id column is added to the model's signature columns, so it
survives ``remove_unused_columns=True``. With the Trainer's own collators and samplers the
dataloader reads the ids once, as an array, and hands each row its id as an int (fetching the
column with every batch costs ``datasets`` a tensor or a Python object per row). Evaluation
batches (model in eval mode) are not recorded.

Example:
    >>> from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids   # doctest: +SKIP
    >>> dynamics = DynamicsCallback(scores=["aum", "forgetting"])                        # doctest: +SKIP
    >>> trainer = DynamicsTrainer(model=model, args=args, train_dataset=add_row_ids(train),
    ...                           dynamics=dynamics)                                     # doctest: +SKIP
    >>> trainer.train()                                                                  # doctest: +SKIP
    >>> train = dynamics.to_dataset(train)         # + "aum", "forgetting" columns      # doctest: +SKIP

For a Trainer subclass of your own (e.g. ``SFTTrainer``): ``with_dynamics(MyTrainer)``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from ..errors import InvalidParameterError, InvalidValuesError
from .recorder import DEFAULT_SCORES, DynamicsRecorder, check_scores

__all__ = ["ROW_ID_COLUMN", "add_row_ids", "DynamicsCallback", "DynamicsTrainerMixin", "DynamicsTrainer", "with_dynamics"]

ROW_ID_COLUMN = "d2_row_id"


def add_row_ids(ds: Any, column: str = ROW_ID_COLUMN) -> Any:
    """Return ``ds`` with an int64 column of row positions 0..n−1 (the ids the recorder keys on)."""
    if column in ds.column_names:
        return ds
    return ds.add_column(column, np.arange(len(ds), dtype=np.int64))


class DynamicsCallback(TrainerCallback):
    """Holds the recorder of a Trainer run and tracks the epoch; writes scores back as columns.

    Args:
        scores: names from :data:`KNOWN_SCORES`.
        n_rows: rows of the dataset the row ids index (default: ``len(trainer.train_dataset)``).
        row_id_column: the column added by :func:`add_row_ids`.
        **score_options: as for :class:`DynamicsRecorder`.
    """

    def __init__(self, scores: Sequence[str] = DEFAULT_SCORES, *, n_rows: Optional[int] = None,
                 row_id_column: str = ROW_ID_COLUMN, **score_options: Any):
        self.scores = check_scores(scores, score_options)
        if "grand" in self.scores:
            raise InvalidParameterError("'grand' is not supported from a Trainer run (no penultimate features); use train_dynamics.")
        self.score_options = score_options
        self.n_rows = n_rows
        self.row_id_column = row_id_column
        self.recorder: Optional[DynamicsRecorder] = None
        self.epoch = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch = int(math.floor(state.epoch + 1e-6)) if state.epoch else 0

    def record(self, row_ids: Any, logits: Any, labels: Any) -> None:
        if self.recorder is None:
            if self.n_rows is None:
                raise InvalidParameterError("DynamicsCallback needs n_rows (the length of the training dataset).")
            self.recorder = DynamicsRecorder(self.n_rows, int(logits.shape[-1]), self.scores, **self.score_options)
        self.recorder.update(row_ids, logits, labels, self.epoch)

    def results(self) -> dict[str, np.ndarray]:
        """Score name → float32 array over the row ids (NaN for rows never trained on)."""
        if self.recorder is None:
            raise InvalidValuesError("no training batch was recorded yet: call trainer.train() first.")
        return self.recorder.results()

    def to_dataset(self, ds: Any) -> Any:
        """Return ``ds`` (the dataset the row ids index) with one float32 column per score."""
        from ..namespace import _add_columns
        from ..provenance import with_step

        results = self.results()
        if len(ds) != self.recorder.n_rows:
            raise InvalidValuesError(
                f"the dataset has {len(ds)} rows but the recorded row ids index {self.recorder.n_rows}; pass the "
                f"dataset you trained on (row ids from add_row_ids)."
            )
        columns = {name: values for name, values in results.items()}
        params = {"scores": list(self.scores), "score_options": self.recorder.options, "epochs": self.epoch + 1}
        out = _add_columns(ds.remove_columns([self.row_id_column]) if self.row_id_column in ds.column_names else ds,
                           columns, ("hf_d2prune.trainer_dynamics", params, self.recorder.n_rows))
        return with_step(out, {"step": "train_dynamics", "output": list(self.scores), "source": "transformers.Trainer", **params})


class DynamicsTrainerMixin:
    """Mixin for a ``transformers.Trainer`` class: records dynamics from every training batch.

    Takes ``dynamics=DynamicsCallback(...)`` as an extra constructor argument.
    """

    def __init__(self, *args: Any, dynamics: DynamicsCallback, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dynamics = dynamics
        if dynamics.n_rows is None and self.train_dataset is not None:
            dynamics.n_rows = len(self.train_dataset)
        self.add_callback(dynamics)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.dynamics.row_id_column not in self._signature_columns:
            self._signature_columns.append(self.dynamics.row_id_column)

    def _remove_unused_columns(self, dataset: Any, description: Optional[str] = None) -> Any:
        dataset = super()._remove_unused_columns(dataset, description=description)
        column = self.dynamics.row_id_column
        if column in dataset.column_names and _collates_plain_ids(self.data_collator) and _samples_by_index(self.args):
            ids = dataset.select_columns([column]).with_format("numpy")[:][column]
            return _RowsWithIds(dataset.remove_columns([column]), np.asarray(ids, dtype=np.int64), column)
        return dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        row_ids = inputs.pop(self.dynamics.row_id_column, None)
        if row_ids is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        label_name = next((n for n in (self.label_names or []) if n in inputs), "labels")
        if label_name not in inputs:
            raise InvalidValuesError(f"the training batch has no '{label_name}'; dynamics need the labels.")
        labels = inputs[label_name]
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        from .loop import model_logits

        logits = model_logits(outputs).detach()
        if self.accelerator.num_processes > 1:  # every process's rows, the padding duplicates dropped
            row_ids, logits, labels = self.accelerator.gather_for_metrics((row_ids, logits, labels))
        self.dynamics.record(row_ids, logits, labels)
        return (loss, outputs) if return_outputs else loss


class _RowsWithIds(torch.utils.data.Dataset):
    """The rows of a dataset (the row-id column removed), each with its id from ``ids`` set under
    ``column`` as a plain int: what the dataloader fetches instead of the row-id column.

    Fetching that column with every batch costs ``datasets`` 50-170 µs per 64 rows (a tensor per
    row under a torch format, a Python object otherwise), 2-8% of the Trainer's step of a small
    model; setting ints from an array read once costs a few microseconds.
    """

    def __init__(self, rows: Any, ids: np.ndarray, column: str):
        self.rows, self.ids, self.column = rows, ids, column

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        row[self.column] = int(self.ids[index])
        return row

    def __getitems__(self, indices: list) -> list:
        fetch = getattr(self.rows, "__getitems__", None)
        rows = fetch(indices) if fetch is not None else [self.rows[i] for i in indices]
        for row, row_id in zip(rows, self.ids[indices].tolist()):
            row[self.column] = row_id
        return rows


def _samples_by_index(args: Any) -> bool:
    """Whether the Trainer's sampler needs only the dataset's length (random or sequential order);
    grouping by length reads the dataset's columns, so its rows stay a ``datasets.Dataset``."""
    strategy = getattr(args, "train_sampling_strategy", "random")
    return strategy in ("random", "sequential") and not getattr(args, "group_by_length", False)


def _collates_plain_ids(collator: Any) -> bool:
    """Whether ``collator`` makes a tensor of per-row ints itself: the Trainer's defaults do (a
    collator of the user's own may expect the row id as the dataset's format makes it)."""
    from transformers import DataCollatorWithPadding, DefaultDataCollator, default_data_collator

    return collator is default_data_collator or isinstance(collator, (DefaultDataCollator, DataCollatorWithPadding))


def with_dynamics(trainer_class: type) -> type:
    """A subclass of ``trainer_class`` (a ``Trainer`` subclass) with :class:`DynamicsTrainerMixin`."""
    return type(f"Dynamics{trainer_class.__name__}", (DynamicsTrainerMixin, trainer_class), {})


class DynamicsTrainer(DynamicsTrainerMixin, Trainer):
    """``transformers.Trainer`` that records training dynamics (pass ``dynamics=DynamicsCallback(...)``)."""
