"""The online recorder: one object fed once per batch, holding every requested score's state."""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..errors import InvalidParameterError, InvalidValuesError
from ..validation import check_positive_int, describe_rows, nonfinite_rows
from .accumulators import FAMILIES, Batch, ScoreFamily

__all__ = ["DynamicsRecorder", "KNOWN_SCORES", "DEFAULT_SCORES", "SCORE_OPTIONS", "required_epochs", "check_scores",
           "check_epochs", "resolved_options"]

#: the prefix of the caller's own entries in an archive written by DynamicsRecorder.save
EXTRA_PREFIX = "extra."

#: score name → the family class that computes it.
KNOWN_SCORES: dict[str, type[ScoreFamily]] = {name: family for family in FAMILIES for name in family.SCORES}
#: option name → default, for every option of every score.
SCORE_OPTIONS: dict[str, Any] = {key: value for family in FAMILIES for key, value in family.OPTIONS.items()}
DEFAULT_SCORES: tuple[str, ...] = ("forgetting", "aum", "el2n", "entropy")
_BUFFER_BYTES = 4 << 20  # default size of the float32 logits staged between folds


def check_scores(scores: "str | Iterable[str]", options: Optional[dict] = None) -> tuple[str, ...]:
    """Return ``scores`` as a tuple after checking every name and option; raise naming the culprit."""
    names = (scores,) if isinstance(scores, str) else tuple(scores)
    if not names:
        raise InvalidParameterError(f"scores is empty; choose from: {', '.join(KNOWN_SCORES)}.")
    unknown = [name for name in names if name not in KNOWN_SCORES]
    if unknown:
        raise InvalidParameterError(f"unknown score '{unknown[0]}'; known scores: {', '.join(KNOWN_SCORES)}.")
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"scores lists a name twice: {list(names)}.")
    stray = [key for key in (options or {}) if key not in SCORE_OPTIONS]
    if stray:
        raise InvalidParameterError(
            f"unknown score option '{stray[0]}'; options are: "
            + ", ".join(f"{k} (default {v!r})" for k, v in SCORE_OPTIONS.items()) + "."
        )
    return names


def plain_options(options: Optional[dict]) -> dict[str, Any]:
    """Score options as plain JSON values (numpy numbers → int / float / bool, any iterable of epochs
    → a list, a set sorted), so that a run's options can be saved with its checkpoints and compared."""
    def plain(value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value)
        if isinstance(value, (set, frozenset)):
            return sorted(plain(v) for v in value)
        if isinstance(value, (list, tuple, range, np.ndarray)):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in (options or {}).items()}


def resolved_options(scores: "str | Iterable[str]", options: Optional[dict] = None) -> dict[str, Any]:
    """Every option in effect for ``scores``: the given ones (as :func:`plain_options`) over the
    defaults of their families, so that an option left at its default and the same value said out
    loud compare equal.

    Example:
        >>> resolved_options(["el2n", "aum"], {"el2n_epochs": 3})
        {'el2n_epochs': 3}
    """
    given = plain_options(options)
    families = dict.fromkeys(KNOWN_SCORES[name] for name in check_scores(scores, given))
    return {key: given.get(key, default) for family in families for key, default in family.OPTIONS.items()}


def required_epochs(scores: "str | Iterable[str]", options: Optional[dict] = None) -> int:
    """The fewest epochs after which every requested score is defined for a row seen each epoch.

    Example:
        >>> required_epochs(["aum", "dynamic_uncertainty"])            # J = 10 → 11
        11
        >>> required_epochs(["tdds"], {"tdds_window": 5})
        5
    """
    names = check_scores(scores, options)
    options = options or {}
    return max(KNOWN_SCORES[name].min_presentations(options) for name in names)


