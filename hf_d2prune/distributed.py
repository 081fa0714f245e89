"""Running a step in each process of ``accelerate launch`` / ``torchrun``: shards and gathers.

A launch is recognised when ``torch.distributed`` is initialised with several processes or
``WORLD_SIZE`` > 1; the process group is then set up (or adopted) through
``accelerate.PartialState``: gloo on CPU, NCCL on GPUs. Rows are split into contiguous shards,
one per process (:func:`shard_bounds`, the split of ``Dataset.shard(contiguous=True)``), and
:func:`all_gather_rows` brings every process's rows to every process in chunks of raw bytes of
bounded size, each row tagged with its row index: rows are placed by index, whatever the shard
sizes, the order of arrival or the dtype, and nothing large is pickled.

torch and accelerate are imported only once a launch is recognised.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from . import errors

__all__ = [
    "Processes",
    "launched",
    "current_processes",
    "shard_bounds",
    "all_gather_objects",
    "exchange",
    "all_gather_rows",
    "progress_bars",
    "show_progress",
]

#: Bytes received per process and round of :func:`all_gather_rows` (all processes together).
GATHER_CHUNK_BYTES = 64 << 20
_CPU_BACKENDS = {"gloo", "mpi", "ccl"}


@dataclass(frozen=True)
class Processes:
    """This process's place in a launch of several.

    Attributes:
        rank: index of this process, 0 for the main one.
        world: number of processes.
        local_world: processes on this machine (0 when the launcher does not say).
        device: this process's compute device (``cuda:<local rank>`` on GPUs, ``cpu`` otherwise).
        comm_device: where tensors given to the process group's collectives must live.
    """

    rank: int
    world: int
    local_world: int
    device: Any
    comm_device: Any

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def single_machine(self) -> bool:
        """True when every process runs on this machine (they share its file system)."""
        return self.local_world == self.world

    def compute_device(self, requested: Optional[str]) -> str:
        """The device for this process's model: its own one unless a specific device was asked for.

        ``None`` or a device type without an index (``"cuda"``) means this process's device
        (``cuda:<local rank>``), so the processes do not all pile onto the first GPU.
        """
        if requested is None:
            return str(self.device)
        requested = str(requested)
        if requested == getattr(self.device, "type", None):
            return str(self.device)
        return requested


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


def launched() -> bool:
    """True inside a launch of several processes; cheap, and initialises nothing.

    ``WORLD_SIZE`` > 1 (set by ``torchrun`` and ``accelerate launch``) or a process group of
    more than one process already initialised (e.g. by an ``Accelerator``).
    """
    if _env_int("WORLD_SIZE", 1) > 1:
        return True
    torch = sys.modules.get("torch")  # not imported: no process group can exist
    if torch is None:
        return False
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def current_processes() -> Optional[Processes]:
    """This process's :class:`Processes` inside a launch of several, else ``None``.

    Sets up the process group with ``accelerate.PartialState`` when it is not yet initialised
    (CPU processes with gloo when the machine has no accelerator, as ``accelerate launch --cpu``).
    """
    if not launched():
        return None
    import torch
    from accelerate import PartialState

    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    force_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=force_cpu or not has_device)
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        if state.num_processes > 1:
            raise errors.InvalidParameterError(
                f"this launch runs {state.num_processes} processes ({state.distributed_type}) without a "
                f"torch.distributed process group; hf_d2prune needs one (torchrun or accelerate launch with gloo or NCCL)."
            )
        return None
    rank, world = dist.get_rank(), dist.get_world_size()
    if world <= 1:
        return None
    backends = {part.split(":")[-1] for part in str(dist.get_backend()).split(",")}
    device = state.device if state.device is not None else torch.device("cpu")
    comm_device = torch.device("cpu") if backends & _CPU_BACKENDS or device.type == "cpu" else device
    return Processes(rank=rank, world=world, local_world=_env_int("LOCAL_WORLD_SIZE", 0), device=device,
                     comm_device=comm_device)


def shard_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: ``n`` rows in ``world`` contiguous shards whose sizes differ by at most one.

    The same split as ``Dataset.shard(num_shards=world, index=rank, contiguous=True)``.
    """
    div, mod = divmod(n, world)
    bounds = []
    for rank in range(world):
        start = rank * div + min(rank, mod)
        bounds.append((start, start + div + (1 if rank < mod else 0)))
    return bounds


