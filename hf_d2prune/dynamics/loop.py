"""The Accelerate training loop that feeds a :class:`DynamicsRecorder`.

Knows nothing of ``datasets``: it trains ``model`` on the rows ``rows`` (ids into ``labels``),
building each batch with ``make_inputs(row_ids)``, and feeds the recorder with the (row ids,
logits, labels) of every batch. Batches are cut from each epoch's permutation of the row ids, so
ids travel with their examples through shuffling and sharding. One process batches the
permutation itself and stages each step's logits for the recorder; several iterate an
Accelerate-prepared dataloader that shards every global batch, ``accelerator.gather_for_metrics``
collects every process's rows (dropping the duplicates that even batches add), and every process
feeds its own recorder with the same data, so each ends with the full scores.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import show_progress
from ..errors import InvalidParameterError, InvalidValuesError
from ..validation import check_positive_int
from .recorder import DynamicsRecorder, StagingGroup

logger = logging.getLogger(__name__)

__all__ = ["fit_and_record", "model_logits", "last_linear", "default_accelerator"]


def default_accelerator():
    """An Accelerator whose ``batch_size`` is the *global* batch, split across processes.

    With ``split_batches=True`` each of P processes gets batch_size / P rows of the same global
    batch, and DDP averages their mean-loss gradients, i.e. the gradient of the global batch's
    mean loss: the run matches the single-process one up to float summation order. Under
    ``torchrun`` on a machine without an accelerator device it asks for CPU processes (gloo),
    which Accelerate otherwise only does for ``accelerate launch --cpu``.
    """
    import os

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_device
    return Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True), cpu=cpu_processes)


def model_logits(output: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor, a mapping with ``"logits"`` or an object with ``.logits``."""
    if isinstance(output, torch.Tensor):
        logits = output
    elif isinstance(output, dict) or hasattr(output, "keys"):
        if "logits" not in output:
            raise InvalidValuesError(
                f"the model returned a mapping without 'logits' (keys: {', '.join(output.keys())}); return the "
                f"class logits as a tensor, or under 'logits'."
            )
        logits = output["logits"]
    elif hasattr(output, "logits"):
        logits = output.logits
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    else:
        raise InvalidValuesError(
            f"cannot find logits in the model output of type {type(output).__name__}; the model must return a "
            f"(batch, classes) tensor, a dict with 'logits' or an object with .logits "
            f"(e.g. AutoModelForSequenceClassification / AutoModelForImageClassification)."
        )
    if logits.ndim != 2:
        raise InvalidValuesError(
            f"the model's logits have shape {tuple(logits.shape)}; (batch, classes) is needed — use a "
            f"classification head (AutoModelFor...Classification) or pool before the last layer."
        )
    return logits


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """Call ``model`` with a batch: a mapping is passed as keyword arguments, anything else positionally."""
    if isinstance(inputs, dict) or hasattr(inputs, "keys"):
        return model(**inputs)
    return model(inputs)


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The last ``torch.nn.Linear`` registered in ``model`` (the classification layer for GraNd)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise InvalidParameterError(
            "score 'grand' needs a torch.nn.Linear output layer (it uses the last-layer gradient "
            "norm); this model has none. Drop 'grand' from scores."
        )
    return linears[-1]


