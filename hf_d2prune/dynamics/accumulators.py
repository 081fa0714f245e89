"""Online accumulators of training-dynamics scores: per-row state, fed one batch at a time.

Each score family is one small class holding only the per-row state its definition needs
(O(n) or O(n × window), never O(n × epochs × classes)). Every *stored* score follows the
library convention **higher = harder / more important**; where a paper's natural quantity
runs the other way the class says how it is mapped. Rows that were never presented (or not
often enough for a windowed score) get NaN.

Time is counted per row: a row's k-th *presentation* is the k-th batch it appeared in, and a
row is presented at most once per epoch (the recorder checks this), so "epoch" and
"presentation" coincide for every row that is seen each epoch.

Notation: z = logits, p = softmax(z), y = label, C = classes, T = presentations of a row.
"""

from __future__ import annotations

import abc
from functools import cached_property
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from ..errors import InvalidParameterError

__all__ = [
    "Batch",
    "BatchPart",
    "ScoreFamily",
    "Forgetting",
    "AreaUnderMargin",
    "EL2N",
    "GraNd",
    "FinalPrediction",
    "Cartography",
    "DynamicUncertainty",
    "TDDS",
    "FAMILIES",
]

_TDDS_EPS = 1e-8  # inside the log, as in the TDDS authors' code


