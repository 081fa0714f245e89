"""Cost of recording training dynamics: epoch time with vs without the recorder, and state bytes.

Trains a small MLP on scikit-learn's digits (1,797 rows, 64 pixels, 10 classes) with the
library's Accelerate loop (`fit_and_record`) and its default optimizer (fused AdamW). "off" runs
that loop without a recorder (same model, optimizer and dataloader, no recording at all); the
others feed a fresh `DynamicsRecorder` with the scores listed and compute its scores at the end
of the run. Runs of 10 epochs (``train_dynamics``' default) alternate between the modes in one
process (one model keeps training throughout), in an order reversed every other round (no mode
always runs first or after the same one), so machine load hits all alike; a small model shows the
most relative overhead (the recorder's cost per row does not grow with the model). A run's fixed costs (checking the rows, making the buffers, computing the scores at the
end) are spread over its epochs, so shorter runs show more of them. Also prints the
per-row state of each score family. `--model cnn` runs the examples' small CNN on 6,000
Fashion-MNIST images instead (a model whose step, not the recorder, dominates); `--model linear`
a linear head on 2,000 rows of 384 features and 2 classes, the shape of
`examples/dynamics_text.py` (a head on frozen MiniLM embeddings; the features here are seeded
Gaussian noise with labels from a random linear teacher, since the time of a step does not depend on
the values). Besides the relative overhead it prints what recording adds per row and epoch, in
nanoseconds: a cost that does not grow with the model, so ``added ns / 0.05`` is the training cost per
row and epoch above which recording stays under 5%. `--eval-pass`
records from a no-grad pass over the rows after each epoch (``eval_pass=True``); "off" then
runs that pass too, without recording it. `--trainer` trains the MLP with transformers' `Trainer`
instead (a torch-formatted dataset, its default collator and optimizer): "off" is a plain `Trainer`,
the others a `DynamicsTrainer` with a `DynamicsCallback` (no GraNd: a Trainer run has no features);
each run times `train()`, not the Trainer's construction.

    python benchmarks/bench_dynamics.py [--epochs 10] [--rounds 15] [--batch-size 64] [--hidden 256]
                                        [--model mlp|cnn|linear] [--threads 1] [--eval-pass] [--trainer]
"""

from __future__ import annotations

import argparse
import gc
import platform
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from hf_d2prune.dynamics import DEFAULT_SCORES, KNOWN_SCORES, DynamicsRecorder
from hf_d2prune.dynamics.loop import default_accelerator, default_optimizer, fit_and_record


class TimedRecorder(DynamicsRecorder):
    """A real recorder that also sums the time spent inside its own update(), fold(), flush() and
    results() (outermost calls only: update(), fold() and results() call flush())."""

    spent = 0.0
    _depth = 0

    def _timed(self, method, *args, **kwargs):
        start = time.perf_counter()
        self._depth += 1
        try:
            return method(*args, **kwargs)
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.spent += time.perf_counter() - start

    def update(self, *args, **kwargs):
        return self._timed(super().update, *args, **kwargs)

    def fold(self, *args, **kwargs):
        return self._timed(super().fold, *args, **kwargs)

    def flush(self):
        return self._timed(super().flush)

    def results(self):
        return self._timed(super().results)


