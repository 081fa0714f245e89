"""Scale: embed's output → coreset → prune → save, from 10k to 1M rows, time and peak RSS per stage.

Every (n, dtype) pipeline runs in a fresh process on a dataset saved with ``save_to_disk`` and
opened with ``load_from_disk``, exactly as a user's run after ``ds.d2.embed(...)`` (the
embedding column memory-mapped, in record batches of 1,000 rows). The embeddings are the
labelled synthetic stand-in of bench_selection.py (100-component Gaussian mixture on a 32-dim
subspace mapped to d=384, plus noise, L2-normalised; real sentence embeddings are not
available at these sizes offline); the score column is random. Stages:

- load: ``datasets.load_from_disk``;
- graph: the kNN graph inside ``ds.d2.coreset`` (index="auto": exact up to 50k rows, HNSW
  with float16 storage above), build and search + exact re-rank, from the library's log;
- D2: forward (with the adjacency) + reverse message passing, from the library's log;
- coreset: the whole ``ds.d2.coreset(score="score", k=10)`` call (reads, graph, D2, columns);
- prune + save: ``ds.d2.prune(keep=0.3)`` and ``save_to_disk`` of the 30% coreset.

Peak RSS is the process's high-water mark after each stage (``ru_maxrss``; it includes the
pages of the memory-mapped file the stage touched). Recall@10 of the graph is measured
against exact search for 2,000 sampled rows; float16 runs report the overlap of their 30% and
10% coresets with the float32 run's. The embed stage is measured separately on real text
(MiniLM over 20 Newsgroups posts) as rows/s: it is linear in n by construction, and its 1M
figure is that rate extrapolated, labelled so.

    python benchmarks/bench_scale.py                      # 10k … 1M, float32 and float16
    python benchmarks/bench_scale.py --sizes 10000 100000 --dtypes float32 --no-embed
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
STORE = ROOT / "benchmarks" / "results" / "scale.json"
PLOT = ROOT / "benchmarks" / "scale_plots" / "time_vs_rows.png"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(n: int, dtype: str, path: str) -> dict:
    """Write the embedding dataset (as `embed` leaves it) with labels and a random score."""
    import datasets
    import pyarrow as pa
    from bench_selection import embeddings

    x, data = embeddings(n, 384)
    if dtype == "float16":
        x = x.astype(np.float16)
    rng = np.random.default_rng(1)
    table = pa.table({
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
        "score": pa.array(rng.random(n).astype(np.float32)),
    })
    t = time.perf_counter()
    datasets.Dataset(table).save_to_disk(path, max_shard_size="4GB")
    return {"data": data, "prepare_s": time.perf_counter() - t}


class StageLog(logging.Handler):
    """Collect the durations hf_d2prune logs for the graph and D2 stages."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.graph_build = self.graph_search = self.forward = self.reverse = 0.0

    def emit(self, record):
        msg = record.getMessage()
        if m := re.search(r"kNN graph done: index build ([\d.]+) s, search \+ exact re-rank ([\d.]+) s", msg):
            self.graph_build += float(m[1])
            self.graph_search += float(m[2])
        elif m := re.search(r"forward ([\d.]+) s \(with the adjacency\), reverse ([\d.]+) s", msg):
            self.forward += float(m[1])
            self.reverse += float(m[2])


def pipeline(path: str, out_dir: str, threads: int) -> dict:
    import datasets
    import faiss

    import hf_d2prune
    import hf_d2prune.graph as graph_module

    faiss.omp_set_num_threads(threads)
    datasets.disable_progress_bars()
    log = StageLog()
    for name in ("hf_d2prune.graph", "hf_d2prune.selection.d2"):
        logging.getLogger(name).addHandler(log)
        logging.getLogger(name).setLevel(logging.INFO)
    sample = None  # the rows whose neighbours are kept for the recall check, set once n is known
    captured = {}
    original = graph_module.knn_graph

    def capturing_knn_graph(*args, **kwargs):  # keep the sampled rows' neighbours for recall
        idx, dist = original(*args, **kwargs)
        captured["sample"] = idx[sample].copy()
        return idx, dist

    graph_module.knn_graph = capturing_knn_graph
    out = {"rss_start_mib": rss_mib(), "threads": threads}

    t = time.perf_counter()
    ds = datasets.load_from_disk(path)
    out["load_s"], out["rss_load_mib"] = time.perf_counter() - t, rss_mib()
    n = len(ds)
    sample = np.sort(np.random.default_rng(2).choice(n, size=min(2000, n), replace=False))
    out["record_batches"] = ds.data.column("embedding").num_chunks

    t = time.perf_counter()
    ranked = ds.d2.coreset(score="score", k=10)
    out["coreset_s"], out["rss_coreset_mib"] = time.perf_counter() - t, rss_mib()
    out.update(graph_build_s=log.graph_build, graph_search_s=log.graph_search, d2_forward_s=log.forward,
               d2_reverse_s=log.reverse)

    t = time.perf_counter()
    small = ranked.d2.prune(keep=0.3)
    small.save_to_disk(os.path.join(out_dir, "coreset"))
    out["prune_save_s"], out["rss_prune_save_mib"] = time.perf_counter() - t, rss_mib()
    out["kept"] = len(small)
    out["total_s"] = out["load_s"] + out["coreset_s"] + out["prune_save_s"]
    np.save(os.path.join(out_dir, "rank.npy"), np.asarray(ranked.with_format("numpy")["d2_rank"]))

    # Recall@10 of the graph D2 used, against exact search for the sampled rows (after the timings).
    from hf_d2prune.arrays import embedding_blocks
    from hf_d2prune.graph import RowBlocks, _brute_force, recall_at_k

    src = RowBlocks(embedding_blocks(ds, "embedding"))
    exact = _brute_force(src, src.take(sample), 11)
    exact = np.array([[j for j in row if j != i][:10] for i, row in zip(sample, exact)])
    out["recall_at_10"] = recall_at_k(captured["sample"], exact)
    return out


