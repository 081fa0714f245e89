"""Score extrapolation in the paper's own setting: a CNN trained from scratch on Fashion-MNIST.

Schmidt et al. (arXiv 2506.09010) train the score model on a subset, embed every row with that
model's penultimate features and extrapolate the scores over the embedding graph. Here the score
model is a small CNN (conv16-conv32-fc128-10) trained on a class-stratified pool of Fashion-MNIST
training images, so training, not a frozen encoder, is what a full scoring run costs:

1. full path: ``train_dynamics`` on the whole pool (Dynamic Uncertainty and TDDS with 10-epoch
   windows, AUM), the penultimate features of the trained CNN for every row, the D2 ranking;
2. subset path, per fraction: ``train_dynamics(subset=f)`` (``match_steps`` on: as many optimizer
   steps per epoch as the full run, smaller batches), the subset model's features for every row,
   ``extrapolate`` (kNN, k and weighting chosen on the held-out measured rows), the D2 ranking;
   and, for comparison of the correlations only, the same subset trained with the full batch;
3. Spearman ρ / Kendall τ of extrapolated vs full-run scores on the unmeasured rows, beside the
   noise ceiling (subset-run vs full-run scores on the measured rows);
4. test accuracy of a fresh CNN trained on D2 coresets ranked by full scores, by 10%-subset +
   kNN scores, and on random coresets, at 30 / 50 / 70% pruning (mean ± std over seeds);
5. wall time of each path, end to end (scoring, features, extrapolation, ranking), and the ratio.

    python benchmarks/bench_extrapolation_cnn.py --threads 1             # ~10 min on 2 CPU cores
    python benchmarks/bench_extrapolation_cnn.py --quick                 # 3,000 rows, 1 seed

Needs ``apt-get install dataset-fashion-mnist``.
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
from scipy.stats import kendalltau, spearmanr  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import hf_d2prune  # noqa: E402,F401  (registers ds.d2)
from _results import write_section  # noqa: E402
from bench_extrapolation import mean_std, timed_coreset  # noqa: E402
from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.dynamics import train_dynamics  # noqa: E402
from hf_d2prune.dynamics.api import subset_rows  # noqa: E402
from hf_d2prune.extrapolation_api import extrapolate  # noqa: E402

SCORES = ["dynamic_uncertainty", "tdds", "aum"]
RANKED = ["tdds", "dynamic_uncertainty"]  # the scores whose coresets are trained on
EPOCHS = 15
BATCH = 128
LR = 1e-3


def cnn(seed: int) -> torch.nn.Sequential:
    """The examples' small CNN on a flat 784-pixel vector; ``[:-1]`` gives the 128-d features."""
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def load(pool_size: int, test_size: int) -> tuple[datasets.Dataset, np.ndarray, np.ndarray]:
    """(pool with a ``pixels`` vector column and ``label``, test pixels, test labels)."""
    def pixels(ds: datasets.Dataset) -> np.ndarray:
        return np.asarray(ds.with_format("numpy")["image"], dtype=np.float32).reshape(len(ds), -1) / 255.0

    train, test = load_builtin("fashion_mnist", "train"), load_builtin("fashion_mnist", "test")
    rows = subset_rows(np.asarray(train["label"]), pool_size / len(train), seed=0)
    pool = train.select(rows)
    features = datasets.Features({"pixels": datasets.Sequence(datasets.Value("float32"), length=784),
                                  "label": pool.features["label"]})
    pool = datasets.Dataset.from_dict({"pixels": pixels(pool), "label": np.asarray(pool["label"])}, features=features)
    test_rows = np.random.default_rng(0).permutation(len(test))[:test_size]
    test = test.select(np.sort(test_rows))
    return pool, pixels(test), np.asarray(test["label"], dtype=np.int64)


