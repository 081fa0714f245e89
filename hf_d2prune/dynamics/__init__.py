"""Training dynamics: record per-example scores while a model trains.

- :class:`DynamicsRecorder` — online accumulators fed once per batch (no torch needed);
- :func:`train_dynamics` — train a model with Accelerate on a ``datasets.Dataset`` and add one
  float32 column per score (higher = harder);
- :class:`DynamicsTrainer` / :class:`DynamicsCallback` — the same scores from a transformers
  ``Trainer`` run.

torch, accelerate and transformers are imported only when those are used.
"""

from __future__ import annotations

from typing import Any

from .recorder import DEFAULT_SCORES, KNOWN_SCORES, SCORE_OPTIONS, DynamicsRecorder, required_epochs

__all__ = [
    "DynamicsRecorder", "KNOWN_SCORES", "DEFAULT_SCORES", "SCORE_OPTIONS", "required_epochs",
    "train_dynamics", "DynamicsTrainer", "DynamicsCallback", "with_dynamics", "add_row_ids",
]

_LAZY = {
    "train_dynamics": ".api",
    "DynamicsTrainer": ".trainer", "DynamicsCallback": ".trainer", "with_dynamics": ".trainer", "add_row_ids": ".trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