def all_gather_objects(obj: Any) -> list:
    """``[obj of process 0, obj of process 1, ...]`` on every process (small picklable objects only)."""
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def exchange(error: Optional[BaseException], payload: Any = None, *, what: str = "the step") -> list:
    """Tell every process whether this one failed; raise everywhere if any did, else return all payloads.

    Every process must call it at the same point. The process that failed re-raises its own
    exception; the others raise the same hf_d2prune error class (``RuntimeError`` for any other
    exception) naming the process, instead of waiting forever for it in the next collective.
    """
    report = None if error is None else (type(error).__name__, str(error))
    gathered = all_gather_objects((report, payload))
    if error is not None:
        raise error
    for rank, (other, _) in enumerate(gathered):
        if other is not None:
            name, message = other
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, errors.D2PruneError)):
                cls = RuntimeError
            raise cls(f"{what} failed in process {rank} of {len(gathered)}: {name}: {message}")
    return [p for _, p in gathered]


def all_gather_rows(local: np.ndarray, start: int, n: int, procs: Processes, *, keep: bool = True) -> Optional[np.ndarray]:
    """Gather every process's rows into one ``(n, d)`` array, placed by row index.

    Each process passes its rows ``local`` (``(k, d)``, rows ``start .. start + k - 1`` of the
    whole), in the same dtype and width everywhere. The rows travel as bytes, each prefixed with
    its int64 row index, in rounds of at most :data:`GATHER_CHUNK_BYTES` received per process;
    shorter shards are padded with rows of index -1, which are dropped. Every process must call
    it; with ``keep=False`` a process takes part without assembling the result (returns ``None``).

    Raises:
        RuntimeError: the rows received do not cover ``0 .. n-1`` exactly once.
    """
    import torch
    import torch.distributed as dist

    local = np.ascontiguousarray(local)
    if local.ndim != 2:
        raise ValueError(f"rows must be a 2-D array, got shape {local.shape}")
    k, d = local.shape
    dtype = local.dtype
    row_bytes = 8 + d * dtype.itemsize
    counts = all_gather_objects(k)
    longest = max(counts)
    chunk = max(1, GATHER_CHUNK_BYTES // (procs.world * row_bytes))
    full = np.empty((n, d), dtype=dtype) if keep else None
    seen = np.zeros(n, dtype=bool) if keep else None
    ids = np.arange(start, start + k, dtype=np.int64)
    payload = local.view(np.uint8).reshape(k, d * dtype.itemsize) if d else np.zeros((k, 0), np.uint8)
    for offset in range(0, longest, chunk):
        rows = min(chunk, longest - offset)
        buf = np.zeros((rows, row_bytes), dtype=np.uint8)
        buf[:, :8] = np.full(rows, -1, dtype=np.int64).view(np.uint8).reshape(rows, 8)
        mine = max(0, min(rows, k - offset))
        if mine:
            buf[:mine, :8] = ids[offset:offset + mine].view(np.uint8).reshape(mine, 8)
            buf[:mine, 8:] = payload[offset:offset + mine]
        send = torch.from_numpy(buf).to(procs.comm_device)
        received = [torch.empty_like(send) for _ in range(procs.world)]
        dist.all_gather(received, send)
        if not keep:
            continue
        for part in received:
            block = part.cpu().numpy()
            row_ids = np.ascontiguousarray(block[:, :8]).view(np.int64).ravel()
            valid = row_ids >= 0
            if not valid.any():
                continue
            row_ids = row_ids[valid]
            if row_ids.max() >= n or seen[row_ids].any():
                raise RuntimeError(f"all_gather_rows: received row ids outside 0..{n - 1} or twice")
            full[row_ids] = np.ascontiguousarray(block[valid, 8:]).view(dtype).reshape(len(row_ids), d)
            seen[row_ids] = True
    if keep and not seen.all():
        missing = np.flatnonzero(~seen)
        raise RuntimeError(f"all_gather_rows: {missing.size} of {n} rows were not received (first: {missing[0]})")
    return full


def show_progress(requested: bool) -> bool:
    """Whether a progress bar the caller asked for is shown: not while ``datasets``' own bars are
    switched off (``datasets.disable_progress_bars()``, or ``HF_DATASETS_DISABLE_PROGRESS_BARS=1``),
    so that one switch silences the library's bars with those of ``Dataset.map``."""
    import datasets

    return bool(requested) and not datasets.are_progress_bars_disabled()


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Hide ``datasets``' progress bars inside the block unless ``enabled`` (restored afterwards)."""
    import datasets

    if enabled or datasets.are_progress_bars_disabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()