def score_run(pool: datasets.Dataset, subset, match_steps=None):
    """(scored pool, the trained CNN, seconds)."""
    model = cnn(0)
    start = time.perf_counter()
    out = train_dynamics(pool, model, inputs="pixels", epochs=EPOCHS, batch_size=BATCH, lr=LR, scores=SCORES,
                         subset=subset, match_steps=match_steps, seed=0, progress=False)
    return out, model, time.perf_counter() - start


def with_features(ds: datasets.Dataset, model: torch.nn.Sequential) -> tuple[datasets.Dataset, float]:
    """``ds`` + an ``embedding`` column: the model's penultimate features (``ds.d2.embed`` with the
    model as a callable, L2-normalised), and the seconds it took."""
    from datasets.fingerprint import Hasher

    body = model[:-1].eval()

    def penultimate(values) -> np.ndarray:
        with torch.no_grad():
            return body(torch.as_tensor(np.asarray(values, dtype=np.float32))).numpy()

    start = time.perf_counter()
    fingerprint = f"cnn-{Hasher.hash([p.detach().numpy() for p in body.parameters()])}"
    out = ds.d2.embed("pixels", model=penultimate, batch_size=1024, model_fingerprint=fingerprint)
    return out, time.perf_counter() - start


def downstream(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int,
               epochs: int, min_steps: int) -> float:
    """Test accuracy of a fresh CNN trained on (x, y): ``epochs`` epochs but at least ``min_steps`` steps."""
    model = cnn(1000 + seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = max(epochs * -(-len(x) // BATCH), min_steps)
    done = 0
    while done < steps:
        for batch in torch.randperm(len(xt), generator=g).split(BATCH):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(c).argmax(1) for c in torch.from_numpy(test_x).split(2048)]).numpy()
    return float((pred == test_y).mean())


def correlations(sub: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict:
    return {"spearman": round(float(spearmanr(sub[~mask], ref[~mask])[0]), 3),
            "kendall": round(float(kendalltau(sub[~mask], ref[~mask])[0]), 3)}


def coreset_accuracies(res: dict, pool: datasets.Dataset, rankings: dict, seeds: int, train_and_test) -> None:
    """Test accuracy of a model trained on each ranking's coreset at 30 / 50 / 70% pruning (a fresh random
    coreset per seed) and on the whole pool, via ``train_and_test(rows, seed)``, into ``res["accuracy"]``
    as [mean, std]."""
    rankings["random"] = [np.asarray(pool.d2.coreset(method="random", seed=s)["random_rank"]) for s in range(seeds)]
    for prune in (0.3, 0.5, 0.7):
        keep = int(round((1 - prune) * len(pool)))
        for label, rank in rankings.items():
            accs = []
            for s in range(seeds):
                r = rank[s] if isinstance(rank, list) else rank
                accs.append(train_and_test(np.flatnonzero((r >= 0) & (r < keep)), s))
            res["accuracy"][f"{label}@{prune}"] = mean_std(accs)
            print("prune", prune, label, mean_std(accs), flush=True)
    res["accuracy"]["no pruning"] = mean_std([train_and_test(np.arange(len(pool)), s) for s in range(seeds)])


def full_path(res: dict, full: datasets.Dataset, t_train: float, t_feats: float) -> tuple[dict, float]:
    """Rank ``full`` by each of ``RANKED`` (timed), record the full path in ``res["paths"]``;
    return (rankings, mean ranking seconds)."""
    rankings: dict[str, object] = {}
    times = []
    for score in RANKED:
        rankings[f"{score} full"], t = timed_coreset(full, score)
        times.append(t)
    t_rank = float(np.mean(times))
    res["paths"]["full"] = {"train_s": round(t_train, 2), "features_s": round(t_feats, 2), "rank_s": round(t_rank, 2),
                            "end_to_end_s": round(t_train + t_feats + t_rank, 2)}
    print("full", json.dumps(res["paths"]["full"]), flush=True)
    return rankings, t_rank


def subset_path(res: dict, rankings: dict, full: datasets.Dataset, part: datasets.Dataset, fraction: float,
                t_train: float, t_feats: float, t_rank: float, *, rank: bool, extra=None) -> None:
    """Extrapolate every score of the subset run ``part`` (kNN), record its correlations with ``full``
    and its path times in ``res``; with ``rank``, also rank it by each of ``RANKED`` into ``rankings``.
    ``extra(score)`` adds entries to a score's correlation record."""
    step = next(s for s in reversed(part.d2.provenance) if s["step"] == "train_dynamics")
    extrapolated, t_extra = {}, []
    for score in SCORES:
        mask = np.asarray(part[f"{score}_measured"])
        ref = np.asarray(full[score], dtype=np.float64)
        start = time.perf_counter()
        out = extrapolate(part, score, method="knn", seed=0)
        t_extra.append(time.perf_counter() - start)
        extrapolated[score] = out
        kstep = out.d2.provenance[-1]
        res["correlation"][f"{score}@{fraction}"] = {
            "measured": int(mask.sum()), "subset_batch_size": step["subset_batch_size"],
            "noise_ceiling_spearman": round(float(spearmanr(np.asarray(part[score], dtype=np.float64)[mask],
                                                            ref[mask])[0]), 3),
            "knn": {**correlations(np.asarray(out[score], dtype=np.float64), ref, mask), "k": kstep["k"],
                    "weighting": kstep.get("weighting")},
            **(extra(score) if extra is not None else {}),
        }
        print(fraction, score, json.dumps(res["correlation"][f"{score}@{fraction}"]), flush=True)
    t_part_rank = []
    if rank:
        for score in RANKED:
            rankings[f"{score} {fraction:.0%}+knn"], t = timed_coreset(extrapolated[score], score)
            t_part_rank.append(t)
    t_one_rank = float(np.mean(t_part_rank)) if t_part_rank else t_rank
    t_one_extra = float(np.mean(t_extra))
    total = t_train + t_feats + t_one_extra + t_one_rank
    full_path_s = res["paths"]["full"]
    res["paths"][f"{fraction:.0%}+knn"] = {
        "train_s": round(t_train, 2), "features_s": round(t_feats, 2), "extrapolate_s": round(t_one_extra, 2),
        "rank_s": round(t_one_rank, 2), "end_to_end_s": round(total, 2),
        "ratio_end_to_end": round(total / full_path_s["end_to_end_s"], 3),
        "ratio_training": round(t_train / full_path_s["train_s"], 3), "subset_batch_size": step["subset_batch_size"]}
    print(fraction, "path", json.dumps(res["paths"][f"{fraction:.0%}+knn"]), flush=True)


def bench(pool_size: int, test_size: int, fractions: list[float], seeds: int, down_epochs: int, min_steps: int,
          gnn: bool = False) -> dict:
    pool, test_x, test_y = load(pool_size, test_size)
    warm, warm_model, _ = score_run(pool.select(range(256)), None)  # one-off set-up of the first calls, untimed
    timed_coreset(with_features(warm, warm_model)[0], "tdds")

    full, full_model, t_full_train = score_run(pool, None)
    full, t_full_feats = with_features(full, full_model)
    res = {"rows_pool": len(pool), "rows_test": len(test_y), "epochs": EPOCHS, "batch_size": BATCH,
           "correlation": {}, "paths": {}, "accuracy": {}}
    rankings, t_rank = full_path(res, full, t_full_train, t_full_feats)

    for fraction in fractions:
        part, model, t_train = score_run(pool, fraction)  # match_steps: on (windowed scores)
        part, t_feats = with_features(part, model)
        same, _, t_same = score_run(pool, fraction, match_steps=False)

        def comparisons(score: str) -> dict:
            """Correlations beside the matched subset's kNN: the full-batch subset run extrapolated over
            the same features, and with ``--gnn`` the matched subset extrapolated by the GNN (and its seconds)."""
            ref = np.asarray(full[score], dtype=np.float64)
            values = np.asarray(extrapolate(same.add_column("embedding", part["embedding"], feature=part.features["embedding"]),
                                            score, method="knn", seed=0)[score], dtype=np.float64)
            extra = {"full_batch_subset_knn": correlations(values, ref, np.asarray(same[f"{score}_measured"]))}
            if gnn:
                start = time.perf_counter()
                graph = extrapolate(part, score, method="gnn", seed=0)
                step = graph.d2.provenance[-1]
                extra["gnn"] = {**correlations(np.asarray(graph[score], dtype=np.float64), ref,
                                               np.asarray(part[f"{score}_measured"])),
                                "seconds": round(time.perf_counter() - start, 2),
                                **{key: step["validation"][key] for key in ("epochs_run", "best_epoch")}}
            return extra

        subset_path(res, rankings, full, part, fraction, t_train, t_feats, t_rank, rank=fraction == 0.1 or len(fractions) == 1,
                    extra=comparisons)
        res["paths"][f"{fraction:.0%}+knn"]["full_batch_subset_train_s"] = round(t_same, 2)

    x = np.asarray(pool.with_format("numpy")["pixels"], dtype=np.float32)
    y = np.asarray(pool["label"], dtype=np.int64)
    coreset_accuracies(res, pool, rankings, seeds,
                       lambda rows, s: downstream(x[rows], y[rows], test_x, test_y, s, down_epochs, min_steps))
    return res


def report(res: dict, args: argparse.Namespace, wall: float) -> str:
    fr = args.fractions
    lines = [
        f"Command: `python benchmarks/bench_extrapolation_cnn.py{' --quick' if args.quick else ''}"
        f"{f' --epochs {EPOCHS}' if res['epochs'] != 15 else ''}{' --gnn' if args.gnn else ''} --threads {args.threads}`"
        f" ({wall / 60:.1f} min wall; {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)).",
        "",
        f"Pool: a class-stratified {res['rows_pool']:,} Fashion-MNIST training images; test: {res['rows_test']:,} of the "
        f"test split. Score model: the small CNN (conv16-conv32-fc128-10) from scratch, AdamW lr {LR}, batch "
        f"{BATCH}, {EPOCHS} epochs, scores recorded from the training passes (DU window 10, TDDS window 10). "
        "Embedding for extrapolation and D2: the L2-normalised 128-d penultimate features of the path's own "
        "CNN (the full model for the full path, the subset model for a subset path), as in the paper. Subset "
        "runs use `match_steps` (the default with windowed scores): as many optimizer steps per epoch as the "
        "full run, with a batch of the subset's share; 'full-batch subset' is the same subset trained with batch "
        f"{BATCH} (f× the steps), extrapolated over the same features, for comparison.",
        "",
        "Spearman ρ (Kendall τ) of extrapolated vs full-run scores on the unmeasured rows; noise ceiling = "
        "subset-run vs full-run scores on the measured rows:",
        "",
        "| score | subset | batch | noise ceiling ρ | kNN ρ (τ) | full-batch subset + kNN ρ (τ) |"
        + (" GNN ρ (τ), seconds |" if args.gnn else ""),
        "|---|---|---|---|---|---|" + ("---|" if args.gnn else ""),
    ]
    for score in SCORES:
        for f in fr:
            c = res["correlation"][f"{score}@{f}"]
            g = c.get("gnn")
            lines.append(f"| {score} | {f:.0%} ({c['measured']:,} rows) | {c['subset_batch_size']} | "
                         f"{c['noise_ceiling_spearman']:.2f} | {c['knn']['spearman']:.2f} ({c['knn']['kendall']:.2f}) | "
                         f"{c['full_batch_subset_knn']['spearman']:.2f} ({c['full_batch_subset_knn']['kendall']:.2f}) |"
                         + (f" {g['spearman']:.2f} ({g['kendall']:.2f}), {g['seconds']:.1f} s |" if g else ""))
    lines += ["", "Wall time of each path, end to end (training with recording, penultimate features of every row, "
              "kNN extrapolation of one score, D2 ranking):", ""] + path_table(res, fr)
    lines += ["", f"Test accuracy (mean ± std over {args.seeds} seeds) of a fresh CNN trained on each coreset "
              f"({args.down_epochs} epochs, at least {args.min_steps} steps):", ""] + accuracy_table(res)
    lines += ["", f"Raw numbers: `benchmarks/results/{args.output_name}`."]
    return "\n".join(lines)


def path_table(res: dict, fractions: list[float]) -> list[str]:
    """Markdown rows: each path's stage times, end to end, and its ratio to the full path."""
    lines = ["| path | training (s) | features (s) | extrapolate (s) | D2 rank (s) | end to end (s) | ratio to full |",
             "|---|---|---|---|---|---|---|"]
    p = res["paths"]["full"]
    lines.append(f"| full ({res['rows_pool']:,} rows) | {p['train_s']} | {p['features_s']} | — | {p['rank_s']} | "
                 f"{p['end_to_end_s']} | 1 |")
    for f in fractions:
        p = res["paths"][f"{f:.0%}+knn"]
        lines.append(f"| {f:.0%} + kNN (batch {p['subset_batch_size']}) | {p['train_s']} | {p['features_s']} | "
                     f"{p['extrapolate_s']} | {p['rank_s']} | {p['end_to_end_s']} | **{p['ratio_end_to_end']:.2f}** |")
    return lines


def accuracy_table(res: dict) -> list[str]:
    """Markdown rows: test accuracy of each coreset at 30 / 50 / 70% pruning, and without pruning."""
    lines = ["| coreset | 30% pruned | 50% pruned | 70% pruned |", "|---|---|---|---|"]
    labels = sorted({k.rsplit("@", 1)[0] for k in res["accuracy"] if "@" in k}, key=lambda s: (s != "random", s))
    for label in labels:
        cells = [f"{100 * res['accuracy'][f'{label}@{p}'][0]:.1f} ± {100 * res['accuracy'][f'{label}@{p}'][1]:.1f}"
                 for p in (0.3, 0.5, 0.7)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    a = res["accuracy"]["no pruning"]
    lines.append(f"| no pruning | {100 * a[0]:.1f} ± {100 * a[1]:.1f} | | |")
    return lines


def main() -> None:
    global EPOCHS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000-row pool, fraction 0.1, 1 seed")
    parser.add_argument("--pool", type=int, default=10000)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help=f"score-model epochs (default {EPOCHS}; the TDDS authors' default is 30); "
                             "other values get their own JSON and section")
    parser.add_argument("--down-epochs", type=int, default=8)
    parser.add_argument("--min-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gnn", action="store_true",
                        help="also extrapolate each matched subset with the GNN (own JSON and section)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.pool, args.test, args.fractions, args.seeds = 3000, 2000, [0.1], 1
    custom = args.epochs != EPOCHS
    EPOCHS = args.epochs
    args.output_name = (f"extrapolation_cnn{'_quick' if args.quick else ''}{f'_e{EPOCHS}' if custom else ''}"
                        f"{'_gnn' if args.gnn else ''}.json")
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    start = time.perf_counter()
    res = bench(args.pool, args.test, args.fractions, args.seeds, args.down_epochs, args.min_steps, gnn=args.gnn)
    wall = time.perf_counter() - start
    res["wall_s"] = round(wall, 1)
    out = ROOT / "benchmarks" / "results" / args.output_name
    out.write_text(json.dumps(res, indent=1))
    body = report(res, args, wall)
    print(body)
    if not args.no_write:
        title = ("Score extrapolation: CNN on Fashion-MNIST" + (" (quick)" if args.quick else "")
                 + (f" ({EPOCHS} epochs)" if custom else "") + (" with the GNN" if args.gnn else ""))
        write_section(title, body)


if __name__ == "__main__":
    main()