def check_epochs(scores: "str | Iterable[str]", options: Optional[dict], epochs: int) -> None:
    """Raise InvalidParameterError, before any training, when a run of ``epochs`` epochs would leave a
    requested score NaN for every row: a window longer than the run, or an epoch-averaged score
    (``el2n_epochs``, ``grand_epochs``) whose chosen epochs all come after it."""
    names = check_scores(scores, options)
    options = options or {}
    needed = required_epochs(names, options)
    if epochs < needed:
        windowed = [n for n in names if KNOWN_SCORES[n].min_presentations(options) > epochs]
        raise InvalidParameterError(
            f"epochs={epochs} is too few for {', '.join(windowed)}: at least {needed} epochs are needed "
            f"(dynamic_uncertainty: du_window + 1, tdds: tdds_window); raise epochs or lower the window."
        )
    for name in names:
        family = KNOWN_SCORES[name]
        first = getattr(family, "first_selected_epoch", None)
        if first is not None and first(options) >= epochs:
            option = family.EPOCHS_OPTION
            value = {**family.OPTIONS, **options}[option]
            raise InvalidParameterError(
                f"{option}={value!r} picks epochs the run of {epochs} epochs never reaches (0-based), so "
                f"'{name}' would be NaN everywhere; pick epochs below {epochs} or train longer."
            )


def extra_entries(state: Any) -> dict[str, np.ndarray]:
    """The caller's own entries of a saved state (the ``extra`` of :meth:`DynamicsRecorder.save`), by name."""
    names = getattr(state, "files", None) or state.keys()
    return {name[len(EXTRA_PREFIX):]: np.asarray(state[name]) for name in names if name.startswith(EXTRA_PREFIX)}


def _numpy(values: Any, floating: bool) -> np.ndarray:
    """A numpy copy (never a view of a tensor the training loop may reuse): int64, or floats in
    float32 — float64 when they come as float64 — the precision the fold computes in.

    A 2-D float result is laid out class-major — the transposed view of a C-contiguous (C, B)
    array, made in the same copy — which is the layout the fold computes in (see ``Batch``).
    """
    if hasattr(values, "detach"):  # torch tensor: no torch import needed here
        values = values.detach().cpu()
        if values.is_floating_point() and values.element_size() < 4:
            values = values.float()  # bf16 has no numpy dtype
        values = values.numpy()
    values = np.asarray(values)
    if not floating:
        return np.array(values, dtype=np.int64)
    dtype = np.float64 if values.dtype == np.float64 else np.float32
    if values.ndim == 2:
        return np.array(values.T, dtype=dtype, order="C").T
    return np.array(values, dtype=dtype)


def _array(values: Any) -> Any:
    """A torch tensor as it is (detached), anything else as a numpy array (not copied)."""
    return values.detach() if hasattr(values, "detach") else np.asarray(values)


