"""``TrainingArguments(train_sampling_strategy=...)`` for transformers 4.x, which has no such argument.

The tests ask for a run's order with it as transformers 5 spells it ("random", "sequential",
"group_by_length"). On 4.x the argument is accepted and kept on the arguments (which is where
``DynamicsTrainerMixin`` looks for it), "group_by_length" sets ``group_by_length=True`` and
"sequential" makes the Trainer's sampler a ``SequentialSampler``. On 5.x nothing changes.
"""

from __future__ import annotations

import functools


def emulate_sampling_strategy() -> None:
    import torch
    from transformers import Trainer, TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__ or hasattr(Trainer, "_sampling_emulated"):
        return
    init = TrainingArguments.__init__

    @functools.wraps(init)
    def __init__(self, *args, train_sampling_strategy="random", **kwargs):
        if train_sampling_strategy == "group_by_length":
            kwargs["group_by_length"] = True
        init(self, *args, **kwargs)
        self.train_sampling_strategy = train_sampling_strategy

    sampler = Trainer._get_train_sampler

    def _get_train_sampler(self, *args, **kwargs):
        if getattr(self.args, "train_sampling_strategy", "random") == "sequential":
            dataset = args[0] if args else kwargs.get("train_dataset") or self.train_dataset
            return torch.utils.data.SequentialSampler(dataset)
        return sampler(self, *args, **kwargs)

    TrainingArguments.__init__ = __init__
    Trainer._get_train_sampler = _get_train_sampler
    Trainer._sampling_emulated = True
