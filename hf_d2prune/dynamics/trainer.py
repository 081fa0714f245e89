"""Training dynamics from a transformers ``Trainer`` run, in two lines.

A callback alone cannot see per-example logits, so the hook is a small ``Trainer`` mixin that
overrides ``compute_loss``: it pops a row-id column from the batch, lets the parent compute
the loss and outputs, gathers (row ids, logits, labels) across processes (when there are
several; the padding rows that even out the last batch are dropped) and feeds the callback's
:class:`DynamicsRecorder`. The row-id column is added to the model's signature columns, so it
survives ``remove_unused_columns=True``. With the Trainer's own collators (and any of its
sampling strategies) the dataloader reads the ids once, as an array, and hands each row its id as
an int (fetching the column with every batch costs ``datasets`` a tensor or a Python object per
row). Evaluation batches (model in eval mode) are not recorded.

Checkpoints carry the recorder: every checkpoint the Trainer saves gets a ``d2_dynamics.npz``
beside the model, and ``trainer.train(resume_from_checkpoint=...)`` continues recording from it,
so a resumed run scores as the uninterrupted one; ``DynamicsRecorder.load(path).results()`` gives a
checkpoint's scores so far. The first training batch is checked at once
(ids and labels in range), and mistakes that would otherwise only show after training — no
row-id column, the callback on a plain ``Trainer``, too few epochs for a score — raise before
the first step.

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

import logging
import math
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from ..errors import InvalidParameterError, InvalidValuesError
from ..validation import describe_rows
from ..arrays import column_array
from .recorder import (DEFAULT_SCORES, DynamicsRecorder, check_epochs, check_scores, extra_entries, plain_options,
                       resolved_options)

__all__ = ["ROW_ID_COLUMN", "DYNAMICS_FILE", "add_row_ids", "DynamicsCallback", "DynamicsTrainerMixin",
           "DynamicsTrainer", "with_dynamics"]

logger = logging.getLogger(__name__)

ROW_ID_COLUMN = "d2_row_id"
#: the file of a checkpoint folder that holds the recorder's state.
DYNAMICS_FILE = "d2_dynamics.npz"


def _check_ids(ids: np.ndarray, n_rows: int, column: str) -> None:
    """Raise unless ``ids`` hold each of 0..n_rows−1 at most once."""
    if len(ids) and (ids.min() < 0 or ids.max() >= n_rows):
        bad = np.flatnonzero((ids < 0) | (ids >= n_rows))
        raise InvalidValuesError(
            f"column '{column}' holds ids outside [0, {n_rows}) in {describe_rows(bad)} (e.g. {ids[bad[0]]}): it was "
            f"added before rows were dropped or split off. Add it again on the dataset you train on: "
            f"add_row_ids(ds.remove_columns('{column}')).")
    if len(np.unique(ids)) != len(ids):
        raise InvalidValuesError(f"column '{column}' repeats ids; add it again on the dataset you train on: "
                                 f"add_row_ids(ds.remove_columns('{column}')).")


def add_row_ids(ds: Any, column: str = ROW_ID_COLUMN) -> Any:
    """Return ``ds`` with an int64 column of row positions 0..n−1 (the ids the recorder keys on).

    A dataset that has the column already is returned as it is once its ids are checked to be
    0..n−1 in some order (shuffling after ``add_row_ids`` keeps them valid; dropping or splitting
    off rows does not: add the column again then).

    Example:
        >>> import datasets
        >>> add_row_ids(datasets.Dataset.from_dict({"x": [5, 6, 7]}))["d2_row_id"]
        [0, 1, 2]
    """
    if not _has_length(ds) or getattr(ds, "column_names", None) is None:
        raise InvalidParameterError(
            f"add_row_ids needs a datasets.Dataset (it has a length); for an IterableDataset, add an int64 column "
            f"'{column}' of 0..n−1 to the source dataset before .to_iterable_dataset() and pass "
            f"DynamicsCallback(n_rows=n).")
    if column in ds.column_names:
        _check_ids(column_array(ds, column, dtype=np.int64), len(ds), column)
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
        self.score_options = plain_options(score_options)
        self.n_rows = n_rows
        self.row_id_column = row_id_column
        self.recorder: Optional[DynamicsRecorder] = None
        self.epoch = 0
        self.rows_this_epoch = 0  # rows recorded in this epoch (to drop the padding rows of its last batch)
        self._attached = False  # set by DynamicsTrainerMixin: only its compute_loss feeds the callback
        self._resume_from: Optional[str] = None  # the checkpoint folder train() resumes from
        self._next_epoch = 0
        self._began_at: Optional[int] = None  # global step of the last epoch beginning (one per epoch)
        self._labels: Optional[tuple[np.ndarray, str]] = None  # the training labels, read once, and their column
        self._presented: Optional[np.ndarray] = None  # rows of this epoch so far, for a stream's padding rows
        # rows an epoch presents (the ids may index a larger dataset: n_rows); None for a stream (no
        # length). Set by DynamicsTrainerMixin.
        self._rows_per_epoch: Optional[int] = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not self._attached:
            raise InvalidParameterError(
                "DynamicsCallback records only inside a DynamicsTrainer (or a with_dynamics(YourTrainer) class), "
                "whose compute_loss hands it each batch's logits: pass it as DynamicsTrainer(..., dynamics=callback), "
                "not in callbacks=[...] of a plain Trainer.")
        epochs = state.num_train_epochs or int(math.ceil(args.num_train_epochs))
        if 0 < epochs < 2 ** 31:  # an IterableDataset without a length runs "until max_steps"
            check_epochs(self.scores, self.score_options, epochs)
        if state.global_step > 0:  # resuming: continue from the recorder saved with the checkpoint
            self._load(args, state)
        else:
            if self.recorder is not None:
                logger.info("a new training run: the dynamics recorded by the previous one are replaced")
            self.recorder, self.epoch, self.rows_this_epoch = None, 0, 0
        self._next_epoch, self._began_at = self.epoch, None

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._began_at == state.global_step:  # the same beginning again (the callback registered twice)
            return
        self._began_at = state.global_step
        # state.epoch counts epochs of a sized dataset (fractional mid-epoch); an IterableDataset's
        # passes are counted by their beginnings
        epoch = max(self._next_epoch, _whole_epochs(state))
        if epoch != self.epoch:
            self.rows_this_epoch = 0
            if self._presented is not None:
                self._presented[:] = False
        self.epoch, self._next_epoch = epoch, epoch + 1

    def record(self, row_ids: Any, logits: Any, labels: Any) -> None:
        """Feed one batch (of every process): its rows' ids, logits and labels."""
        if self.recorder is None:
            if self.n_rows is None:
                raise InvalidParameterError("DynamicsCallback needs n_rows (the length of the training dataset).")
            if logits.ndim != 2 or logits.shape[-1] < 2:
                raise InvalidValuesError(
                    f"the model returns logits of shape {tuple(logits.shape)}; dynamics need one logit per class "
                    f"(B, C) with C >= 2 (a single-logit, regression or multi-label head has no per-class margin).")
            classes = int(logits.shape[-1])
            if self._labels is not None:  # every training label, read with the ids: check them all now
                values, column = self._labels
                bad = np.flatnonzero((values < 0) | (values >= classes))
                if bad.size:
                    raise InvalidValuesError(
                        f"column '{column}' has labels outside [0, {classes}) (the model's {classes} logits) in "
                        f"{describe_rows(bad)} (e.g. {values[bad[0]]}); drop those rows or build the model with "
                        f"more labels.")
            self.recorder = DynamicsRecorder(self.n_rows, classes, self.scores, **self.score_options)
            self.recorder.update(row_ids, logits, labels, self.epoch)
            self.recorder.flush()  # check the first batch now (ids, labels), not after training
        else:
            self.recorder.update(row_ids, logits, labels, self.epoch)
        self.rows_this_epoch += len(row_ids)

    def save(self, folder: str) -> None:
        """Write the recorder's state (with the epoch in progress) to ``folder``/``DYNAMICS_FILE``."""
        if self.recorder is None:
            return
        os.makedirs(folder, exist_ok=True)
        self.recorder.save(os.path.join(folder, DYNAMICS_FILE), epoch=self.epoch, rows_this_epoch=self.rows_this_epoch)

    def _load(self, args: Any, state: Any) -> None:
        folder = self._resume_from
        path = os.path.join(folder, DYNAMICS_FILE) if folder else None
        if path is None or not os.path.isfile(path):
            raise InvalidValuesError(
                f"training resumes at step {state.global_step} from {folder or 'a checkpoint'}, which holds no "
                f"{DYNAMICS_FILE}: the dynamics of the steps before it are lost and the scores would cover only "
                f"the rest of the run. Resume from a checkpoint a DynamicsTrainer saved, or train from the start.")
        with np.load(path, allow_pickle=False) as archive:  # one read: the state and the epoch beside it
            recorder, extra = DynamicsRecorder.from_state_dict(archive), extra_entries(archive)
        if not {"epoch", "rows_this_epoch"} <= set(extra):
            raise InvalidValuesError(f"{path} holds a recorder but not the epoch it stopped in; it was not written by a "
                                     f"DynamicsTrainer checkpoint. Resume from one, or train from the start.")
        epoch, rows = int(extra["epoch"]), int(extra["rows_this_epoch"])
        # the options in effect (defaults filled in): el2n_epochs=10 is the default, said or not
        ours = resolved_options(self.scores, self.score_options)
        if (recorder.scores, recorder.options) != (self.scores, ours) or (
                self.n_rows is not None and recorder.n_rows != self.n_rows):
            raise InvalidValuesError(
                f"{path} holds scores {list(recorder.scores)} with options {recorder.options} for "
                f"{recorder.n_rows} rows; this callback records {list(self.scores)} with {ours} for "
                f"{self.n_rows}. Resume with the callback the run started with.")
        if self._rows_per_epoch is None and (epoch > 0 or rows):
            raise InvalidValuesError(
                f"training resumes at step {state.global_step} of a streamed dataset (no length), which the Trainer "
                f"restarts from its first row: the rows it presents would no longer match the epochs recorded. "
                f"Train a stream without interruption, or give the Trainer a datasets.Dataset.")
        if getattr(args, "ignore_data_skip", False) and rows and epoch == _whole_epochs(state):
            raise InvalidValuesError(
                f"training resumes in the middle of epoch {epoch} with ignore_data_skip=True: the Trainer presents "
                f"the epoch's first {rows} rows again, which were recorded before the checkpoint. Resume without "
                f"ignore_data_skip (or from a checkpoint at the end of an epoch).")
        self.recorder, self.epoch, self.rows_this_epoch = recorder, epoch, rows
        logger.info("resuming the dynamics recorded up to epoch %d from %s", epoch, path)

    def results(self) -> dict[str, np.ndarray]:
        """Score name → float32 array over the row ids (NaN for rows never trained on)."""
        if self.recorder is None:
            raise InvalidValuesError("no training batch was recorded yet: call trainer.train() first.")
        return self.recorder.results()

    def to_dataset(self, ds: Any) -> Any:
        """Return ``ds`` (the dataset you trained on) with one float32 column per score.

        Each row gets the scores of its id in the row-id column, which is then dropped (so ``ds``
        may be shuffled or sorted after :func:`add_row_ids`); without that column, row ``i`` gets
        the scores of id ``i``.
        """
        from ..namespace import _add_columns
        from ..provenance import with_step

        results = self.results()
        if len(ds) != self.recorder.n_rows:
            raise InvalidValuesError(
                f"the dataset has {len(ds)} rows but the recorded row ids index {self.recorder.n_rows}; pass the "
                f"dataset you trained on (row ids from add_row_ids)."
            )
        columns = dict(results)
        if self.row_id_column in ds.column_names:
            ids = column_array(ds, self.row_id_column, dtype=np.int64)
            _check_ids(ids, self.recorder.n_rows, self.row_id_column)
            columns = {name: values[ids] for name, values in results.items()}
            ds = ds.remove_columns([self.row_id_column])
        params = {"scores": list(self.scores), "score_options": self.recorder.options, "epochs": self.epoch + 1}
        out = _add_columns(ds, columns, ("hf_d2prune.trainer_dynamics", params, self.recorder.n_rows, columns))
        return with_step(out, {"step": "train_dynamics", "output": list(self.scores), "source": "transformers.Trainer", **params})