class _EpochPermutation(torch.utils.data.Sampler):
    """Positions 0..n−1, in a permutation fixed by (seed, epoch) — the same on every process."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self._order: Optional[tuple[int, np.ndarray]] = None  # (epoch, its order), drawn once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """The positions of the current epoch, in the order they are drawn (drawn once per epoch:
        the loop reads it to stage the epoch, the dataloader to iterate)."""
        if self._order is None or self._order[0] != self.epoch:
            order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                     else np.arange(self.n))
            self._order = (self.epoch, order)
        return self._order[1]

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n


class _EpochStage:
    """One process's logits (and GraNd's feature norms) of consecutive batches, folded into the
    recorder a chunk at a time.

    With one process the row ids and labels of every batch follow from the epoch's order, so a
    step only copies its logits into a preallocated buffer on their device — the *ring*, whose
    rows every epoch reuses, so they stay in the cache — and no recorder call is made. At the
    end of an epoch that fitted in the ring, its rows are parked with one copy in a second
    buffer, the *chunk*, which is folded into the recorder when the next epoch no longer fits
    and at the end of training: a fold costs a fixed tens of microseconds (a few hundred right
    after a training step), so a small dataset's epochs are folded several at a time. An epoch
    larger than the ring is folded ring by ring. The chunk holds ``flush_rows`` rows, the ring as
    many whole batches as fit in them.

    The common step — of training, or of the eval pass (``eval_pass=True``): a full batch (or
    the epoch's short last one), of the dtypes the ring was made for — is staged by the loop
    itself with one copy into :attr:`slots`, views of the ring, one per step, the same every
    epoch (and, for GraNd, one more of the feature norms into :attr:`norm_slots`). A call per
    step costs a few microseconds, which show on models whose step takes under a millisecond.
    Every other step goes through :meth:`add`: the first batch (which makes the ring), the
    first after a full ring (folded first), a change of dtype, a short batch before the last.
    A batch on another device is staged correctly by the copy itself.
    """

    def __init__(self, recorder: DynamicsRecorder, labels: np.ndarray, batch_size: int = 1):
        self.recorder, self.labels, self.batch_size = recorder, labels, batch_size
        # logits and GraNd's norms; the ring holds whole batches
        self.ring = StagingGroup((True, True), max(batch_size, recorder.flush_rows // batch_size * batch_size))
        self.chunk = StagingGroup((True, True), recorder.flush_rows)
        self.parked: list[tuple[int, np.ndarray]] = []  # (epoch, row ids) of the epochs in the chunk, in order
        self.parked_rows = 0
        self.ids, self.epoch = np.zeros(0, dtype=np.int64), 0
        self.filled = 0  # rows in the ring (exact outside the steps staged into slots)
        self.done = 0  # rows of this epoch already folded
        self.slots: list[Optional[torch.Tensor]] = []  # step → its view of the ring, or None
        self.norm_slots: list[Optional[torch.Tensor]] = []  # step → its view of the norms' ring, or None
        self.slot_dtype: Optional[torch.dtype] = None  # the logits' dtype the slots take as they are
        self.norm_dtype: Optional[torch.dtype] = None  # the norms' dtype the norm slots take as they are
        self._aligned = True  # every step so far this epoch brought a full batch: step k sits at k·batch − done
        # ((ring, norms ring, rows), the first slots, the first norm slots)
        self._first_plan: tuple[tuple, list, list] = ((None, None, -1), [], [])
        self._planned_for: tuple = (None, None, -1, False)  # _plan_state() when the slots were last planned

    def start(self, epoch: int, ids: np.ndarray) -> list:
        """Begin an epoch whose batches bring the rows ``ids`` in this order; returns :attr:`slots`
        (:attr:`norm_slots` is planned beside it)."""
        self.epoch, self.ids, self.done, self.filled, self._aligned = epoch, ids, 0, 0, True
        ring, norms = self.ring.buffers
        (cached_ring, cached_norms, cached_rows), first, first_norms = self._first_plan
        if not (ring is not None and ring is cached_ring and norms is cached_norms and cached_rows == len(ids)):
            steps = -(-len(ids) // self.batch_size)
            self.slots, self.norm_slots = [None] * steps, [None] * steps
            self._plan(0)
            first, first_norms = list(self.slots), list(self.norm_slots)
            self._first_plan = ((ring, norms, len(ids)), first, first_norms)
        self.slots, self.norm_slots = list(first), list(first_norms)
        self._planned_for = self._plan_state()
        return self.slots

    def _plan_state(self) -> tuple:
        """What the slots depend on besides the epoch: the ring's buffers, the rows folded, the alignment."""
        return (*self.ring.buffers, self.done, self._aligned)

    def _still_planned(self) -> bool:
        """Whether the slots were planned for the ring's present state."""
        ring, norms, done, aligned = self._planned_for
        now_ring, now_norms = self.ring.buffers
        return ring is now_ring and norms is now_norms and (done, aligned) == (self.done, self._aligned)

    def _plan(self, first: int) -> None:
        """Point the slots (and norm slots) of the steps from ``first`` to the end of the ring at
        their rows (in place: the loop holds the lists); the step that starts the next ring keeps
        None, so that :meth:`add` folds the full ring before it is reused."""
        (ring, norms), slots, size, capacity = self.ring.buffers, self.slots, self.batch_size, self.ring.capacity
        norm_slots = self.norm_slots
        self._planned_for = self._plan_state()
        slots[first:] = norm_slots[first:] = [None] * (len(slots) - first)
        if ring is None or not self._aligned:
            return
        for step in range(first, len(slots)):
            offset = step * size - self.done
            if offset >= capacity or (offset == 0 and step > 0):
                break
            rows = min(size, len(self.ids) - step * size)
            slots[step] = ring[offset:offset + rows]
            if norms is not None:
                norm_slots[step] = norms[offset:offset + rows]

    def add(self, logits: torch.Tensor, norms: Optional[torch.Tensor] = None, step: Optional[int] = None) -> None:
        """Stage the batch of ``step`` (its rows are the next ``len(logits)`` ids of the epoch)."""
        if self._aligned and step is not None:  # the steps before were staged into their slots
            self.filled = min(step * self.batch_size, len(self.ids)) - self.done
        size = len(logits)
        parts = (logits, norms)
        layouts = self.ring.layouts(parts)
        if not self.ring.fits(layouts, self.filled, size):
            self._fold_ring()
        if size >= self.ring.capacity:  # fills the ring or more: fold it at once
            self._fold(logits, norms)
        else:
            self.ring.put(parts, layouts, self.filled)
            self.filled += size
        if step is None or (size != self.batch_size and (step + 1) * self.batch_size < len(self.ids)):
            self._aligned = False  # later steps of this epoch are placed by their own add()
        self.slot_dtype, self.norm_dtype = logits.dtype, None if norms is None else norms.dtype
        if step is not None and not self._still_planned():
            self._plan(step + 1)  # only when the ring, the rows folded or the alignment changed: the
            # steps of GraNd all come here, and replanning each would be O(steps²)

    def end_epoch(self, steps: int) -> None:
        """Close an epoch of ``steps`` steps: park it in the chunk when it fitted in the ring, or
        fold what remains of it."""
        if self._aligned:
            self.filled = min(steps * self.batch_size, len(self.ids)) - self.done
        if not self.filled:
            return
        if self.done:  # the epoch did not fit in the ring: its last rows go the same way
            self._fold_ring()
            return
        parts = self.ring.head(self.filled)
        layouts = self.chunk.layouts(parts)
        if not self.chunk.fits(layouts, self.parked_rows, self.filled):
            self._fold_parked()  # full, or this epoch came in another dtype or device
        ids = self._epoch_rows(0, self.filled)
        self.chunk.put(parts, layouts, self.parked_rows)
        self.parked.append((self.epoch, ids))
        self.parked_rows += self.filled
        self.filled = 0

    def hand_over(self) -> None:
        """Fold everything staged into the recorder (after training): the parked epochs, then
        the ring's rows of an epoch not closed with :meth:`end_epoch`."""
        self._fold_parked()
        self._fold_ring()

    def _fold_parked(self) -> None:
        if self.parked:
            ids = np.concatenate([rows for _, rows in self.parked])
            epochs = np.repeat([epoch for epoch, _ in self.parked], [len(rows) for _, rows in self.parked])
            logits, norms = self.chunk.head(self.parked_rows)
            self.parked, self.parked_rows = [], 0
            self._fold(logits, norms, ids, epochs)

    def _fold_ring(self) -> None:
        """Fold the ring's rows of this epoch (after the parked epochs, which come first)."""
        if self.filled:
            logits, norms = self.ring.head(self.filled)
            self._fold(logits, norms)
            self.filled = 0

    def _fold(self, logits: torch.Tensor, norms: Optional[torch.Tensor], ids: Optional[np.ndarray] = None,
              epochs: Any = None) -> None:
        """Fold ``logits`` — the next rows of this epoch, or parked epochs' ``ids`` and ``epochs``."""
        if ids is None:
            self._fold_parked()  # rows of earlier epochs are folded first
            ids, epochs = self._epoch_rows(self.done, len(logits)), self.epoch
            self.done += len(ids)
        with self.recorder.prevalidated():  # ids: slices of the epochs' orders, checked before training
            self.recorder.fold(ids, logits, self.labels[ids], epochs, norms)

    def _epoch_rows(self, start: int, count: int) -> np.ndarray:
        ids = self.ids[start:start + count]
        if len(ids) != count:
            raise InvalidValuesError(
                f"the dataloader yielded more rows than the epoch's {len(self.ids)}; a custom sampler or "
                f"dataloader must not change the rows of an epoch."
            )
        return ids


class _FeatureTap:
    """Forward hook keeping the input of a layer (the penultimate features)."""

    def __init__(self, layer: torch.nn.Module):
        self.value: Optional[torch.Tensor] = None
        self.handle = layer.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self.value = args[0].detach()

    def close(self) -> None:
        self.handle.remove()


def _passes_through(accelerator: Any) -> bool:
    """Whether Accelerate's optimizer wrapper and ``backward`` only pass the calls on: no
    mixed-precision grad scaler, no gradient accumulation, no XLA / DeepSpeed / Megatron engine.
    (DDP synchronises gradients in the backward pass itself.)"""
    from accelerate.utils import DistributedType

    return (getattr(accelerator, "scaler", None) is None and accelerator.gradient_accumulation_steps == 1
            and accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU,
                                                 DistributedType.MULTI_GPU))


