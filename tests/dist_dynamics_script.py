"""Run train_dynamics on digits and save the scores: `python this.py OUT.npz`, or under torchrun.

Used by tests/test_dynamics_training.py to compare 1 and 2 processes (gloo on CPU). The default
accelerator splits each global batch of 64 rows into 32 per process and DDP averages the two
mean-loss gradients, which is the gradient of the global batch's mean loss: the two runs see
the same batches and take the same steps, so the scores agree up to float summation order.
The 640 rows are a multiple of the batch, so no process pads its last batch.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

sys.path.insert(0, os.path.dirname(__file__))
from test_dynamics_training import Head, digits_dataset  # noqa: E402

from hf_d2prune.dynamics import train_dynamics  # noqa: E402
from hf_d2prune.provenance import read_provenance  # noqa: E402

SCORES = ["forgetting", "aum", "el2n", "grand", "entropy", "margin", "confidence", "variability", "dynamic_uncertainty", "tdds"]


def main(path: str) -> None:
    ds = digits_dataset(flip_fraction=0.1)[0].select(range(640))
    out = train_dynamics(ds, Head(), inputs="pixels", epochs=4, batch_size=64, lr=3e-3, scores=SCORES,
                         du_window=2, tdds_window=3, progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        np.savez(path, processes=np.array(read_provenance(out)[-1]["num_processes"]),
                 **{name: np.asarray(out[name]) for name in SCORES})


if __name__ == "__main__":
    main(sys.argv[1])
