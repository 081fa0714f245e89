"""The library's training loop against a bare PyTorch loop of the same steps, without recording.

`fit_and_record(recorder=None)` (what `train_dynamics` trains with) against a loop written by hand:
the same model, the library's default optimizer (fused AdamW), the same per-epoch permutation of the
rows, the same batches (`inputs[ids]`, `labels[ids]`), cross-entropy, `backward()`, `step()`,
`zero_grad()`; nothing else. The difference is what the library's loop adds per step (batching,
device placement, Accelerate, bookkeeping), which shows only on small models. Runs of 10 epochs
alternate between the two in one process, in an order reversed every other round; the figure is the
median over rounds of the per-round ratio.

    python benchmarks/bench_loop.py [--rounds 20] [--epochs 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from hf_d2prune.dynamics.loop import default_accelerator, default_optimizer, fit_and_record


def models():
    """(name, inputs, labels, model, lr): a linear head on 384 features (examples/dynamics_text.py's
    shape, Gaussian features) and the 64-256-10 MLP on scikit-learn's digits."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.standard_normal((2000, 384), dtype=np.float32))
    labels = (features.numpy() @ rng.standard_normal((384, 2), dtype=np.float32)).argmax(axis=1).astype(np.int64)
    torch.manual_seed(0)
    yield "linear head 384-2, 2,000 rows", features, labels, torch.nn.Linear(384, 2), 1e-2
    digits = load_digits()
    pixels = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    yield "MLP 64-256-10, digits (1,797 rows)", pixels, digits.target.astype(np.int64), mlp, 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    accelerator = default_accelerator()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}; "
          f"{args.rounds} runs of {args.epochs} epochs per loop, batch {args.batch_size}, interleaved\n")
    print("| model | bare loop (µs / step) | library loop (µs / step) | library / bare (quartiles) |")
    print("|---|---|---|---|")
    for name, inputs, labels, model, lr in models():
        optimizer = default_optimizer(model, lr)
        targets = torch.from_numpy(labels)
        rows = np.arange(len(labels))
        steps = args.epochs * -(-len(rows) // args.batch_size)

        def bare(seed: int) -> None:
            for epoch in range(args.epochs):
                order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(rows)))
                for start in range(0, len(rows), args.batch_size):
                    ids = order[start:start + args.batch_size]
                    loss = F.cross_entropy(model(inputs[ids]), targets[ids])
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

        def library(seed: int) -> None:
            fit_and_record(model, lambda ids: inputs[torch.from_numpy(ids)], labels, rows, None, epochs=args.epochs,
                           batch_size=args.batch_size, optimizer=optimizer, seed=seed, accelerator=accelerator,
                           progress=False)

        times: dict[str, list[float]] = {"bare": [], "library": []}
        loops = [("bare", bare), ("library", library)]
        for block in range(args.rounds + 1):  # round 0 warms up
            for key, run in (loops if block % 2 == 0 else loops[::-1]):
                start = time.perf_counter()
                run(block)
                if block:
                    times[key].append(time.perf_counter() - start)
        bare_t, library_t = np.asarray(times["bare"]), np.asarray(times["library"])
        low, mid, high = np.percentile(library_t / bare_t, [25, 50, 75])
        print(f"| {name} | {1e6 * np.median(bare_t) / steps:.0f} | {1e6 * np.median(library_t) / steps:.0f} | "
              f"{mid:.2f}× ({low:.2f} … {high:.2f}) |")


if __name__ == "__main__":
    main()
