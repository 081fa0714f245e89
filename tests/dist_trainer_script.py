"""Record dynamics with a DynamicsTrainer on digits and save the scores: `python this.py OUT.npz`,
or under torchrun. `python this.py OUT.npz accumulate` instead trains 682 rows (the last batch of
an epoch is padded out) with 2 gradient-accumulation steps and saves how often each row was recorded;
`python this.py OUT.npz stream` the same for two passes over a stream of 639 rows whose ids index 640.

Used by tests/test_dynamics_training.py to compare 1 and 2 processes (gloo on CPU). Each process
takes batch_size / P rows of every global batch of 64 (sequential sampling: the same global
batches in both runs) and DDP averages the mean-loss gradients, so the runs take the same steps;
each process gathers every batch's (row ids, logits, labels) by row id, so every
process records all rows and the scores agree up to float summation order. 640 rows: no padding.
"""

import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

sys.path.insert(0, os.path.dirname(__file__))
from test_dynamics_training import Head, digits_dataset  # noqa: E402

from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids  # noqa: E402
from transformers_compat import emulate_sampling_strategy  # noqa: E402

SCORES = ["forgetting", "aum", "el2n", "entropy", "margin", "confidence", "variability", "tdds"]


def main(path: str, mode: str = "") -> None:
    from transformers import TrainingArguments

    emulate_sampling_strategy()  # transformers 4.x: train_sampling_strategy= below
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    accumulate, stream = mode == "accumulate", mode == "stream"
    ds = digits_dataset(flip_fraction=0.1)[0].select(range(682 if accumulate else 640))
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=2 if accumulate else 4, max_steps=40 if stream else -1,
        per_device_train_batch_size=(32 if mode else 64) // processes,
        gradient_accumulation_steps=2 if accumulate else 1,
        learning_rate=3e-3, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
        optim="adamw_torch", train_sampling_strategy="sequential", report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, ddp_find_unused_parameters=False,
    )
    train = add_row_ids(ds)
    if stream:  # 639 rows whose ids index 640 (one row filtered out)
        train = train.select(range(639)).to_iterable_dataset().with_format("torch")
    else:
        train = train.with_format("torch")
    dynamics = DynamicsCallback(scores=SCORES, tdds_window=2 if mode else 3, n_rows=640 if stream else None)
    trainer = DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=dynamics)
    trainer.train()
    out = dynamics.results()
    if mode:  # presentations of each row (AUM's count)
        out = {"presentations": dynamics.recorder.families[SCORES.index("aum")].seen}
    if int(os.environ.get("RANK", "0")) == 0:
        np.savez(path, processes=np.array(trainer.accelerator.num_processes), **out)
    trainer.accelerator.wait_for_everyone()  # rank 0 has saved before any process leaves


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:3])
    # Leave without running the interpreter's teardown: tearing down gloo's threads there aborts now and
    # then ("terminate called without an active exception"), failing a run whose results are saved.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