class Batch:
    """One batch of dynamics: row ids, logits, labels, epoch and (optionally) penultimate features.

    Derived quantities (probabilities, margins, ...) are computed once and shared by every
    accumulator fed this batch, in the precision of the logits: float32 logits (what models
    return) give float32 margins, probabilities and EL2N — half the memory traffic of float64,
    which is most of the cost of folding a chunk, and exact to float32's rounding, as the logits
    themselves are; the per-row sums over epochs are float64. The final prediction's scores
    (entropy, loss, ...), which can be far smaller than float32's resolution of 1 + x, are
    computed in float64. Everything is computed in a class-major ``(C, B)`` layout
    (the ``*_by_class`` attributes): a reduction over the classes of each row is then an
    elementwise operation across B-long rows, which numpy vectorises, where reducing each short
    row of a ``(B, C)`` array costs several times more for the usual C of 2-100. With many
    classes the rows are long enough either way, and the layout is a transposed view (no copy).
    """

    #: up to this many classes the logits are copied class-major; above it they are viewed transposed.
    CLASS_MAJOR_MAX = 64
    #: the final prediction's quantities: a part of a chunk derives them from its own rows (the
    #: training loop needs them for the final epoch only, not for the whole chunk).
    FINAL = frozenset({"entropy", "loss", "final_probs"})

    def __init__(self, rows: np.ndarray, logits: np.ndarray, labels: np.ndarray, epoch: int,
                 features: Optional[np.ndarray] = None):
        self.rows = rows
        self.logits = logits
        self.labels = labels
        self.epoch = epoch
        self.features = features
        self._arange = np.arange(len(rows))

    def part(self, start: int, stop: int, epoch: int) -> "BatchPart":
        """Rows start..stop of this batch as a batch of their own, presented at ``epoch``."""
        return BatchPart(self, start, stop, epoch)

    @cached_property
    def logits_by_class(self) -> np.ndarray:
        """(C, B) logits."""
        view = self.logits.T
        return np.ascontiguousarray(view) if view.shape[0] <= self.CLASS_MAJOR_MAX else view

    @cached_property
    def _margin_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """z_y, max_{c≠y} z_c, and the logits with −inf at the label (scratch for :attr:`_exp_parts`).

        The label entries are read and masked through flat indices into the copy's memory, which
        costs a fifth of a two-array fancy index.
        """
        others = self.logits_by_class.copy(order="K")
        flat, index = _flat_view(others), self._label_index(others)
        label_logit = flat.take(index)
        flat[index] = -np.inf
        return label_logit, others.max(axis=0), others

    def _label_index(self, values: np.ndarray) -> np.ndarray:
        """Positions of the (y_i, i) entries in :func:`_flat_view` of a contiguous (C, B) array."""
        classes, width = values.shape
        if _is_fortran(values):
            return self._arange * classes + self.labels
        return self.labels * width + self._arange

    @cached_property
    def _exp_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The softmax's pieces, shifted by max_c z_c: (shift, exp(z_c − shift) with 0 at the label,
        their sum over c≠y, exp(z_y − shift), the total).

        Keeping the label's term apart gives 1 − p_y as the others' sum over the total, free of
        the cancellation of 1 − p_y when p_y is near 1.
        """
        label_logit, top_other, others = self._margin_parts
        shift = np.maximum(top_other, label_logit)
        others -= shift  # the scratch copy becomes the others' exponentials, in place
        np.exp(others, out=others)
        rest = others.sum(axis=0)
        label_exp = np.exp(label_logit - shift)
        return shift, others, rest, label_exp, rest + label_exp

    @cached_property
    def probs_by_class(self) -> np.ndarray:
        """(C, B) softmax."""
        _, other_exp, _, _, total = self._exp_parts
        probs = np.divide(other_exp, total, order="K")
        _flat_view(probs)[self._label_index(probs)] = self.p_true
        return probs

    @cached_property
    def _wide_softmax(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(z − max z, exp(z − max z), their sum, its log), class-major, in float64 whatever the
        logits: a confident row's entropy and loss are ~1e-12, which float32's 1 + x cannot resolve."""
        z = self.logits_by_class.astype(np.float64)
        shifted = z - z.max(axis=0)
        exp = np.exp(shifted)
        total = exp.sum(axis=0)
        return shifted, exp, total, np.log(total)

    @cached_property
    def final_probs(self) -> np.ndarray:
        """(C, B) softmax in float64 (for the scores of the final prediction)."""
        _, exp, total, _ = self._wide_softmax
        return np.divide(exp, total, order="K")

    @cached_property
    def entropy(self) -> np.ndarray:
        """H(p) = log Σ exp(z − max z) − Σ_c exp(z_c − max z) (z_c − max z) / Σ exp(z − max z), in float64."""
        shifted, exp, total, log_total = self._wide_softmax
        return log_total - (exp * shifted).sum(axis=0) / total

    @cached_property
    def loss(self) -> np.ndarray:
        """−log p_y = log Σ exp(z − max z) − (z_y − max z), in float64."""
        shifted, _, _, log_total = self._wide_softmax
        return log_total - _flat_view(shifted).take(self._label_index(shifted))

    @property
    def probs(self) -> np.ndarray:
        """(B, C) softmax (a transposed view of :attr:`probs_by_class`)."""
        return self.probs_by_class.T

    @cached_property
    def p_true(self) -> np.ndarray:
        """p_y."""
        _, _, _, label_exp, total = self._exp_parts
        return label_exp / total

    @cached_property
    def correct(self) -> np.ndarray:
        """argmax_c z_c == y (the first maximum wins a tie, as ``argmax``)."""
        margin = self.logit_margin
        correct = margin > 0
        tied = margin == 0
        if tied.any():
            correct[tied] = self.logits[tied].argmax(axis=1) == self.labels[tied]
        return correct

    @cached_property
    def logit_margin(self) -> np.ndarray:
        """z_y − max_{c≠y} z_c."""
        label_logit, top_other, _ = self._margin_parts
        return label_logit - top_other

    @cached_property
    def error_norm(self) -> np.ndarray:
        """‖p − onehot(y)‖₂ = sqrt(Σ_{c≠y} p_c² + (1 − p_y)²), with 1 − p_y = Σ_{c≠y} p_c."""
        _, other_exp, rest, _, total = self._exp_parts
        squares = np.einsum("cb,cb->b", other_exp, other_exp)
        return np.sqrt(squares + rest * rest) / total