def _plain_optimizer(accelerator: Any, optimizer: Any) -> Any:
    """The optimizer to call ``step`` / ``zero_grad`` on: the one inside Accelerate's wrapper when
    the wrapper would only pass the calls through.

    The wrapper adds work for a mixed-precision grad scaler, gradient accumulation and XLA; without
    them its ``step`` searches the import path for an optional package twice and its ``zero_grad``
    inspects a signature, on every call — about 0.25 ms a step on a CPU, a third of a small
    model's step.
    """
    inner = getattr(optimizer, "optimizer", None)
    return inner if inner is not None and _passes_through(accelerator) else optimizer


class _OrderedBatches:
    """One process's batches: consecutive slices of the sampler's order for the epoch, collated in one
    call each and moved to ``device`` (None: left where they are).

    What a worker-less ``DataLoader`` prepared by Accelerate yields for one process, without its
    per-row fetches and wrapper (about 35 µs a step, a fifth of a linear head's step on a CPU).
    """

    def __init__(self, sampler: _EpochPermutation, batch_size: int, collate: Callable[[np.ndarray], dict],
                 device: Any = None):
        self.sampler, self.batch_size, self.collate, self.device = sampler, batch_size, collate, device

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        from accelerate.utils import send_to_device

        order = self.sampler.order()
        for start in range(0, len(order), self.batch_size):
            batch = self.collate(order[start:start + self.batch_size])
            yield batch if self.device is None else send_to_device(batch, self.device)