class StagingBuffer:
    """A preallocated buffer that the batches of one field (row ids, logits, labels or features)
    are copied into until the next flush.

    Copying into one buffer allocates nothing per batch: holding each batch's own tensors until
    the flush instead measurably slows the training step (+4-6% epoch time for a 64-2048-10 MLP
    on a CPU), through the allocator. A torch tensor is staged on its own device (a GPU step is
    not synchronised per batch; the buffer crosses to the CPU once per flush); anything else in
    numpy. Floats are staged in float32, or float64 when they come as float64.
    """

    def __init__(self, floating: bool, capacity: int):
        self.floating = floating
        self.capacity = capacity
        self.buffer: Any = None
        self.layout: tuple = ()

    def layout_of(self, values: Any) -> tuple:
        """(device or None for numpy, width, float64?) of a batch: what its buffer must match."""
        device = None if isinstance(values, np.ndarray) else values.device
        return (device, values.shape[1:], self.floating and values.dtype.itemsize == 8)

    def fits(self, layout: tuple) -> bool:
        """Whether a batch of ``layout`` can be staged beside what the buffer holds."""
        return self.buffer is None or layout == self.layout

    def put(self, values: Any, start: int, stop: int, layout: tuple) -> None:
        """Copy ``values`` into rows start..stop (the buffer is (re)made for a new layout; call
        :meth:`fits` first and flush what is staged when it does not)."""
        if self.buffer is None or layout != self.layout:
            device, width, wide = self.layout = layout
            if device is not None:
                import torch

                dtype = (torch.float64 if wide else torch.float32) if self.floating else torch.int64
                self.buffer = torch.empty((self.capacity, *width), dtype=dtype, device=device)
            else:
                dtype = (np.float64 if wide else np.float32) if self.floating else np.int64
                self.buffer = np.empty((self.capacity, *width), dtype=dtype)
        if layout[0] is not None:
            self.buffer[start:stop].copy_(values)
        else:
            self.buffer[start:stop] = values

    def take(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop as a new numpy array (float32 or float64 as staged, or int64)."""
        return _numpy(self.buffer[start:stop], self.floating)


class StagingGroup:
    """The fields of consecutive batches (row ids, logits, labels, features; or logits and GraNd's
    norms) staged side by side, one :class:`StagingBuffer` each, all of ``capacity`` rows. A part
    a batch does not bring is None, and its buffer is left as it is."""

    def __init__(self, floating: Sequence[bool], capacity: int):
        self.fields = tuple(StagingBuffer(f, capacity) for f in floating)
        self.capacity = capacity

    @property
    def buffers(self) -> tuple:
        """Each field's buffer (None until a batch brought that field)."""
        return tuple(f.buffer for f in self.fields)

    def layouts(self, parts: Sequence[Any]) -> list:
        """The layout of each part of a batch (None for a part it does not bring)."""
        return [None if p is None else f.layout_of(p) for f, p in zip(self.fields, parts)]

    def fits(self, layouts: Sequence[Any], start: int, size: int) -> bool:
        """Whether ``size`` rows of ``layouts`` can be staged at row ``start``, beside what is staged."""
        return start + size <= self.capacity and all(
            f.fits(layout) for f, layout in zip(self.fields, layouts) if layout is not None)

    def put(self, parts: Sequence[Any], layouts: Sequence[Any], start: int) -> None:
        """Copy each part into its buffer from row ``start`` (call :meth:`fits` first)."""
        for f, part, layout in zip(self.fields, parts, layouts):
            if part is not None:
                f.put(part, start, start + len(part), layout)

    def head(self, stop: int) -> tuple:
        """Rows 0..stop of each field, views of the buffers (None for a field never staged)."""
        return tuple(None if f.buffer is None else f.buffer[:stop] for f in self.fields)


class DynamicsRecorder:
    """Accumulates training-dynamics scores online, one batch at a time.

    Memory is O(n) per score (O(n × window) for the windowed ones, plus O(n × C) for TDDS's
    previous probabilities); see :meth:`state_bytes_per_row`. Feed it the rows of each batch
    with their logits, wherever they come from (training forward passes, an extra evaluation
    pass, several processes gathered by row id) with :meth:`update`, or chunks a caller gathered
    itself, possibly of several epochs, with :meth:`fold`. Each row may appear at most once per
    epoch.

    Args:
        n_rows: number of rows of the dataset; row ids are 0..n_rows−1.
        num_classes: number of classes C (width of the logits).
        scores: names from :data:`KNOWN_SCORES` (default :data:`DEFAULT_SCORES`).
        flush_rows: rows buffered before they are folded into the state (a fold has a fixed cost
            of up to a few hundred microseconds right after a training step, so fewer folds cost
            less; a buffer holds flush_rows × C float32 logits, on the logits' device, and the
            training loop keeps two). Default: as many rows as 4 MiB of logits hold, at least
            8,192 (104,857 rows for 10 classes, 8,192 from 128 classes up). Non-finite logits
            are reported when their chunk is folded.
        **score_options: per-score options (see :data:`SCORE_OPTIONS`), e.g. ``du_window=10``,
            ``tdds_window=10``, ``tdds_decay=0.9``, ``el2n_epochs=10``, ``grand_epochs=1``.

    Example:
        >>> import numpy as np
        >>> rec = DynamicsRecorder(4, 3, scores=["aum", "forgetting"])
        >>> rec.update([0, 1], np.array([[2.0, 0, 0], [0, 1.0, 0]]), [0, 2], epoch=0)
        >>> rec.results()["aum"]       # −AUM; rows 2, 3 never seen
        array([-2.,  1., nan, nan], dtype=float32)
    """

    def __init__(self, n_rows: int, num_classes: int, scores: Sequence[str] = DEFAULT_SCORES, *,
                 flush_rows: Optional[int] = None, **score_options: Any):
        self.num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
        if flush_rows is None:
            flush_rows = max(8192, _BUFFER_BYTES // (4 * self.num_classes))
        self.flush_rows = check_positive_int(flush_rows, "flush_rows")
        self._staging = StagingGroup((False, True, False, True), self.flush_rows)  # rows, logits, labels, features
        self._segments: list[list[int]] = []  # [epoch, start, stop, checked] runs of staged rows
        self._prevalidated = False  # True inside prevalidated(): the fold skips the id / label checks
        self._final_epoch: Optional[int] = None  # see set_final_epoch()
        self._staged = 0
        self.n_rows = check_positive_int(n_rows, "n_rows")
        self.scores = check_scores(scores, score_options)
        score_options = plain_options(score_options)
        self.score_options = score_options
        by_family: dict[type, list[str]] = {}
        for name in self.scores:
            by_family.setdefault(KNOWN_SCORES[name], []).append(name)
        self.families = [
            family(self.n_rows, self.num_classes, names,
                   **{k: v for k, v in score_options.items() if k in family.OPTIONS})
            for family, names in by_family.items()
        ]
        self.needs_features = any(f.needs_features for f in self.families)
        self._last_epoch = np.full(self.n_rows, -1, dtype=np.int32)
        self._slot = np.zeros(self.n_rows, dtype=np.int32)  # scratch for the duplicate check

    @property
    def options(self) -> dict[str, Any]:
        """Every option in effect for the requested scores (defaults filled in), for provenance."""
        return resolved_options(self.scores, self.score_options)

    def update(self, row_ids: Any, logits: Any, labels: Any, epoch: int, features: Any = None) -> None:
        """Feed one batch.

        Batches are copied into preallocated buffers (``flush_rows`` rows; torch tensors on their
        own device, moved to the CPU once per flush, not once per batch) and folded into the state
        together, so the per-batch cost is a copy; :meth:`results` folds in whatever is pending.

        Args:
            row_ids: (B,) ints in [0, n_rows), unique within the epoch.
            logits: (B, C) floats (torch tensors or numpy).
            labels: (B,) class ids in [0, C).
            epoch: 0-based epoch; non-decreasing for each row.
            features: (B, H) penultimate features, needed only by ``grand`` (which uses only their
                norm, so (B, 1) norms are just as good and cheaper to gather); they are reduced to
                their norms as they come, so the buffer holds one value per row.

        Raises:
            InvalidValuesError: shapes disagree (at once); ids or labels out of range, a row
                presented twice in one epoch, non-finite logits (when the buffer is folded in:
                call :meth:`flush` to check what is staged now).

        Inside :meth:`prevalidated` the fold skips the id and label checks (about a third of its
        time); non-finite logits are always checked.
        """
        _checked = not self._prevalidated
        fields = self._fields(row_ids, logits, labels, features)
        size = fields[0].shape[0]
        if size == 0:
            return
        epoch = int(epoch)
        if size >= self.flush_rows:  # fills the buffer or more: fold it at once, without staging
            self._fold_now([(epoch, 0, size, _checked)], fields)
            return
        layouts = self._staging.layouts(fields)
        if not self._staging.fits(layouts, self._staged, size):
            self.flush()
        start = self._staged
        self._staging.put(fields, layouts, start)
        self._staged = start + size
        if self._segments and self._segments[-1][0] == epoch and self._segments[-1][3] == _checked:
            self._segments[-1][2] = self._staged
        else:
            self._segments.append([epoch, start, self._staged, _checked])
        if self._staged >= self.flush_rows:
            self.flush()

    def fold(self, row_ids: Any, logits: Any, labels: Any, epoch: Any, features: Any = None) -> None:
        """Fold one chunk of rows into the state now, without staging it (after what is staged).

        The same as :meth:`update` for a caller that gathers its batches into chunks itself (the
        training loop does): the chunk is copied to the CPU once and folded, where :meth:`update`
        would first copy a chunk smaller than ``flush_rows`` into its own buffer. ``epoch`` is an
        int, or one per row (non-decreasing) for a chunk that spans several epochs, in which a
        row may then appear once per epoch.
        """
        fields = self._fields(row_ids, logits, labels, features)
        size = fields[0].shape[0]
        if not size:
            return
        checked = not self._prevalidated
        if np.ndim(epoch) == 0:
            self._fold_now([(int(epoch), 0, size, checked)], fields)
            return
        epochs = np.asarray(epoch, dtype=np.int64).reshape(-1)
        if len(epochs) != size or (np.diff(epochs) < 0).any():
            raise InvalidValuesError(f"fold() needs one epoch per row, non-decreasing; got {len(epochs)} epochs "
                                     f"for {size} rows.")
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(epochs)) + 1, [size]])
        self._fold_now([(int(epochs[a]), int(a), int(b), checked) for a, b in zip(bounds[:-1], bounds[1:])], fields)

    def _fields(self, row_ids: Any, logits: Any, labels: Any, features: Any) -> tuple:
        """(rows, logits, labels, features) of a batch, shapes checked; tensors stay tensors."""
        rows, logits, labels = _array(row_ids), _array(logits), _array(labels)
        if rows.ndim != 1:
            rows = rows.reshape(-1)
        if labels.ndim != 1:
            labels = labels.reshape(-1)
        size = rows.shape[0]
        if logits.shape != (size, self.num_classes) or labels.shape[0] != size:  # torch.Size == tuple
            raise InvalidValuesError(
                f"a batch needs row_ids (B,), logits (B, {self.num_classes}) and labels (B,); got "
                f"{tuple(rows.shape)}, {tuple(logits.shape)}, {tuple(labels.shape)}."
            )
        if self.needs_features:
            if features is None:
                raise InvalidParameterError(
                    "score 'grand' needs the penultimate features: pass features= to update() or fold()."
                )
            features = _array(features).reshape(size, -1)
            if features.shape[1] > 1:  # GraNd uses only ‖h‖: stage (B, 1) norms, not (B, H) features
                features = (features.norm(dim=1, keepdim=True) if hasattr(features, "norm")
                            else np.linalg.norm(features, axis=1, keepdims=True))
        return rows, logits, labels, features

    def _fold_now(self, segments: list, fields: tuple) -> None:
        self.flush()
        self._fold(segments, *(None if v is None else _numpy(v, f.floating) for f, v in zip(self._staging.fields, fields)))

    def flush(self) -> None:
        """Fold the staged batches into the per-row state."""
        segments, self._segments, staged, self._staged = self._segments, [], self._staged, 0
        if segments:
            rows, logits, labels, features = self._staging.fields
            self._fold(segments, rows.take(0, staged), logits.take(0, staged), labels.take(0, staged),
                       features.take(0, staged) if self.needs_features else None)

    def _fold(self, segments: list, rows: np.ndarray, logits: np.ndarray, labels: np.ndarray,
              features: Optional[np.ndarray]) -> None:
        """Fold a chunk whose ``segments`` — (epoch, start, stop, checked) runs of its rows, in
        order — may span several epochs.

        The quantities derived from the logits are computed once for the whole chunk and each
        segment updates the state with its part of them. A fold has a fixed cost — tens of
        microseconds, a few hundred right after a training step has pushed numpy's code and data
        out of the CPU's caches — so a chunk of several small epochs costs about one fold.
        """
        bad = nonfinite_rows(logits)  # one summing pass; the rows are looked at only when the sum is not finite
        if bad.size:
            where = np.searchsorted([start for _, start, _, _ in segments], bad[0], side="right") - 1
            raise InvalidValuesError(f"logits are NaN or inf for {describe_rows(rows[bad])} at epoch "
                                     f"{segments[where][0]}; the training diverged.")
        whole = Batch(rows, logits, labels, segments[0][0], features)
        for epoch, start, stop, checked in segments:
            batch = whole if len(segments) == 1 else whole.part(start, stop, epoch)
            if checked:
                self._check_rows(epoch, batch.rows, batch.labels)
            self._last_epoch[batch.rows] = epoch
            presented_again = not checked and self._final_epoch is not None and epoch < self._final_epoch
            for family in self.families:
                if not (presented_again and family.final_only):
                    family.update(batch)

    def check_epoch_rows(self, rows: Any, labels: Any) -> None:
        """Validate, once, the rows an epoch will present: ids in ``[0, n_rows)`` and each at most
        once, their labels in ``[0, num_classes)`` (``labels``: of every row, indexed by row id).

        A caller that feeds every epoch in an order of these rows can then feed inside
        :meth:`prevalidated`. Raises InvalidValuesError naming the offending rows.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) == 0:
            return
        if rows.min() < 0 or rows.max() >= min(self.n_rows, len(labels)):
            raise InvalidValuesError(f"row ids must lie in [0, {min(self.n_rows, len(labels))}); "
                                     f"got {rows.min()}..{rows.max()}.")
        self._check_ids_and_labels(rows, np.asarray(labels, dtype=np.int64)[rows])
        duplicated = self._duplicated(rows)
        if duplicated.any():
            raise InvalidValuesError(f"{describe_rows(np.unique(rows[duplicated]))} listed twice in the rows to "
                                     f"train on; each row is presented once per epoch.")

    def set_final_epoch(self, epoch: int) -> None:
        """Declare that every row checked by :meth:`check_epoch_rows` is fed (inside
        :meth:`prevalidated`) in each epoch up to ``epoch``: the scores of a row's final prediction
        (entropy, least_confidence, margin, loss) then skip the batches of earlier epochs, whose
        values the final epoch would overwrite. A training loop that runs a fixed number of epochs
        over the same rows calls it once before training.
        """
        self._final_epoch = check_positive_int(epoch, "epoch", minimum=0)

    @contextlib.contextmanager
    def prevalidated(self):
        """Within this block, :meth:`update` trusts ids and labels checked by :meth:`check_epoch_rows`
        (the training loop feeds its own epoch order so)."""
        self._prevalidated = True
        try:
            yield self
        finally:
            self._prevalidated = False

    def _check_ids_and_labels(self, rows: np.ndarray, labels: np.ndarray) -> None:
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise InvalidValuesError(f"row ids must lie in [0, {self.n_rows}); got {rows.min()}..{rows.max()}.")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            bad = rows[(labels < 0) | (labels >= self.num_classes)]
            raise InvalidValuesError(f"labels must lie in [0, {self.num_classes}); {describe_rows(bad)} do not.")

    def _duplicated(self, rows: np.ndarray) -> np.ndarray:
        """Mask of the repeated ids of ``rows``, in O(B) without sorting: the last write of each id wins."""
        position = np.arange(len(rows))
        self._slot[rows] = position
        return self._slot[rows] != position

    def _check_rows(self, epoch: int, rows: np.ndarray, labels: np.ndarray) -> None:
        self._check_ids_and_labels(rows, labels)
        repeated = self._last_epoch[rows] >= epoch
        duplicated = self._duplicated(rows)
        if repeated.any() or duplicated.any():
            bad = rows[repeated] if repeated.any() else np.unique(rows[duplicated])
            raise InvalidValuesError(
                f"{describe_rows(bad)} presented twice in epoch {epoch} (or epochs went backwards); "
                f"feed each row at most once per epoch (with several processes, drop the rows that only "
                f"pad out an epoch's last batch after gathering, as train_dynamics and DynamicsTrainer do)."
            )

    def results(self) -> dict[str, np.ndarray]:
        """Score name → float32 array (n_rows,), higher = harder; NaN for rows not (enough) seen."""
        self.flush()
        out: dict[str, np.ndarray] = {}
        for family in self.families:
            out.update(family.results())
        return {name: out[name] for name in self.scores}

    def seen(self) -> np.ndarray:
        """Boolean (n_rows,): rows presented at least once."""
        self.flush()
        return self._last_epoch >= 0

    def state_dict(self) -> dict[str, np.ndarray]:
        """The whole state, for a checkpoint: what is staged is folded first, then every per-row
        array (copies) and, under ``"meta"``, a JSON string of the recorder's arguments.
        :meth:`from_state_dict` makes a recorder that continues where this one stopped.

        Example:
            >>> rec = DynamicsRecorder(3, 2, ["aum"])
            >>> rec.update([0, 1], np.array([[2.0, 0], [0, 1.0]]), [0, 0], epoch=0)
            >>> again = DynamicsRecorder.from_state_dict(rec.state_dict())
            >>> again.update([2], np.array([[0.0, 3.0]]), [1], epoch=0)
            >>> again.results()["aum"]
            array([-2.,  1., -3.], dtype=float32)
        """
        import json

        self.flush()
        state = {name: array.copy() for name, array in self._state_arrays().items()}
        meta = {"format": 1, "n_rows": self.n_rows, "num_classes": self.num_classes, "scores": list(self.scores),
                "score_options": self.score_options, "final_epoch": self._final_epoch, "flush_rows": self.flush_rows}
        try:
            state["meta"] = np.array(json.dumps(meta))
        except TypeError:
            raise InvalidParameterError(f"score options {self.score_options} are not JSON values; pass ints, floats, "
                                        f"bools or lists of ints to save a recorder.") from None
        return state

    @classmethod
    def from_state_dict(cls, state: "dict[str, np.ndarray] | Any") -> "DynamicsRecorder":
        """A recorder rebuilt from :meth:`state_dict` (or the archive :meth:`save` writes)."""
        import json

        if "meta" not in state:
            raise InvalidValuesError("not a recorder's state: it has no 'meta' entry (write it with state_dict() or save()).")
        meta = json.loads(str(np.asarray(state["meta"])))
        recorder = cls(meta["n_rows"], meta["num_classes"], meta["scores"], flush_rows=meta.get("flush_rows"),
                       **meta["score_options"])
        expected = recorder._state_arrays()
        names = {name for name in (getattr(state, "files", None) or state.keys())
                 if name != "meta" and not name.startswith(EXTRA_PREFIX)}
        if names != set(expected):
            raise InvalidValuesError(f"the saved state holds {sorted(names)} but a recorder of scores "
                                     f"{list(recorder.scores)} keeps {sorted(expected)}; it was written by another version.")
        for name, target in expected.items():
            value = np.asarray(state[name])
            if value.shape != target.shape or value.dtype != target.dtype:
                raise InvalidValuesError(f"saved state '{name}' is {value.dtype}{list(value.shape)}, expected "
                                         f"{target.dtype}{list(target.shape)}.")
            np.copyto(target, value)
        if meta.get("final_epoch") is not None:
            recorder.set_final_epoch(meta["final_epoch"])
        return recorder

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Every per-row array of the state by name (views): the rows' last epochs, then each family's."""
        state = {"last_epoch": self._last_epoch}
        for index, family in enumerate(self.families):
            state.update({f"{index}.{key}": array for key, array in family.state_dict().items()})
        return state

    def save(self, path: "str | Any", **extra: Any) -> None:
        """Write :meth:`state_dict` to ``path``, as it is named (a numpy ``.npz`` archive, no pickles).

        ``extra`` values (numbers or arrays) are stored beside the state, each under
        ``"extra." + name``, for a caller's own bookkeeping (a ``DynamicsTrainer`` checkpoint keeps
        the epoch in progress there); :meth:`load` ignores them and :meth:`read_extra` reads them.
        """
        state = self.state_dict()
        state.update({EXTRA_PREFIX + name: np.asarray(value) for name, value in extra.items()})
        with open(path, "wb") as file:
            np.savez(file, **state)

    @classmethod
    def load(cls, path: "str | Any") -> "DynamicsRecorder":
        """Read a recorder written by :meth:`save` (a ``DynamicsTrainer`` checkpoint's ``d2_dynamics.npz``
        too: its scores so far are ``DynamicsRecorder.load(path).results()``)."""
        with np.load(path, allow_pickle=False) as archive:
            return cls.from_state_dict(archive)

    @staticmethod
    def read_extra(path: "str | Any") -> dict[str, np.ndarray]:
        """The ``extra`` values :meth:`save` wrote to ``path``, by name."""
        with np.load(path, allow_pickle=False) as archive:
            return extra_entries(archive)

    def state_bytes_per_row(self) -> dict[str, float]:
        """Bytes of per-row state held for each score family (keyed by its scores, '+'-joined)."""
        return {
            "+".join(f.names): sum(a.nbytes for a in f.state_arrays()) / self.n_rows for f in self.families
        }