class BatchPart:
    """Rows start..stop of a :class:`Batch`, presented at their own epoch.

    Reads every quantity of the whole batch and cuts out its rows (columns of the class-major
    ``*_by_class`` arrays), so a chunk that spans several epochs derives its margins and
    probabilities once; each family then folds the part of every epoch in turn.
    """

    def __init__(self, whole: Batch, start: int, stop: int, epoch: int):
        self.whole, self.start, self.stop, self.epoch = whole, start, stop, epoch
        self.rows, self.labels = whole.rows[start:stop], whole.labels[start:stop]
        self.logits = whole.logits[start:stop]
        self.features = None if whole.features is None else whole.features[start:stop]

    def __getattr__(self, name: str) -> Any:  # a derived quantity of the batch, read once
        if name.startswith("_"):  # the whole batch's private pieces are not per-row arrays to cut
            raise AttributeError(name)
        if name in Batch.FINAL:  # for its own rows only: one epoch of the chunk needs it
            if "_own" not in self.__dict__:
                self._own = Batch(self.rows, self.logits, self.labels, self.epoch, self.features)
            value = getattr(self._own, name)
        else:
            value = getattr(self.whole, name)
            value = value[:, self.start:self.stop] if name.endswith("_by_class") else value[self.start:self.stop]
        setattr(self, name, value)
        return value


def _is_fortran(values: np.ndarray) -> bool:
    return values.flags.f_contiguous and not values.flags.c_contiguous


def _flat_view(values: np.ndarray) -> np.ndarray:
    """The 1-D view of a contiguous array's memory (C or Fortran order, as it is laid out); only
    for the contiguous arrays the batch makes itself (of anything else, reshape would copy)."""
    return values.reshape(-1, order="F" if _is_fortran(values) else "C")


def _row_sums(values: np.ndarray) -> np.ndarray:
    """Σ over axis 1 of a 2-D float array, as a matrix-vector product (several times faster than
    ``sum(axis=1)`` for the short rows of the windowed scores)."""
    return values @ np.ones(values.shape[1], dtype=values.dtype)


def _row_std(values: np.ndarray, ddof: int = 0) -> np.ndarray:
    """``values.std(axis=1, ddof=ddof)`` for a 2-D float array, through :func:`_row_sums`."""
    width = values.shape[1]
    centred = values - (_row_sums(values) / width)[:, None]
    return np.sqrt(_row_sums(centred * centred) / (width - ddof))