def default_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW(lr, weight_decay=0), with torch's fused kernel where every parameter allows it.

    The fused kernel updates all parameters in one call instead of a dozen tensor operations per
    parameter: on a CPU it takes a third of the time of the default implementation, which is most of
    the per-step overhead of small batches (the matched-step subset runs of score extrapolation).
    Same update rule; results differ from the unfused kernel only by float rounding. torch before
    2.4 has no fused kernel for the CPU; there (and for parameters it does not take) the default
    implementation is used.
    """
    params = list(model.parameters())
    if params and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
        except RuntimeError:  # this torch (or dtype) has no fused kernel for these parameters
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def fit_and_record(
    model: torch.nn.Module,
    make_inputs: Callable[[np.ndarray], Any],
    labels: np.ndarray,
    rows: np.ndarray,
    recorder: Optional[DynamicsRecorder],
    *,
    epochs: int,
    batch_size: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
    lr: float = 1e-3,
    seed: int = 0,
    shuffle: bool = True,
    accelerator: Any = None,
    eval_pass: bool = False,
    progress: bool = True,
) -> DynamicsRecorder:
    """Train ``model`` on ``rows`` for ``epochs`` epochs with cross-entropy and record dynamics.

    Args:
        model: returns logits (see :func:`model_logits`) for ``call_model(model, make_inputs(ids))``.
        make_inputs: row ids (numpy int64) → the model's batch (tensor or dict of tensors).
        labels: class ids of *all* rows (indexed by row id).
        rows: the row ids to train on.
        recorder: fed with every training batch (or with the eval pass, see ``eval_pass``);
            ``None`` trains the same way without recording (the baseline of the overhead benchmark).
        epochs, batch_size: as usual; ``batch_size`` is the global batch when the accelerator
            splits batches (the default accelerator does).
        optimizer: a torch optimizer over ``model``'s parameters (default: :func:`default_optimizer`).
        lr: learning rate of the default optimizer.
        seed: seeds torch (dropout, init of lazily built layers) and the per-epoch shuffles.
        shuffle: shuffle rows each epoch (a permutation of (seed, epoch)); ``False`` = row order.
        accelerator: an ``accelerate.Accelerator`` (default: :func:`default_accelerator`).
        eval_pass: record from an extra no-grad ``model.eval()`` pass over ``rows`` after each
            epoch (the authors' protocol for EL2N / Dynamic Uncertainty) instead of from the
            training forward passes (which see the model mid-epoch, in train mode).
        progress: show a progress bar on the main process (not while ``datasets``' progress bars
            are disabled).

    Returns:
        ``recorder``, fed. The model is left in the mode (train or eval) it came in.
    """
    from accelerate.utils import DistributedType, set_seed
    from tqdm.auto import tqdm

    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    was_training = model.training
    accelerator = accelerator or default_accelerator()
    set_seed(seed)
    if optimizer is None:
        optimizer = default_optimizer(model, lr)
    labels = np.array(labels, dtype=np.int64)  # a copy: Arrow buffers are read-only (torch shares it)
    labels_t = torch.from_numpy(labels)
    rows = np.asarray(rows, dtype=np.int64)

    def collate(positions: Any) -> dict:
        ids = rows[np.asarray(positions, dtype=np.int64)]
        return {"row_ids": torch.from_numpy(ids), "labels": labels_t[ids], "inputs": make_inputs(ids)}

    sampler = _EpochPermutation(len(rows), seed, shuffle)
    # one plain process (no XLA / DeepSpeed engine, which need Accelerate's own dataloader)
    single = accelerator.num_processes == 1 and accelerator.distributed_type == DistributedType.NO
    eval_loader = None
    if single:  # batches cut from the epoch's order, collated and placed by the loop itself
        model, optimizer = accelerator.prepare(model, optimizer)
        device = accelerator.device if accelerator.device_placement and accelerator.device.type != "cpu" else None
        loader = _OrderedBatches(sampler, batch_size, collate, device)
        if eval_pass:
            eval_loader = _OrderedBatches(_EpochPermutation(len(rows), seed, shuffle=False), batch_size, collate, device)
    else:  # Accelerate shards each global batch across the processes
        loader = torch.utils.data.DataLoader(range(len(rows)), batch_size=batch_size, sampler=sampler, collate_fn=collate)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        if eval_pass:
            eval_loader = accelerator.prepare(torch.utils.data.DataLoader(
                range(len(rows)), batch_size=batch_size, shuffle=False, collate_fn=collate))
    stepper = _plain_optimizer(accelerator, optimizer)
    # Accelerate's backward divides the loss by the accumulation steps (1 here: a tensor operation
    # for nothing) unless a grad scaler or an engine takes it
    backward = torch.Tensor.backward if _passes_through(accelerator) else accelerator.backward

    tap = _FeatureTap(last_linear(accelerator.unwrap_model(model))) if recorder is not None and recorder.needs_features else None

    # One plain process: stage the logits and feed the recorder per chunk (the batches come in the
    # epoch's order). Otherwise: gather each batch by row id across processes and feed it at once.
    stage = None
    if recorder is not None and single:
        recorder.check_epoch_rows(rows, labels)  # once, instead of at every fold
        recorder.set_final_epoch(epochs - 1)  # every row is fed in every epoch
        stage = _EpochStage(recorder, labels, batch_size)

    def feature_norms(rows: int) -> Optional[torch.Tensor]:
        # GraNd needs only ‖h‖: stage (or gather) a (B, 1) norm rather than the (B, H) features.
        return None if tap is None else torch.linalg.vector_norm(tap.value.reshape(rows, -1), dim=1, keepdim=True)

    def record(batch: dict, logits: torch.Tensor, epoch: int) -> None:
        """Feed one batch, gathered across processes by row id (when the steps are not staged)."""
        if recorder is None:
            return
        norms = feature_norms(len(logits))
        parts = [batch["row_ids"], logits.detach(), batch["labels"]] + ([norms] if norms is not None else [])
        gathered = accelerator.gather_for_metrics(tuple(parts))
        recorder.update(gathered[0], gathered[1], gathered[2], epoch, gathered[3] if tap is not None else None)

    def run_pass(epoch: int, passing: Any, order: Optional[np.ndarray], records: bool, trains: bool) -> None:
        """One pass over the loader ``passing`` (whose batches bring the rows ``order``): record its
        logits when ``records``, take an optimizer step per batch when ``trains``."""
        staged = records and stage is not None
        slots = stage.start(epoch, order) if staged else []
        norm_slots = stage.norm_slots if staged else []
        planned, step = len(slots), 0
        for batch in passing:
            logits = model_logits(call_model(model, batch["inputs"]))
            if staged:  # one copy (two with GraNd's norms) into the step's slots, no call; reads the
                # logits, which the step below does not change
                slot = slots[step] if step < planned else None
                if tap is None:
                    if slot is not None and logits.dtype is stage.slot_dtype and logits.shape == slot.shape:
                        slot.copy_(logits.detach())
                    else:
                        stage.add(logits.detach(), None, step)
                else:
                    norms = feature_norms(len(logits))
                    norm_slot = norm_slots[step] if slot is not None else None
                    if (norm_slot is not None and logits.dtype is stage.slot_dtype and norms.dtype is stage.norm_dtype
                            and logits.shape == slot.shape):
                        slot.copy_(logits.detach())
                        norm_slot.copy_(norms)
                    else:
                        stage.add(logits.detach(), norms, step)
            elif records:
                record(batch, logits, epoch)
            if trains:
                loss = F.cross_entropy(logits, batch["labels"])
                backward(loss)
                stepper.step()
                stepper.zero_grad(set_to_none=True)
            bar.update()
            step += 1
        if records and stage is not None:
            stage.end_epoch(step)  # parked with the epochs before; folded when the chunk is full

    steps = epochs * (len(loader) + (len(eval_loader) if eval_loader is not None else 0))
    shown = show_progress(progress) and accelerator.is_main_process
    bar = tqdm(total=steps, desc="Training dynamics", disable=not shown)
    try:
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            model.train()
            order = rows[sampler.order()] if stage is not None and eval_loader is None else None
            run_pass(epoch, loader, order, records=eval_loader is None, trains=True)
            if eval_loader is not None:
                model.eval()
                with torch.no_grad():  # in row order: the eval loader is sequential
                    run_pass(epoch, eval_loader, rows, records=True, trains=False)
        if stage is not None:
            stage.hand_over()
    finally:
        bar.close()
        if tap is not None:
            tap.close()
    model.train(was_training)
    return recorder
