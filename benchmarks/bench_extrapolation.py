"""Score extrapolation (Schmidt et al., arXiv 2506.09010) on real data: subset scoring + kNN / GNN vs full scoring.

For each dataset, 80% of the rows are the pool to prune and 20% the test split. On the pool:

1. full path: ``train_dynamics`` on every row (MLP head on frozen embeddings, 12 epochs, DU and
   TDDS with a 10-epoch window, plus AUM), timed;
2. subset path, for each fraction: ``train_dynamics(subset=f)`` then ``extrapolate`` (kNN with
   k/weighting chosen on the held-out 10% of the measured rows; GNN), timed;
3. Spearman ρ and Kendall τ of extrapolated vs full-run scores on the unmeasured rows, and the
   noise ceiling (subset-run vs full-run scores on the measured rows);
4. coreset accuracy: D2 coresets (k=10) ranked by the full scores, by the subset + kNN (and GNN)
   scores of every fraction, and random (a different random coreset per seed), at 30/50/70%
   pruning; a fresh MLP trained on each coreset, accuracy and balanced accuracy (mean per-class
   recall) on the test split, mean ± std over seeds;
5. wall time of each path: scoring only (``train_dynamics`` [+ extrapolation of one score]) and
   end to end (+ the embedding of the pool and the D2 ranking, which both paths pay).

Embeddings: digits = its 64 pixels scaled to [0, 1] (a pretrained image encoder is ~20 img/s on
2 CPU cores); SMS spam = MiniLM-L6 (``ds.d2.embed("text")``, cached under
``$HF_D2PRUNE_BENCH_CACHE`` or ``~/.cache/hf_d2prune_bench`` after the first run, with the time the
embedding took in ``sms_spam-minilm.json`` next to it, so that later runs still report it).

    python benchmarks/bench_extrapolation.py --threads 1                   # both datasets, ~4 min on 2 cores
    python benchmarks/bench_extrapolation.py --quick                       # digits, fraction 0.1, 1 seed
    python benchmarks/bench_extrapolation.py --quick --datasets sms_spam   # the same on SMS spam

(+ ~45 s for the MiniLM embedding of SMS spam on the first run.) Subset runs use batch 64 like the full
run (``train_dynamics(match_steps=False)``, fewer optimizer steps); ``--subset-batch matched`` runs them with
``match_steps=True`` (batch ≈ 64 × fraction: as many optimizer steps per epoch as the full run, the
library's default for these windowed scores).
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
BATCH = 64


def with_embedding(ds: datasets.Dataset, matrix: np.ndarray) -> datasets.Dataset:
    return ds.add_column("embedding", matrix.astype(np.float32).tolist(),
                         feature=datasets.Sequence(datasets.Value("float32"), length=matrix.shape[1]))


def load(name: str) -> tuple[datasets.Dataset, int, dict]:
    """(dataset with an ``embedding`` column, number of classes, how long the embedding took)."""
    if name == "digits":
        ds = load_builtin("digits")
        start = time.perf_counter()
        pixels = np.stack([np.asarray(img, dtype=np.float32).ravel() / 255.0 for img in ds["image"]])
        embed = {"model": "pixels / 255", "rows": len(ds), "seconds": round(time.perf_counter() - start, 2)}
        return with_embedding(ds.remove_columns("image"), pixels), 10, embed
    ds = load_builtin("sms_spam")
    path, info_path = CACHE / "sms_spam-minilm.npy", CACHE / "sms_spam-minilm.json"
    if path.exists():
        matrix = np.load(path)
        embed = json.loads(info_path.read_text()) if info_path.exists() else {"seconds": None}
        embed["cached"] = True
    else:
        start = time.perf_counter()
        matrix = ds.d2.embed("text").d2.embeddings()
        embed = {"model": "sentence-transformers/all-MiniLM-L6-v2", "rows": len(ds),
                 "seconds": round(time.perf_counter() - start, 1), "load_average": os.getloadavg()[0]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, matrix)
        tmp.replace(path)
        info_path.write_text(json.dumps(embed))
        embed["cached"] = False
    return with_embedding(ds.remove_columns("text"), matrix), 2, embed


def head(dim: int, classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(dim, 128), torch.nn.ReLU(), torch.nn.Linear(128, classes))


def score_run(pool, dim, classes, subset, match_steps=False):
    """``same``: subsets train with batch 64 (fewer steps); ``matched``: ``match_steps=True`` (batch ≈ 64 × fraction)."""
    start = time.perf_counter()
    out = train_dynamics(pool, head(dim, classes, 0), inputs="embedding", epochs=EPOCHS,
                         batch_size=BATCH, lr=1e-3, scores=SCORES, subset=subset, match_steps=match_steps, seed=0,
                         progress=False, du_window=10, tdds_window=10)
    return out, time.perf_counter() - start


def accuracy(train_x, train_y, test_x, test_y, classes, seed, epochs=30) -> tuple[float, float]:
    """(accuracy, balanced accuracy) on the test split of a fresh head trained on (train_x, train_y)."""
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
        hit = model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y
    return float(hit.mean()), float(np.mean([hit[test_y == c].mean() for c in np.unique(test_y)]))


def mean_std(values) -> list[float]:
    return [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]


def timed_coreset(ds, score):
    start = time.perf_counter()
    rank = np.asarray(ds.d2.coreset(score, method="d2", k=10)["d2_rank"])
    return rank, time.perf_counter() - start


def bench(name: str, fractions, seeds, gnn: bool, repeats: int, subset_batch: str = "same") -> dict:
    ds, classes, embed = load(name)
    split = ds.train_test_split(test_size=0.2, seed=0, stratify_by_column="label")
    # Materialise the split once: on an index-mapped dataset every step that adds a column (scoring,
    # extrapolation, ranking) first rewrites the whole pool (flatten_indices), a fixed cost per call
    # that would be timed as part of each path.
    pool, test = split["train"].flatten_indices(), split["test"].flatten_indices()
    dim = pool.features["embedding"].length
    methods = ["knn"] + (["gnn"] if gnn else [])
    # Timings: the minimum over `repeats` runs of each scoring path (runs are deterministic on CPU;
    # the first run's scores are used), full and subset runs interleaved so that both see the same load.
    # One untimed run on a few rows first: the first call in a process pays one-off set-up (~1 s).
    score_run(pool.select(range(min(256, len(pool)))), dim, classes, None)
    full, t_full = score_run(pool, dim, classes, None)
    parts, t_parts = {}, {f: [] for f in fractions}
    for r in range(repeats):
        if r:
            t_full = min(t_full, score_run(pool, dim, classes, None)[1])
        for fraction in fractions:
            part, t = score_run(pool, dim, classes, fraction, subset_batch == "matched")
            parts.setdefault(fraction, part)
            t_parts[fraction].append(t)
    res = {"rows_pool": len(pool), "rows_test": len(test), "dim": dim, "embedding": embed,
           "subset_batch_size": {str(f): parts[f].d2.provenance[-1]["subset_batch_size"] for f in fractions},
           "time_full_s": round(t_full, 2), "time_full_runs": repeats, "correlation": {}, "time_subset_s": {},
           "time_extrapolate_s": {}, "accuracy": {}, "balanced_accuracy": {}, "time_coreset_s": None, "paths": {}}
    filled = {}  # (method, fraction, score) -> extrapolated scores of every pool row
    for fraction in fractions:
        part = parts[fraction]
        for score in SCORES:
            mask = np.asarray(part[f"{score}_measured"])
            ref = np.asarray(full[score], dtype=np.float64)
            sub = np.asarray(part[score], dtype=np.float64)
            row = {"measured": int(mask.sum()),
                   "noise_ceiling_spearman": round(spearmanr(sub[mask], ref[mask])[0], 3),
                   "noise_ceiling_kendall": round(kendalltau(sub[mask], ref[mask])[0], 3)}
            for method in methods:
                start = time.perf_counter()
                out = extrapolate(part, score, method=method, label="label" if method == "gnn" else None, seed=0)
                elapsed = time.perf_counter() - start
                values = np.asarray(out[score], dtype=np.float64)
                step = out.d2.provenance[-1]
                row[method] = {"spearman": round(spearmanr(values[~mask], ref[~mask])[0], 3),
                               "kendall": round(kendalltau(values[~mask], ref[~mask])[0], 3),
                               "time_s": round(elapsed, 2), "k": step["k"], "weighting": step.get("weighting"),
                               "heldout": step["validation"]["value"]}
                if method == "gnn":
                    row[method]["epochs"] = [step["validation"]["best_epoch"], step["validation"]["epochs_run"]]
                filled[method, fraction, score] = values
            res["correlation"][f"{score}@{fraction}"] = row
            print(name, fraction, score, json.dumps(row), flush=True)
        res["time_subset_s"][str(fraction)] = round(min(t_parts[fraction]), 2)
        res["time_extrapolate_s"][str(fraction)] = {
            m: round(float(np.mean([res["correlation"][f"{s}@{fraction}"][m]["time_s"] for s in SCORES])), 2)
            for m in methods}

    train_x = np.asarray(pool["embedding"], dtype=np.float32)
    train_y = np.asarray(pool["label"], dtype=np.int64)
    test_x = np.asarray(test["embedding"], dtype=np.float32)
    test_y = np.asarray(test["label"], dtype=np.int64)
    rankings = {}  # label -> one rank array, or one per seed (random)
    rankings["random"] = [np.asarray(pool.d2.coreset(method="random", seed=s)["random_rank"]) for s in range(seeds)]
    coreset_times = []
    for score in ("dynamic_uncertainty", "tdds"):
        rankings[f"{score} full"], t = timed_coreset(full, score)
        coreset_times.append(t)
        for fraction in fractions:
            for method in methods:
                scored = pool.add_column(score, filled[method, fraction, score].astype(np.float32).tolist())
                rankings[f"{score} {fraction:.0%}+{method}"], t = timed_coreset(scored, score)
                coreset_times.append(t)
    t_coreset = float(np.mean(coreset_times))
    res["time_coreset_s"] = round(t_coreset, 2)
    for prune in (0.3, 0.5, 0.7):
        keep = int(round((1 - prune) * len(pool)))
        for label, rank in rankings.items():
            accs, bals = [], []
            for s in range(seeds):
                r = rank[s] if isinstance(rank, list) else rank
                rows = np.flatnonzero((r >= 0) & (r < keep))
                acc, bal = accuracy(train_x[rows], train_y[rows], test_x, test_y, classes, s)
                accs.append(acc)
                bals.append(bal)
            res["accuracy"][f"{label}@{prune}"] = mean_std(accs)
            res["balanced_accuracy"][f"{label}@{prune}"] = mean_std(bals)
            print(name, "prune", prune, label, mean_std(accs), mean_std(bals), flush=True)
    runs = [accuracy(train_x, train_y, test_x, test_y, classes, s) for s in range(seeds)]
    res["accuracy"]["no pruning"] = mean_std([a for a, _ in runs])
    res["balanced_accuracy"]["no pruning"] = mean_std([b for _, b in runs])

    # Wall time of each path for one score. The embedding of the pool (its share of the whole
    # dataset's embedding time) and the D2 ranking are paid by both paths.
    t_embed = embed["seconds"] * len(pool) / len(ds) if embed.get("seconds") is not None else None
    shared = (t_embed or 0.0) + t_coreset
    res["paths"]["full"] = {"scoring_s": round(t_full, 2), "end_to_end_s": round(t_full + shared, 2)}
    for fraction in fractions:
        for method in methods:
            scoring = min(t_parts[fraction]) + res["time_extrapolate_s"][str(fraction)][method]
            res["paths"][f"{fraction:.0%}+{method}"] = {
                "scoring_s": round(scoring, 2), "end_to_end_s": round(scoring + shared, 2),
                "ratio_scoring": round(scoring / t_full, 3),
                "ratio_end_to_end": round((scoring + shared) / (t_full + shared), 3)}
    res["paths"]["embedding_pool_s"] = None if t_embed is None else round(t_embed, 1)
    print(name, "paths", json.dumps(res["paths"]), flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fraction 0.1, 1 seed, 1 timing run; digits unless --datasets is given")
    parser.add_argument("--datasets", nargs="+", default=None, choices=["digits", "sms_spam"],
                        help="default: digits sms_spam")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per coreset")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timing runs of each scoring path (the minimum is reported)")
    parser.add_argument("--subset-batch", choices=["same", "matched"], default="same",
                        help="batch size of the subset runs: 64 as the full run (default here), or "
                             "match_steps=True: ≈ 64 × fraction, as many optimizer steps per epoch as the full run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own). On shared cores 1 is far faster for the "
                             "tiny heads trained here: two threads spin against the other jobs")
    parser.add_argument("--no-gnn", action="store_true")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.fractions, args.seeds, args.repeats = args.datasets or ["digits"], [0.1], 1, 1
    args.datasets = args.datasets or ["digits", "sms_spam"]
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
               "args": vars(args), "load_average_start": os.getloadavg()[0]}
    for name in args.datasets:
        results[name] = bench(name, args.fractions, args.seeds, gnn=not args.no_gnn, repeats=args.repeats,
                              subset_batch=args.subset_batch)
    results["total_s"] = round(time.perf_counter() - start, 1)
    results["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
