"""The record of what each step did, kept inside the dataset's own ``info``.

Each step (embed, coreset, ...) appends one JSON object to a list stored in
``ds.info.description`` between two markers, so the record travels with the dataset through
``save_to_disk``, ``push_to_hub`` and ``load_dataset`` and a dataset card can be generated
from the dataset alone. Text a user wrote in the description is kept as is.
"""

from __future__ import annotations

import copy
import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

__all__ = ["read_provenance", "with_step", "library_version"]

_START = "<!-- hf_d2prune provenance:"
_END = ":hf_d2prune provenance -->"
_BLOCK = re.compile(re.escape(_START) + r"(.*?)" + re.escape(_END), re.DOTALL)


def library_version() -> str:
    from . import __version__

    return __version__


def read_provenance(ds: "datasets.Dataset") -> list[dict[str, Any]]:
    """Return the list of steps recorded on ``ds`` (oldest first); empty if none."""
    description = ds.info.description or ""
    match = _BLOCK.search(description)
    if not match:
        return []
    return json.loads(match.group(1))


def _plain(value: Any) -> Any:
    """JSON fallback: numpy scalars and arrays (``keep=np.float32(0.3)``) as Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"provenance value {value!r} ({type(value).__name__}) is not JSON serialisable")


def with_step(ds: "datasets.Dataset", step: dict[str, Any]) -> "datasets.Dataset":
    """Return ``ds`` with ``step`` appended to its provenance.

    ``ds`` must be a dataset freshly returned by a transform (its ``info`` is its own copy);
    the caller's input dataset is never touched. A step recorded again with the same
    ``step`` name and output column replaces the earlier record.
    """
    steps = [
        s for s in read_provenance(ds)
        if not (s.get("step") == step.get("step") and s.get("output") == step.get("output"))
    ]
    steps.append({**step, "library_version": library_version()})
    description = _BLOCK.sub("", ds.info.description or "").rstrip()
    block = f"{_START}{json.dumps(steps, sort_keys=True, default=_plain)}{_END}"
    info = copy.deepcopy(ds.info)
    info.description = f"{description}\n\n{block}" if description else block
    ds._info = info  # the new dataset's own info object; datasets has no public setter
    return ds