class _Classifier(torch.nn.Module):
    """``model`` as a Trainer wants it: keyword inputs, and the loss returned with the logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels, labels=None):
        logits = self.model(pixels)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def trainer_run(model, pixels, labels, args):
    """A function (recorder or None, seed) → seconds of one Trainer run's ``train()`` (the Trainer's
    construction is not timed), ``args.epochs`` epochs on the rows; with a recorder, a
    DynamicsTrainer whose DynamicsCallback feeds that recorder."""
    import tempfile

    import datasets
    from transformers import PrinterCallback, Trainer, TrainingArguments

    import hf_d2prune.dynamics.trainer as module
    from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids

    train = add_row_ids(datasets.Dataset.from_dict({"pixels": pixels.numpy(), "label": labels}).with_format("torch"))
    wrapped = _Classifier(model)
    folder = tempfile.mkdtemp()

    def train_once(recorder, seed):
        training = TrainingArguments(
            output_dir=folder, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            learning_rate=1e-3, weight_decay=0.0, report_to=[], save_strategy="no", logging_strategy="no",
            use_cpu=True, seed=seed, disable_tqdm=True,
        )
        if recorder is None:
            trainer = Trainer(model=wrapped, args=training, train_dataset=train)
        else:
            trainer = DynamicsTrainer(model=wrapped, args=training, train_dataset=train,
                                      dynamics=DynamicsCallback(scores=recorder.scores, **recorder.score_options))
        trainer.remove_callback(PrinterCallback)  # it prints the run's metrics
        gc.collect()  # train() collects garbage itself: start every run from a clean heap
        # the callback makes its recorder at the first step: make it the benchmark's timed one
        module.DynamicsRecorder = lambda *args, **kwargs: recorder
        try:
            start = time.perf_counter()  # train(), not the Trainer's construction
            trainer.train()
            return time.perf_counter() - start
        finally:
            module.DynamicsRecorder = DynamicsRecorder

    return train_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each training run (train_dynamics' default)")
    parser.add_argument("--rounds", type=int, default=15, help="runs per mode (interleaved)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256, help="hidden width of the MLP")
    parser.add_argument("--model", choices=["mlp", "cnn", "linear"], default="mlp",
                        help="mlp: the MLP on digits; cnn: the examples' small CNN on 6,000 Fashion-MNIST "
                             "images, batch 128 (apt-get install dataset-fashion-mnist); linear: a linear head "
                             "on 2,000 rows of 384 features, 2 classes (examples/dynamics_text.py's shape)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-pass", action="store_true",
                        help="record from an eval pass after each epoch (eval_pass=True); 'off' runs that pass too")
    parser.add_argument("--trainer", action="store_true",
                        help="train with transformers' Trainer instead: 'off' is a plain Trainer, the others a "
                             "DynamicsTrainer with a DynamicsCallback")
    args = parser.parse_args()
    if args.trainer and args.eval_pass:
        parser.error("--eval-pass is an option of the library's loop, not of the Trainer")
    torch.set_num_threads(args.threads)

    if args.model == "mlp":
        bunch = load_digits()
        pixels = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
        labels = bunch.target.astype(np.int64)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 10))
        setup = f"digits: {len(labels)} rows, MLP 64-{args.hidden}-10"
    elif args.model == "linear":
        rng = np.random.default_rng(0)
        pixels = torch.from_numpy(rng.standard_normal((2000, 384), dtype=np.float32))
        teacher = rng.standard_normal((384, 2), dtype=np.float32)
        labels = np.asarray(pixels.numpy() @ teacher).argmax(axis=1).astype(np.int64)
        torch.manual_seed(0)
        model = torch.nn.Linear(384, 2)
        setup = f"{len(labels)} rows of 384 Gaussian features, 2 classes, linear head 384-2"
    else:
        from hf_d2prune.builtin import load_builtin

        images = load_builtin("fashion_mnist").select(range(6000)).with_format("numpy")
        pixels = torch.from_numpy(np.asarray(images["image"], dtype=np.float32)).unsqueeze(1) / 255.0
        labels = np.asarray(images["label"], dtype=np.int64)
        torch.manual_seed(0)
        nn = torch.nn
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )
        setup = f"Fashion-MNIST: {len(labels)} rows, CNN conv16-conv32-fc128-10"
    rows = np.arange(len(labels))
    # the library's default (fused AdamW): one optimizer for every run, so one model keeps training
    optimizer = default_optimizer(model, 1e-2 if args.model == "linear" else 1e-3)
    accelerator = default_accelerator()
    n = len(rows)
    classes = int(labels.max()) + 1
    # windows the run is long enough for (Dynamic Uncertainty needs du_window + 1 epochs): every score is computed
    windows = {"du_window": max(2, min(10, args.epochs - 1)), "tdds_window": max(2, min(10, args.epochs))}
    modes = {
        "off": lambda: None,
        f"default {len(DEFAULT_SCORES)} scores": lambda: TimedRecorder(n, classes, DEFAULT_SCORES),
        f"all but grand ({len(KNOWN_SCORES) - 1} scores)": lambda: TimedRecorder(n, classes, [s for s in KNOWN_SCORES if s != "grand"], **windows),
        f"all {len(KNOWN_SCORES)} scores (grand taps the features)": lambda: TimedRecorder(n, classes, list(KNOWN_SCORES), **windows),
    }
    if args.trainer:
        del modes[f"all {len(KNOWN_SCORES)} scores (grand taps the features)"]  # no features in a Trainer run
        train_once = trainer_run(model, pixels, labels, args)
        setup += ", transformers Trainer (off: Trainer, on: DynamicsTrainer + DynamicsCallback)"
    else:
        def train_once(recorder, seed):
            start = time.perf_counter()
            fit_and_record(model, lambda ids: pixels[torch.from_numpy(ids)], labels, rows, recorder, epochs=args.epochs,
                           batch_size=args.batch_size, optimizer=optimizer, seed=seed, accelerator=accelerator,
                           progress=False, eval_pass=args.eval_pass)
            return time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in modes}
    inside: dict[str, list[float]] = {name: [] for name in modes}
    for block in range(args.rounds + 1):  # round 0 warms up
        order = list(modes.items())
        for name, make in (order if block % 2 == 0 else order[::-1]):
            recorder = make()  # a fresh recorder per run, as a user's run has
            elapsed = train_once(recorder, block)  # seconds of training (and recording)
            start = time.perf_counter()
            if recorder is not None:
                recorder.results()  # fold in what is still staged and compute the scores: all the cost lands here
            if block:
                times[name].append((elapsed + time.perf_counter() - start) / args.epochs)
                inside[name].append(getattr(recorder, "spent", 0.0) / args.epochs)

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}")
    print(f"{setup}, batch {args.batch_size}; {args.rounds} runs of "
          f"{args.epochs} epochs per mode, interleaved{', eval pass after each epoch' if args.eval_pass else ''}\n")
    off = np.asarray(times["off"])
    print("Epoch time = a run's time (training, recording, final scores) / its epochs. Overhead = the median")
    print("over rounds of (this mode's epoch time / the off epoch time of the same round) − 1, with the")
    print("quartiles of those ratios; 'inside' = time spent in the recorder's own update(), fold(), flush() and")
    print("results() as a share of the off epoch time (its direct cost, free of the noise of the rest). Per row")
    print("= the median over rounds of (this mode's epoch time − the off epoch time) / rows, in ns; for off, its")
    print("own epoch time per row. Recording stays under 5% while the training costs over 20× that per row.\n")
    print("| recorder | median epoch (ms) | overhead vs off (quartiles) | inside the recorder | per row and epoch |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        if name == "off":
            print(f"| off | {1000 * np.median(off):.1f} | — | — | {1e9 * np.median(off) / n:,.0f} ns of training |")
            continue
        ratio = 100 * (np.asarray(values) / off - 1)
        low, mid, high = np.percentile(ratio, [25, 50, 75])
        share = 100 * np.median(np.asarray(inside[name]) / off)
        added = 1e9 * np.median(np.asarray(values) - off) / n
        print(f"| {name} | {1000 * np.median(values):.1f} | {mid:+.1f}% ({low:+.1f}% … {high:+.1f}%) | {share:.1f}% "
              f"| +{added:,.0f} ns |")

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