def _nan_where(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    out = values.astype(np.float32)
    out[missing] = np.nan
    return out


class ScoreFamily(abc.ABC):
    """Base class: one family of scores sharing per-row state.

    Subclasses set ``SCORES`` (names they can produce), ``OPTIONS`` (option name → default) and
    implement :meth:`update` and :meth:`results`.
    """

    SCORES: ClassVar[tuple[str, ...]] = ()
    OPTIONS: ClassVar[dict[str, Any]] = {}
    needs_features: ClassVar[bool] = False
    #: True when only each row's last presentation counts: the recorder may skip batches of rows it
    #: knows will be presented again (see ``DynamicsRecorder.set_final_epoch``).
    final_only: ClassVar[bool] = False

    def __init__(self, n_rows: int, num_classes: int, names: Sequence[str], **options: Any):
        self.n_rows = n_rows
        self.num_classes = num_classes
        self.names = tuple(names)
        self.options = {**self.OPTIONS, **options}

    @classmethod
    def min_presentations(cls, options: dict) -> int:
        """Presentations (epochs) a row needs before this family can score it."""
        return 1

    @abc.abstractmethod
    def update(self, batch: Batch) -> None:
        """Fold one batch of predictions into the per-row state."""

    @abc.abstractmethod
    def results(self) -> dict[str, np.ndarray]:
        """Score name -> float32 ``(n_rows,)`` (higher = harder; NaN for rows not seen enough)."""

    def state_arrays(self) -> list[np.ndarray]:
        """Every per-row array this family keeps (for memory accounting)."""
        return list(self.state_dict().values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """The family's state by name (views, not copies): its arrays, and the arrays of its dicts
        of arrays as ``"<dict>.<key>"``."""
        state: dict[str, np.ndarray] = {}
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                state[name] = value
            elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
                state.update({f"{name}.{key}": array for key, array in value.items()})
        return state


class Forgetting(ScoreFamily):
    """Forgetting events (Toneva et al., ICLR 2019, "An empirical study of example forgetting").

    A forgetting event is a presentation where the row is misclassified after having been
    classified correctly at its previous presentation. Stored ``forgetting`` = number of events;
    a row never classified correctly gets its number of presentations (more than any learnt row
    presented as often can have — a learnt row has at most presentations − 1 events — so it
    ranks hardest, as the authors treat unlearned rows; when rows are presented unequally often,
    e.g. a run cut short by ``max_steps``, compare rows of equal presentations). Natural
    direction: high = hard/keep, stored as is.

    State per row: previous correctness (bool), ever learned (bool), events and presentations (int32).
    """

    SCORES = ("forgetting",)

    def __init__(self, n_rows, num_classes, names, **options):
        super().__init__(n_rows, num_classes, names, **options)
        self.previous = np.zeros(n_rows, dtype=bool)
        self.learned = np.zeros(n_rows, dtype=bool)
        self.events = np.zeros(n_rows, dtype=np.int32)
        self.seen = np.zeros(n_rows, dtype=np.int32)

    def update(self, batch):
        rows, correct = batch.rows, batch.correct
        self.events[rows] += self.previous[rows] & ~correct
        self.previous[rows] = correct
        self.learned[rows] |= correct
        self.seen[rows] += 1

    def results(self):
        values = np.where(self.learned, self.events, self.seen)
        return {"forgetting": _nan_where(values, self.seen == 0)}


class AreaUnderMargin(ScoreFamily):
    """Area Under the Margin (Pleiss et al., NeurIPS 2020).

    AUM = mean over presentations of the logit margin z_y − max_{c≠y} z_c. Low (negative) AUM
    flags likely-mislabelled rows, so the stored ``aum`` is **−AUM** (higher = harder).

    State per row: margin sum (float64), presentations (int32).
    """

    SCORES = ("aum",)

    def __init__(self, n_rows, num_classes, names, **options):
        super().__init__(n_rows, num_classes, names, **options)
        self.total = np.zeros(n_rows, dtype=np.float64)
        self.seen = np.zeros(n_rows, dtype=np.int32)

    def update(self, batch):
        self.total[batch.rows] += batch.logit_margin
        self.seen[batch.rows] += 1

    def results(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"aum": _nan_where(-self.total / self.seen, self.seen == 0)}


def _epoch_set(value: Any, option: str) -> "int | frozenset[int]":
    """``int k`` → the first k epochs; a sequence → those 0-based epochs."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 1:
            raise InvalidParameterError(f"{option} must be >= 1 (the first k epochs) or a list of epochs, got {value}.")
        return int(value)
    try:
        epochs = frozenset(int(e) for e in value)
    except TypeError:
        raise InvalidParameterError(f"{option} must be an int k (the first k epochs) or a list of 0-based epochs, got {value!r}.") from None
    if not epochs or min(epochs) < 0:
        raise InvalidParameterError(f"{option} must list at least one epoch, all >= 0; got {sorted(epochs)}.")
    return epochs


class _EpochAverage(ScoreFamily):
    """A per-row quantity averaged over the presentations that fall in chosen epochs."""

    #: the option that names the epochs averaged over (e.g. "el2n_epochs")
    EPOCHS_OPTION: ClassVar[str]

    def __init__(self, n_rows, num_classes, names, **options):
        super().__init__(n_rows, num_classes, names, **options)
        self._epochs = _epoch_set(self.options[self.EPOCHS_OPTION], self.EPOCHS_OPTION)
        self.total = np.zeros(n_rows, dtype=np.float64)
        self.seen = np.zeros(n_rows, dtype=np.int32)

    @classmethod
    def first_selected_epoch(cls, options: dict) -> int:
        """The earliest 0-based epoch this family averages over (a run needs more epochs than it)."""
        epochs = _epoch_set({**cls.OPTIONS, **options}[cls.EPOCHS_OPTION], cls.EPOCHS_OPTION)
        return 0 if isinstance(epochs, int) else min(epochs)

    def _selected(self, epoch: int) -> bool:
        return epoch < self._epochs if isinstance(self._epochs, int) else epoch in self._epochs

    @abc.abstractmethod
    def _value(self, batch: Batch) -> np.ndarray:
        """The per-row quantity averaged over the selected epochs."""

    def update(self, batch):
        if self._selected(batch.epoch):
            self.total[batch.rows] += self._value(batch)
            self.seen[batch.rows] += 1

    def results(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return {self.SCORES[0]: _nan_where(self.total / self.seen, self.seen == 0)}


class EL2N(_EpochAverage):
    """Error L2-norm (Paul et al., NeurIPS 2021, "Deep learning on a data diet").

    EL2N = ‖p − onehot(y)‖₂, averaged over the epochs chosen by ``el2n_epochs`` (default 10: the
    first 10 epochs, as Coverage-centric selection sums it; an int k means epochs 0..k−1, a list
    names 0-based epochs, e.g. ``[19]`` for the paper's single early epoch). High = hard, stored
    as is.

    State per row: sum (float64), count (int32).
    """

    SCORES = ("el2n",)
    OPTIONS = {"el2n_epochs": 10}
    EPOCHS_OPTION = "el2n_epochs"

    def _value(self, batch):
        return batch.error_norm


class GraNd(_EpochAverage):
    """Gradient norm (Paul et al., NeurIPS 2021), restricted to the last layer as DeepCore does.

    For softmax cross-entropy on a last layer z = W h + b, the per-example gradient is
    ∇_W = (p − y) hᵀ, ∇_b = p − y, so ‖∇_{W,b}‖₂ = ‖p − y‖₂ · sqrt(‖h‖² + 1) (drop the +1 with
    ``grand_bias=False`` when the layer has no bias). Needs the penultimate features h.
    Averaged over the epochs chosen by ``grand_epochs`` (default 1: the first epoch, nearest to
    initialisation as in the paper). High = hard, stored as is.

    State per row: sum (float64), count (int32).
    """

    SCORES = ("grand",)
    OPTIONS = {"grand_epochs": 1, "grand_bias": True}
    needs_features = True
    EPOCHS_OPTION = "grand_epochs"

    def _value(self, batch):
        if batch.features is None:
            raise InvalidParameterError("score 'grand' needs the penultimate features: pass features= to update() or fold().")
        h = batch.features.reshape(len(batch.rows), -1)
        squared = (h * h).sum(axis=1) + (1.0 if self.options["grand_bias"] else 0.0)
        return batch.error_norm * np.sqrt(squared)


class FinalPrediction(ScoreFamily):
    """Uncertainty of each row's last prediction (its final presentation).

    - ``entropy``: H(p) = −Σ_c p_c log p_c. Stored as is.
    - ``least_confidence``: 1 − max_c p_c. Stored as is.
    - ``margin``: natural quantity p₍₁₎ − p₍₂₎ (top-two probability gap; low = uncertain); stored
      as **1 − (p₍₁₎ − p₍₂₎)** so that higher = more uncertain.
    - ``loss``: cross-entropy −log p_y. Stored as is.

    State per row: one float32 per requested score.
    """

    SCORES = ("entropy", "least_confidence", "margin", "loss")
    final_only = True

    def __init__(self, n_rows, num_classes, names, **options):
        super().__init__(n_rows, num_classes, names, **options)
        self.last = {name: np.full(n_rows, np.nan, dtype=np.float32) for name in self.names}

    def _value(self, name: str, batch: Batch) -> np.ndarray:
        if name == "entropy":
            return batch.entropy
        if name == "loss":
            return batch.loss
        p = batch.final_probs  # float64, as the entropy and loss
        if name == "least_confidence":
            return 1.0 - p.max(axis=0)
        if name == "margin":
            top2 = np.partition(p, -2, axis=0)[-2:]  # C >= 2 always
            return 1.0 - (top2[1] - top2[0])

    def update(self, batch):
        for name, values in self.last.items():
            values[batch.rows] = self._value(name, batch)

    def results(self):
        return {name: values.copy() for name, values in self.last.items()}


class Cartography(ScoreFamily):
    """Dataset cartography (Swayamdipta et al., EMNLP 2020).

    Over a row's presentations: confidence = mean p_y, variability = std p_y (population std,
    ddof=0, as the authors' ``np.std``), correctness = fraction of presentations predicted
    correctly. Hard-to-learn rows have low confidence and low correctness, so the stored
    ``confidence`` is **1 − mean p_y** and ``correctness`` is **1 − fraction correct**;
    ``variability`` (high = ambiguous) is stored as is.

    State per row: sum and sum of squares of p_y (float64), correct count and presentations (int32).
    """

    SCORES = ("confidence", "variability", "correctness")

    def __init__(self, n_rows, num_classes, names, **options):
        super().__init__(n_rows, num_classes, names, **options)
        self.total = np.zeros(n_rows, dtype=np.float64)
        self.total_sq = np.zeros(n_rows, dtype=np.float64)
        self.hits = np.zeros(n_rows, dtype=np.int32)
        self.seen = np.zeros(n_rows, dtype=np.int32)

    def update(self, batch):
        rows, p = batch.rows, batch.p_true
        self.total[rows] += p
        self.total_sq[rows] += p * p
        self.hits[rows] += batch.correct
        self.seen[rows] += 1

    def results(self):
        missing = self.seen == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.total / self.seen
            variance = np.maximum(self.total_sq / self.seen - mean * mean, 0.0)
            out = {
                "confidence": 1.0 - mean,
                "variability": np.sqrt(variance),
                "correctness": 1.0 - self.hits / self.seen,
            }
        return {name: _nan_where(out[name], missing) for name in self.names}


def _window_option(options: dict, name: str, minimum: int = 2) -> int:
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


class DynamicUncertainty(ScoreFamily):
    """Dynamic Uncertainty (He et al. 2023, arXiv 2306.05175, "Large-scale dataset pruning with dynamic uncertainty").

    With P_k = p_y at presentation k (k = 0..T−1) and window J (``du_window``, default 10):
    U_k = unbiased std (ddof=1) of P_k..P_{k+J−1}, and DU = mean of U_k over k = 0..T−J−1 —
    T − J windows, as in the paper's formula and its reference implementations, so the window
    ending at the final presentation is not used and a row needs T ≥ J + 1 presentations.
    High = uncertain = keep, stored as is.

    State per row: the last J values of p_y (float32 ring), the sum of finished windows and the
    newest window's std (float64), presentations (int32).
    """

    SCORES = ("dynamic_uncertainty",)
    OPTIONS = {"du_window": 10}

    @classmethod
    def min_presentations(cls, options):
        return _window_option({**cls.OPTIONS, **options}, "du_window") + 1

    def __init__(self, n_rows, num_classes, names, **options):
        super().__init__(n_rows, num_classes, names, **options)
        self.window = _window_option(self.options, "du_window")
        self.ring = np.zeros((n_rows, self.window), dtype=np.float32)
        self.committed = np.zeros(n_rows, dtype=np.float64)
        self.pending = np.zeros(n_rows, dtype=np.float64)
        self.seen = np.zeros(n_rows, dtype=np.int32)

    def update(self, batch):
        rows, J = batch.rows, self.window
        seen = self.seen[rows]
        self.ring[rows, seen % J] = batch.p_true
        seen = seen + 1
        self.seen[rows] = seen
        full = seen >= J
        if full.any():
            done = rows[full]
            # The window that was newest until now is not the last one any more: count it.
            older = seen[full] > J
            self.committed[done[older]] += self.pending[done[older]]
            self.pending[done] = _row_std(self.ring[done].astype(np.float64), ddof=1)

    def results(self):
        windows = self.seen - self.window
        with np.errstate(invalid="ignore", divide="ignore"):
            values = self.committed / windows
        return {"dynamic_uncertainty": _nan_where(values, windows < 1)}


class TDDS(ScoreFamily):
    """Temporal Dual-Depth Scoring (Zhang et al., CVPR 2024, "Spanning training progress").

    Step term between consecutive presentations: d_t = Σ_c |p_{t+1,c} (log p_{t+1,c} − log p_{t,c})|
    (logs of p + 1e-8, as the authors' code). For each window of W consecutive presentations
    (``tdds_window``, default 10) with its W − 1 step terms: v = ‖d − mean(d)‖₂. The score is the
    authors' exponential moving average over the windows k = 0..K−1 (K = T − W + 1):
    S = Σ_k β (1 − β)^(K−1−k) v_k with β = ``tdds_decay`` (default 0.9), i.e. S ← (1 − β)·S + β·v
    per window, the latest window weighted most. Needs T ≥ W. High = keep, stored as is.

    State per row: the previous p (C float32), the last W − 1 step terms (float32 ring), S
    (float64) and presentations (int32).
    """

    SCORES = ("tdds",)
    OPTIONS = {"tdds_window": 10, "tdds_decay": 0.9}

    @classmethod
    def min_presentations(cls, options):
        return _window_option({**cls.OPTIONS, **options}, "tdds_window")

    def __init__(self, n_rows, num_classes, names, **options):
        super().__init__(n_rows, num_classes, names, **options)
        self.window = _window_option(self.options, "tdds_window")
        decay = self.options["tdds_decay"]
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay <= 1.0:
            raise InvalidParameterError(f"tdds_decay must lie in (0, 1], got {decay!r}.")
        self.decay = float(decay)
        self.previous = np.zeros((n_rows, num_classes), dtype=np.float32)
        self.steps = np.zeros((n_rows, self.window - 1), dtype=np.float32)
        self.score = np.zeros(n_rows, dtype=np.float64)
        self.seen = np.zeros(n_rows, dtype=np.int32)

    def update(self, batch):
        rows, p = batch.rows, batch.probs
        seen = self.seen[rows]
        has_previous = seen > 0
        if has_previous.any():
            r = rows[has_previous]
            q = p[has_previous]
            previous = self.previous[r].astype(np.float64)
            step = _row_sums(np.abs(q * (np.log(q + _TDDS_EPS) - np.log(previous + _TDDS_EPS))))
            self.steps[r, (seen[has_previous] - 1) % (self.window - 1)] = step
        self.previous[rows] = p
        seen = seen + 1
        self.seen[rows] = seen
        full = seen >= self.window
        if full.any():
            r = rows[full]
            d = self.steps[r].astype(np.float64)
            centred = d - (_row_sums(d) / d.shape[1])[:, None]
            v = np.sqrt(_row_sums(centred * centred))
            self.score[r] = (1.0 - self.decay) * self.score[r] + self.decay * v

    def results(self):
        return {"tdds": _nan_where(self.score, self.seen < self.window)}


FAMILIES: tuple[type[ScoreFamily], ...] = (
    Forgetting, AreaUnderMargin, EL2N, GraNd, FinalPrediction, Cartography, DynamicUncertainty, TDDS,
)