def _whole_epochs(state: Any) -> int:
    """Epochs the Trainer's state has completed (its ``epoch`` is fractional mid-epoch)."""
    return int(math.floor(state.epoch + 1e-6)) if state.epoch else 0


def _has_length(dataset: Any) -> bool:
    try:
        len(dataset)
    except TypeError:
        return False
    return dataset is not None


class DynamicsTrainerMixin:
    """Mixin for a ``transformers.Trainer`` class: records dynamics from every training batch.

    Takes ``dynamics=DynamicsCallback(...)`` as an extra constructor argument.
    """

    def __init__(self, *args: Any, dynamics: DynamicsCallback, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(dynamics, DynamicsCallback):
            raise InvalidParameterError(f"dynamics must be a DynamicsCallback, got {type(dynamics).__name__}.")
        self.dynamics = dynamics
        if dynamics.n_rows is None and self.train_dataset is not None:
            if not _has_length(self.train_dataset):
                raise InvalidParameterError(
                    "the training dataset has no length (an IterableDataset): pass DynamicsCallback(n_rows=...), "
                    f"the number of rows its '{dynamics.row_id_column}' ids index.")
            dynamics.n_rows = len(self.train_dataset)
        dynamics._attached, dynamics._labels = True, None  # (labels are read with this Trainer's dataloader)
        dynamics._rows_per_epoch = len(self.train_dataset) if _has_length(self.train_dataset) else None
        if dynamics not in self.callback_handler.callbacks:  # passed in callbacks=[...] as well: once is enough
            self.add_callback(dynamics)

    def train(self, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        folder = resume_from_checkpoint
        if folder is True:
            from transformers.trainer_utils import get_last_checkpoint

            folder = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        self.dynamics._resume_from = folder if isinstance(folder, (str, os.PathLike)) else None
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
        # the recorder goes into the checkpoint folder first, so that a push of the checkpoint takes it too
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            self.dynamics.save(folder)
        super()._save_checkpoint(model, trial, *args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.dynamics.row_id_column not in self._signature_columns:
            self._signature_columns.append(self.dynamics.row_id_column)

    def _remove_unused_columns(self, dataset: Any, description: Optional[str] = None) -> Any:
        dataset = super()._remove_unused_columns(dataset, description=description)
        column = self.dynamics.row_id_column
        if column not in dataset.column_names:
            return dataset
        training = (description or "").lower() == "training"
        if training:  # the labels, checked against the logits at the first step
            self._remember_labels(dataset)
        if not _collates_plain_ids(self.data_collator):
            return dataset
        ids = column_array(dataset, column, dtype=np.int64)
        if training:  # the ids the recorder keys on: checked before training
            _check_ids(ids, self.dynamics.n_rows, column)
        return _RowsWithIds(dataset.remove_columns([column]), ids, column)

    # transformers 5 builds its samplers from the dataset _remove_unused_columns returned (4.x reads
    # self.train_dataset, a datasets.Dataset); grouping by length reads that dataset's columns, so a
    # sampler gets the rows behind _RowsWithIds (the same rows at the same positions).
    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        return super()._get_train_sampler(*map(_plain_rows, args), **{k: _plain_rows(v) for k, v in kwargs.items()})

    def _get_eval_sampler(self, *args: Any, **kwargs: Any) -> Any:
        return super()._get_eval_sampler(*map(_plain_rows, args), **{k: _plain_rows(v) for k, v in kwargs.items()})

    def _remember_labels(self, dataset: Any) -> None:
        """Read the training labels once, so that the first step checks them all against the logits."""
        import pyarrow as pa

        for name in [*(self.label_names or []), "labels", "label", "label_ids"]:
            if name in dataset.column_names and pa.types.is_integer(dataset.data.schema.field(name).type):
                self.dynamics._labels = (column_array(dataset, name, dtype=np.int64), name)
                return

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        row_ids = inputs.pop(self.dynamics.row_id_column, None)
        # num_items_in_batch only where the Trainer passes it (transformers >= 4.46)
        extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **extra)
        if row_ids is None:
            raise InvalidValuesError(
                f"the training batch has no '{self.dynamics.row_id_column}' column: add it to the training dataset "
                f"with add_row_ids(train_dataset) (a data collator of your own must pass it through).")
        label_name = next((n for n in (self.label_names or []) if n in inputs), "labels")
        if label_name not in inputs:
            raise InvalidValuesError(f"the training batch has no '{label_name}'; dynamics need the labels.")
        labels = inputs[label_name]
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **extra)
        from .loop import model_logits

        if isinstance(outputs, (tuple, list)) and len(outputs) > 1 and getattr(outputs[0], "ndim", None) == 0:
            logits = model_logits(outputs[1])  # (loss, logits, ...) of a model that returns tuples
        else:
            logits = model_logits(outputs)
        logits = logits.detach()
        if self.accelerator.num_processes > 1:
            row_ids, logits, labels = self._gathered(row_ids, logits, labels)
        self.dynamics.record(row_ids, logits, labels)
        return (loss, outputs) if return_outputs else loss

    def _gathered(self, row_ids: Any, logits: Any, labels: Any) -> tuple:
        """Every process's rows of this batch, without the rows that only pad out the epoch's last batch.

        Accelerate evens out the last batch of an epoch by repeating rows from the epoch's start and
        puts the real rows first; they are the ones beyond the epoch's count of rows, counted here
        (``gather_for_metrics`` would instead cut every batch fetched after the dataloader's last one,
        which with gradient accumulation includes the other batches of the last accumulation step).
        """
        accelerator = self.accelerator
        uneven = not getattr(accelerator, "even_batches", True)
        if uneven:  # shards may differ in size: pad, then drop the padding
            row_ids = accelerator.pad_across_processes(row_ids, dim=0, pad_index=-1)
            logits = accelerator.pad_across_processes(logits, dim=0)
            labels = accelerator.pad_across_processes(labels, dim=0)
        row_ids, logits, labels = accelerator.gather((row_ids, logits, labels))
        if uneven:
            keep = row_ids >= 0
            row_ids, logits, labels = row_ids[keep], logits[keep], labels[keep]
        rows_per_epoch = self.dynamics._rows_per_epoch
        if rows_per_epoch is None:  # a stream: its length is unknown, drop the rows seen this epoch
            return self._first_presentations(row_ids, logits, labels)
        excess = self.dynamics.rows_this_epoch + len(row_ids) - rows_per_epoch
        if excess > 0:
            real = len(row_ids) - excess
            row_ids, logits, labels = row_ids[:real], logits[:real], labels[:real]
        return row_ids, logits, labels

    def _first_presentations(self, row_ids: Any, logits: Any, labels: Any) -> tuple:
        """The rows not yet recorded in this epoch (the padding of a stream's last batch repeats rows
        from the pass's start). Reads the ids on the host: one synchronisation a step, streams only."""
        dynamics = self.dynamics
        if dynamics._presented is None:
            dynamics._presented = np.zeros(dynamics.n_rows, dtype=bool)
        ids = row_ids.detach().cpu().numpy().astype(np.int64)
        distinct, where = np.unique(ids, return_index=True)
        _check_ids(distinct, dynamics.n_rows, dynamics.row_id_column)
        first = np.zeros(len(ids), dtype=bool)
        first[where] = True
        keep = first & ~dynamics._presented[ids]
        dynamics._presented[ids[keep]] = True
        if keep.all():
            return row_ids, logits, labels
        mask = torch.from_numpy(keep).to(logits.device)
        return row_ids[mask.to(row_ids.device)], logits[mask], labels[mask.to(labels.device)]

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = {key: value for key, value in inputs.items() if key != self.dynamics.row_id_column}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)


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


def _plain_rows(dataset: Any) -> Any:
    """The ``datasets.Dataset`` behind a :class:`_RowsWithIds` (anything else as it is)."""
    return dataset.rows if isinstance(dataset, _RowsWithIds) else dataset


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
