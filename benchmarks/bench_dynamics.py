"""Cost of recording training dynamics: epoch time with vs without the recorder, and state bytes.

Trains a small MLP on scikit-learn's digits (1,797 rows, 64 pixels, 10 classes) with the
library's Accelerate loop (`fit_and_record`). "off" feeds a recorder whose `update` does nothing
(the loop, the gather and the dataloader are identical); "on" feeds a real `DynamicsRecorder`
with the scores listed. Epochs alternate off/on in one process, so machine load hits both alike;
the tiny model makes this the worst case for the relative overhead (the recorder's cost per row
does not grow with the model). Also prints the per-row state of each score family.

    python benchmarks/bench_dynamics.py [--epochs 20] [--batch-size 64] [--hidden 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from hf_d2prune.dynamics import KNOWN_SCORES, DynamicsRecorder
from hf_d2prune.dynamics.loop import default_accelerator, fit_and_record


class NullRecorder(DynamicsRecorder):
    def update(self, row_ids, logits, labels, epoch, features=None):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per mode (interleaved)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bunch = load_digits()
    pixels = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    labels = bunch.target.astype(np.int64)
    rows = np.arange(len(labels))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    accelerator = default_accelerator()
    configs = {
        "off": NullRecorder(len(rows), 10, ["aum"]),
        "default 4 scores": DynamicsRecorder(len(rows), 10, ["forgetting", "aum", "el2n", "entropy"]),
        f"all but grand ({len(KNOWN_SCORES) - 1} scores)": DynamicsRecorder(
            len(rows), 10, [s for s in KNOWN_SCORES if s != "grand"]),
        f"all {len(KNOWN_SCORES)} scores (grand taps the features)": DynamicsRecorder(len(rows), 10, list(KNOWN_SCORES)),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    for epoch in range(args.epochs + 1):  # epoch 0 warms up
        for name, recorder in configs.items():
            start = time.perf_counter()
            fit_and_record(model, lambda ids: pixels[ids], labels, rows, recorder, epochs=1, batch_size=args.batch_size,
                           optimizer=optimizer, seed=epoch, accelerator=accelerator, progress=False)
            recorder.flush()  # fold every buffered batch in: the full cost lands in this epoch
            if epoch:
                times[name].append(time.perf_counter() - start)
            recorder._last_epoch[:] = -1  # each call is "epoch 0" of fit_and_record: let rows be fed again

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}")
    print(f"digits: {len(rows)} rows, MLP 64-{args.hidden}-10, batch {args.batch_size}, {args.epochs} epochs per mode, interleaved\n")
    base = np.median(times["off"])
    print("| recorder | median epoch (ms) | overhead vs off |")
    print("|---|---|---|")
    for name, values in times.items():
        median = np.median(values)
        print(f"| {name} | {1000 * median:.1f} | {'—' if name == 'off' else f'{100 * (median / base - 1):+.1f}%'} |")

    print("\nPer-row state (bytes), independent of epochs and n:")
    print("| score family | C = 10 | C = 1000 |")
    print("|---|---|---|")
    small = DynamicsRecorder(100, 10, list(KNOWN_SCORES)).state_bytes_per_row()
    large = DynamicsRecorder(100, 1000, list(KNOWN_SCORES)).state_bytes_per_row()
    for family in small:
        print(f"| {family} | {small[family]:.0f} | {large[family]:.0f} |")
    print("| + row bookkeeping (last epoch, duplicate check) | 8 | 8 |")


if __name__ == "__main__":
    main()