def embed_rate(rows: int) -> dict:
    """Rows/s of `ds.d2.embed("text")` (MiniLM) on real 20 Newsgroups posts."""
    import datasets

    import hf_d2prune  # noqa: F401
    from hf_d2prune.builtin import load_builtin

    datasets.disable_caching()
    posts = load_builtin("20newsgroups", split="train")
    posts.select(range(rows, rows + 64)).d2.embed("text", batch_size=64)  # warm-up: model load, kernels
    ds = posts.select(range(rows))
    t = time.perf_counter()
    ds.d2.embed("text", batch_size=64, load_from_cache_file=False)
    seconds = time.perf_counter() - t
    return {"embed_rows": rows, "embed_s": seconds, "embed_rows_per_s": rows / seconds, "embed_rss_mib": rss_mib()}


def run_child(args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def overlap(a: np.ndarray, b: np.ndarray, keep: float) -> float:
    budget = int(round(keep * len(a)))
    sa = set(np.flatnonzero((a >= 0) & (a < budget)).tolist())
    sb = set(np.flatnonzero((b >= 0) & (b < budget)).tolist())
    return len(sa & sb) / max(len(sa), 1)


def fit_exponent(ns, ts) -> float:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f32 = sorted((r for r in rows if r["dtype"] == "float32"), key=lambda r: r["n"])
    if len(f32) < 2:
        return
    ns = np.array([r["n"] for r in f32], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for key, label in (("total_s", "load → coreset → prune → save"), ("graph_build_s", "graph: build"),
                       ("graph_search_s", "graph: search + re-rank"), ("d2_s", "D2: forward + reverse"),
                       ("prune_save_s", "prune + save 30%")):
        ys = np.array([r["d2_forward_s"] + r["d2_reverse_s"] if key == "d2_s" else r[key] for r in f32])
        ok = ys > 0
        ax.loglog(ns[ok], ys[ok], marker="o", label=label)
    anchor_n, anchor_t = ns[0], f32[0]["total_s"]
    grid = np.geomspace(ns[0], ns[-1], 50)
    ax.loglog(grid, anchor_t * (grid * np.log(grid)) / (anchor_n * np.log(anchor_n)), "k--", lw=1, label="O(n log n) reference")
    ax.loglog(grid, anchor_t * (grid / anchor_n) ** 2, "k:", lw=1, label="O(n²) reference")
    ax.axvline(50_000, color="grey", lw=0.8, alpha=0.5)
    ax.text(52_000, ax.get_ylim()[0] * 1.5, "exact | HNSW", color="grey", fontsize=8)
    ax.set_xlabel("rows (d = 384)")
    ax.set_ylabel("seconds (2 CPU cores)")
    ax.set_title("hf_d2prune scale: time per stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT, dpi=120)


def report(stored: dict, embed: dict | None, command: str) -> str:
    rows = [stored[key] for key in sorted(stored, key=lambda k: (stored[k]["n"], stored[k]["dtype"] != "float32"))]
    fmt_s = lambda v: f"{v:.1f}" if v >= 1 else f"{v:.2f}"
    lines = [
        "| n | dtype | graph index | load (s) | graph build (s) | graph search + re-rank (s) | D2 fwd + rev (s) | "
        "coreset (s) | prune + save 30% (s) | total (s) | peak RSS after load / coreset / prune+save (MiB) | recall@10 | overlap with float32 @30% / @10% |",
        "|" + "---|" * 13,
    ]
    for r in rows:
        ov = "" if r["dtype"] == "float32" else f"{r.get('overlap_30', float('nan')):.3f} / {r.get('overlap_10', float('nan')):.3f}"
        lines.append(
            f"| {r['n']:,} | {r['dtype']} | {'exact' if r['n'] <= 50_000 else 'HNSW (fp16 storage)'} | {fmt_s(r['load_s'])} | "
            f"{fmt_s(r['graph_build_s'])} | {fmt_s(r['graph_search_s'])} | {fmt_s(r['d2_forward_s'])} + {fmt_s(r['d2_reverse_s'])} | "
            f"{fmt_s(r['coreset_s'])} | {fmt_s(r['prune_save_s'])} | {fmt_s(r['total_s'])} | "
            f"{r['rss_load_mib']:.0f} / {r['rss_coreset_mib']:.0f} / {r['rss_prune_save_mib']:.0f} | {r['recall_at_10']:.3f} | {ov} |"
        )
    f32 = sorted((r for r in rows if r["dtype"] == "float32" and r["n"] > 50_000), key=lambda r: r["n"])
    fits = ""
    if len(f32) >= 2:
        ns = [r["n"] for r in f32]
        parts = [f"{name} n^{fit_exponent(ns, [r[key] for r in f32]):.2f}" for key, name in
                 (("total_s", "total"), ("graph_build_s", "graph build"), ("graph_search_s", "graph search"),
                  ("coreset_s", "coreset"))]
        d2 = [r["d2_forward_s"] + r["d2_reverse_s"] for r in f32]
        if min(d2) > 0:
            parts.append(f"D2 fwd+rev n^{fit_exponent(ns, d2):.2f}")
        fits = ("Growth fitted on the HNSW sizes (log-log least squares over n = "
                + ", ".join(f"{n:,}" for n in ns) + "): " + ", ".join(parts) + ".\n\n")
    embed_text = ""
    if embed:
        per_m = 1_000_000 / embed["embed_rows_per_s"]
        embed_text = (
            f"Embed stage (measured on {embed['embed_rows']:,} real 20 Newsgroups posts, MiniLM-L6, CPU): "
            f"{embed['embed_rows_per_s']:.0f} rows/s, peak RSS {embed['embed_rss_mib']:.0f} MiB. It is linear in n; "
            f"at that rate 1M rows would take ~{per_m / 3600:.1f} h on this machine (extrapolated, not run): embedding "
            "is the stage to spread over processes or GPUs (`accelerate launch`, see docs/scaling.md), not selection.\n\n"
        )
    return (
        "End to end from an embedding dataset on disk (as `embed` leaves it) to the saved coreset, each (n, dtype) "
        "in a fresh process; synthetic labelled stand-in embeddings (d = 384), random scores, k = 10, faiss on 2 "
        "threads, 2 CPU cores. Peak RSS includes the memory-mapped embedding pages each stage touched.\n\n"
        f"Command: `{command}`\n\n" + "\n".join(lines) + "\n\n" + fits + embed_text
        + "![time vs rows](scale_plots/time_vs_rows.png)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=["float32", "float16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embed-rows", type=int, default=2000)
    parser.add_argument("--no-embed", action="store_true")
    parser.add_argument("--workdir", default=None, help="where the datasets are written (default: a temp dir)")
    parser.add_argument("--prepare", nargs=3, metavar=("N", "DTYPE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", nargs=2, metavar=("PATH", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--embed-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps(prepare(int(args.prepare[0]), args.prepare[1], args.prepare[2])))
        return
    if args.pipeline:
        print(json.dumps(pipeline(args.pipeline[0], args.pipeline[1], args.threads)))
        return
    if args.embed_only:
        print(json.dumps(embed_rate(args.embed_only)))
        return

    command = "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:])
    stored = json.loads(STORE.read_text()) if STORE.exists() else {"runs": {}}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="d2scale-"))
    try:
        for n in args.sizes:
            ranks = {}
            for dtype in args.dtypes:
                data_dir, out_dir = work / f"ds-{n}-{dtype}", work / f"out-{n}-{dtype}"
                shutil.rmtree(data_dir, ignore_errors=True)
                shutil.rmtree(out_dir, ignore_errors=True)
                out_dir.mkdir(parents=True)
                row = {"n": n, "dtype": dtype, **run_child(["--prepare", str(n), dtype, str(data_dir)], args.threads)}
                row.update(run_child(["--pipeline", str(data_dir), str(out_dir), "--threads", str(args.threads)], args.threads))
                ranks[dtype] = np.load(out_dir / "rank.npy")
                if dtype != "float32" and "float32" in ranks:
                    row["overlap_30"] = overlap(ranks[dtype], ranks["float32"], 0.3)
                    row["overlap_10"] = overlap(ranks[dtype], ranks["float32"], 0.1)
                row["command"] = command
                stored["runs"][f"{n}-{dtype}"] = row
                print(json.dumps(row), file=sys.stderr, flush=True)
                shutil.rmtree(data_dir, ignore_errors=True)
                shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if not args.no_embed:
        stored["embed"] = {**run_child(["--embed-only", str(args.embed_rows)], args.threads), "command": command}
    STORE.parent.mkdir(exist_ok=True)
    STORE.write_text(json.dumps(stored, indent=1, sort_keys=True))
    plot(list(stored["runs"].values()))
    commands = sorted({r["command"] for r in stored["runs"].values()} | ({stored["embed"]["command"]} if "embed" in stored else set()))
    body = report(stored["runs"], stored.get("embed"), "; ".join(commands))
    print(body)
    from _results import write_section

    write_section("Scale: 10k to 1M rows, end to end", body)


if __name__ == "__main__":
    main()
