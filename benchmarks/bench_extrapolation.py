"""Score extrapolation (Schmidt et al., arXiv 2506.09010) on real data: subset scoring + kNN / GNN vs full scoring.

For each dataset, 80% of the rows are the pool to prune and 20% the test split. On the pool:

1. full path: ``train_dynamics`` on every row (MLP head on frozen embeddings, 12 epochs, DU and
   TDDS with a 10-epoch window, plus AUM), timed;
2. subset path, for each fraction: ``train_dynamics(subset=f)`` then ``extrapolate`` (kNN with
   k/weighting chosen on the held-out 10% of the measured rows; GNN), timed;
3. Spearman ρ and Kendall τ of extrapolated vs full-run scores on the unmeasured rows, and the
   noise ceiling (subset-run vs full-run scores on the measured rows);
4. coreset accuracy: D2 coresets (k=10) ranked by the full scores, by the 10% + kNN scores, and
   random, at 30/50/70% pruning; a fresh MLP trained on each coreset, accuracy on the test split,
   mean over seeds.

Embeddings: digits = its 64 pixels scaled to [0, 1] (a pretrained image encoder is ~20 img/s on
2 CPU cores); SMS spam = MiniLM-L6 (``ds.d2.embed("text")``, cached under
``$HF_D2PRUNE_BENCH_CACHE`` or ``~/.cache/hf_d2prune_bench`` after the first run).

    python benchmarks/bench_extrapolation.py                 # both datasets, ~10 min on 2 cores
    python benchmarks/bench_extrapolation.py --quick         # digits only, fraction 0.1, 1 seed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau, spearmanr  # noqa: E402

import hf_d2prune  # noqa: E402,F401  (registers ds.d2)
from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.dynamics import train_dynamics  # noqa: E402
from hf_d2prune.extrapolation_api import extrapolate  # noqa: E402

CACHE = Path(os.environ.get("HF_D2PRUNE_BENCH_CACHE", Path.home() / ".cache" / "hf_d2prune_bench"))
SCORES = ["dynamic_uncertainty", "tdds", "aum"]
EPOCHS = 12


def with_embedding(ds: datasets.Dataset, matrix: np.ndarray) -> datasets.Dataset:
    return ds.add_column("embedding", matrix.astype(np.float32).tolist(),
                         feature=datasets.Sequence(datasets.Value("float32"), length=matrix.shape[1]))


def load(name: str) -> tuple[datasets.Dataset, int]:
    if name == "digits":
        ds = load_builtin("digits")
        pixels = np.stack([np.asarray(img, dtype=np.float32).ravel() / 255.0 for img in ds["image"]])
        return with_embedding(ds.remove_columns("image"), pixels), 10
    ds = load_builtin("sms_spam")
    path = CACHE / "sms_spam-minilm.npy"
    if path.exists():
        matrix = np.load(path)
    else:
        matrix = ds.d2.embed("text").d2.embeddings()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, matrix)
        tmp.replace(path)
    return with_embedding(ds.remove_columns("text"), matrix), 2


def head(dim: int, classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dim, 128), torch.nn.ReLU(), torch.nn.Linear(128, classes))


def score_run(pool, dim, classes, subset):
    start = time.perf_counter()
    out = train_dynamics(pool, head(dim, classes, 0), inputs="embedding", epochs=EPOCHS, batch_size=64, lr=1e-3,
                         scores=SCORES, subset=subset, seed=0, progress=False, du_window=10, tdds_window=10)
    return out, time.perf_counter() - start


def accuracy(train_x, train_y, test_x, test_y, classes, seed, epochs=30):
    model = head(train_x.shape[1], classes, seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    with torch.no_grad():
        return float((model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())


def bench(name: str, fractions, seeds, gnn: bool) -> dict:
    ds, classes = load(name)
    split = ds.train_test_split(test_size=0.2, seed=0, stratify_by_column="label")
    pool, test = split["train"], split["test"]
    dim = pool.features["embedding"].length
    full, t_full = score_run(pool, dim, classes, None)
    res = {"rows_pool": len(pool), "rows_test": len(test), "dim": dim, "time_full_s": round(t_full, 1),
           "correlation": {}, "time_subset_s": {}, "accuracy": {}}
    filled_10 = None
    for fraction in fractions:
        part, t_part = score_run(pool, dim, classes, fraction)
        for score in SCORES:
            mask = np.asarray(part[f"{score}_measured"])
            ref = np.asarray(full[score], dtype=np.float64)
            sub = np.asarray(part[score], dtype=np.float64)
            row = {"noise_ceiling_spearman": round(spearmanr(sub[mask], ref[mask])[0], 3),
                   "noise_ceiling_kendall": round(kendalltau(sub[mask], ref[mask])[0], 3)}
            for method in ["knn"] + (["gnn"] if gnn else []):
                start = time.perf_counter()
                out = extrapolate(part, score, method=method, label="label" if method == "gnn" else None, seed=0)
                elapsed = time.perf_counter() - start
                filled = np.asarray(out[score], dtype=np.float64)
                step = out.d2.provenance[-1]
                row[method] = {"spearman": round(spearmanr(filled[~mask], ref[~mask])[0], 3),
                               "kendall": round(kendalltau(filled[~mask], ref[~mask])[0], 3),
                               "time_s": round(elapsed, 1), "k": step["k"], "weighting": step.get("weighting"),
                               "heldout": step["validation"]["value"]}
                if method == "knn" and fraction == 0.1:
                    filled_10 = filled_10 or {}
                    filled_10[score] = filled
            res["correlation"][f"{score}@{fraction}"] = row
            print(name, fraction, score, json.dumps(row), flush=True)
        res["time_subset_s"][str(fraction)] = round(t_part, 1)

    if filled_10 is not None:
        train_x = np.asarray(pool["embedding"], dtype=np.float32)
        train_y = np.asarray(pool["label"], dtype=np.int64)
        test_x = np.asarray(test["embedding"], dtype=np.float32)
        test_y = np.asarray(test["label"], dtype=np.int64)
        rankings = {"random": pool.d2.coreset(method="random", seed=0)["random_rank"]}
        for score in ("dynamic_uncertainty", "tdds"):
            rankings[f"{score} full"] = full.d2.coreset(score, method="d2", k=10)["d2_rank"]
            scored = pool.add_column(score, filled_10[score].astype(np.float32).tolist())
            rankings[f"{score} 10%+kNN"] = scored.d2.coreset(score, method="d2", k=10)["d2_rank"]
        for prune in (0.3, 0.5, 0.7):
            keep = int(round((1 - prune) * len(pool)))
            for label, rank in rankings.items():
                rank = np.asarray(rank)
                rows = np.flatnonzero((rank >= 0) & (rank < keep))
                accs = [accuracy(train_x[rows], train_y[rows], test_x, test_y, classes, s) for s in range(seeds)]
                res["accuracy"][f"{label}@{prune}"] = [round(float(np.mean(accs)), 4), round(float(np.std(accs)), 4)]
                print(name, "prune", prune, label, res["accuracy"][f"{label}@{prune}"], flush=True)
        accs = [accuracy(train_x, train_y, test_x, test_y, classes, s) for s in range(seeds)]
        res["accuracy"]["no pruning"] = [round(float(np.mean(accs)), 4), round(float(np.std(accs)), 4)]
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits only, fraction 0.1, 1 seed")
    parser.add_argument("--datasets", nargs="+", default=["digits", "sms_spam"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per coreset")
    parser.add_argument("--no-gnn", action="store_true")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.fractions, args.seeds = ["digits"], [0.1], 1
    start = time.perf_counter()
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
               "args": vars(args)}
    for name in args.datasets:
        results[name] = bench(name, args.fractions, args.seeds, gnn=not args.no_gnn)
    results["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
