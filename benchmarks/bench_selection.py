"""Benchmark the selection core: kNN graph (exact / auto), D2 forward + reverse, peak memory.

Each size runs in its own subprocess so peak RSS is that run's alone. Data: the real MiniLM
sentence embeddings of tests/data/d2_reference/sms_symmetric (4,541 rows) when n fits, else a
stand-in labelled "synthetic": a 100-component Gaussian mixture on a 32-dim subspace mapped
linearly to d=384 plus isotropic noise, L2-normalised (sentence embeddings have low intrinsic
dimension; isotropic 384-d Gaussians would make any ANN index look worse than on real data).

    python benchmarks/bench_selection.py --sizes 10000 50000 200000
    python benchmarks/bench_selection.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SMS = ROOT / "tests" / "data" / "d2_reference" / "sms_symmetric" / "embeddings.npy"
EXACT_LIMIT = 50_000  # default: exact kNN above this takes minutes to hours of brute force on 2 cores
STORE = ROOT / "benchmarks" / "results" / "selection.json"  # raw rows of every size measured so far


def embeddings(n: int, d: int, seed: int = 0):
    if n <= 4541 and d == 384:
        return np.load(SMS)[:n], "MiniLM (sms)"
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(32, d)).astype(np.float32)
    centres = rng.normal(size=(100, 32)).astype(np.float32) * 2
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(lo + 100_000, n)
        z = centres[rng.integers(0, 100, hi - lo)] + rng.normal(size=(hi - lo, 32)).astype(np.float32)
        x[lo:hi] = z @ basis + 0.5 * rng.normal(size=(hi - lo, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, "synthetic (GMM stand-in)"


def dense_reference(x, scores, k, budget):
    """The authors' style: dense n×n distances, symmetric kNN mask, O(N·n) argmax loop."""
    sq = (x.astype(np.float64) ** 2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * (x.astype(np.float64) @ x.T.astype(np.float64)), 0))
    np.fill_diagonal(dist, np.inf)
    nbrs = np.argpartition(dist, k, axis=1)[:, :k]
    adj = np.zeros(dist.shape, dtype=bool)
    adj[np.arange(len(x))[:, None], nbrs] = True
    adj |= adj.T
    weight = np.where(adj, np.exp(-dist), 0.0)
    density = scores + weight @ np.maximum(scores, 1e-7)
    picked = []
    for _ in range(budget):
        i = int(np.argmax(density))
        picked.append(i)
        density[adj[i]] -= weight[i, adj[i]] * density[i]
        density[i] = -np.inf
    return picked


def run_one(n: int, d: int, k: int, threads: int, exact_limit: int = EXACT_LIMIT) -> dict:
    import faiss

    from hf_d2prune.graph import EXACT_MAX_ROWS, knn_graph, recall_at_k
    from hf_d2prune.selection import _greedy
    from hf_d2prune.selection.d2 import _csr, _edges, _forward_csr, _kernel

    faiss.omp_set_num_threads(threads)
    out = {"n": n, "d": d, "k": k, "numba": _greedy.HAVE_NUMBA}
    x, out["data"] = embeddings(n, d)
    scores = np.random.default_rng(1).random(n)
    if _greedy.HAVE_NUMBA:  # compile (or load the cache) outside the timings
        _greedy.reverse_greedy(np.ones(3), np.array([0, 1, 2, 2]), np.array([1, 0]), np.ones(2), 3)
        _csr(3, np.array([0, 1]), np.array([1, 0]), np.ones(2), "symmetric")

    t = time.perf_counter()
    idx, dist = knn_graph(x, k, index="auto")
    out["graph_auto_s"] = time.perf_counter() - t
    out["auto_index"] = "exact" if n <= EXACT_MAX_ROWS else "hnsw"
    if n <= exact_limit:
        t = time.perf_counter()
        knn_graph(x, k, index="exact")
        out["graph_exact_s"] = time.perf_counter() - t
        t = time.perf_counter()
        knn_graph(x, k, index="hnsw")
        out["graph_hnsw_s"] = time.perf_counter() - t
    sample = np.random.default_rng(2).choice(n, size=min(2000, n), replace=False)
    _, exact_sample = faiss.knn(x[sample], x, k + 1)
    exact_sample = np.array([[j for j in row if j != i][:k] for i, row in zip(sample, exact_sample)])
    out["recall_at_k"] = recall_at_k(idx[sample], exact_sample)

    for graph in ("symmetric", "directed"):
        t = time.perf_counter()
        indptr, nbrs, dd = _csr(n, *_edges(idx, dist), graph)
        forward = _forward_csr(scores, indptr, nbrs, dd, 1.0, graph, False)
        t_fwd = time.perf_counter() - t
        t = time.perf_counter()
        _greedy.reverse_greedy(forward, indptr, nbrs, _kernel(dd, 1.0, False).astype(np.float64), n)
        out[f"{graph}_forward_s"] = t_fwd
        out[f"{graph}_reverse_s"] = time.perf_counter() - t

    if n <= 10_000:
        budget = n // 3
        t = time.perf_counter()
        dense_reference(x, scores, k, budget)
        out["dense_reference_s"] = time.perf_counter() - t
        out["dense_budget"] = budget
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_e2e(n: int, d: int, k: int, threads: int) -> dict:
    """`ds.d2.coreset` end to end in a process of its own, so its peak RSS is the library's alone
    (plus the embedding matrix, which a real run memory-maps from Arrow)."""
    import datasets
    import faiss
    import pyarrow as pa

    import hf_d2prune  # noqa: F401

    faiss.omp_set_num_threads(threads)
    x, _ = embeddings(n, d)
    scores = np.random.default_rng(1).random(n).astype(np.float32)
    # Build the Arrow table straight from the buffer (zero-copy), as `embed` writes it.
    ds = datasets.Dataset(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d),
                                    "score": pa.array(scores)}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    ds.d2.coreset(score="score", method="d2", k=k)
    return {"coreset_e2e_s": time.perf_counter() - t,
            "coreset_e2e_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "coreset_e2e_rss_before_mib": before}


def table(rows: list[dict]) -> str:
    head = ("| n | data | auto index | graph auto (s) | graph exact (s) | graph HNSW (s) | recall@k | "
            "sym fwd+rev (s) | dir fwd+rev (s) | `ds.d2.coreset` end to end (s) | its peak RSS (MiB) | dense ref, N=n/3 (s) | peak RSS (MiB) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    fmt = lambda v: "skipped" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
    for r in rows:
        lines.append("| " + " | ".join([
            f"{r['n']:,}", r["data"], r["auto_index"], fmt(r["graph_auto_s"]), fmt(r.get("graph_exact_s")),
            fmt(r.get("graph_hnsw_s")), f"{r['recall_at_k']:.3f}",
            f"{r['symmetric_forward_s']:.2f} + {r['symmetric_reverse_s']:.2f}",
            f"{r['directed_forward_s']:.2f} + {r['directed_reverse_s']:.2f}",
            fmt(r.get("coreset_e2e_s")), fmt(r.get("coreset_e2e_peak_rss_mib")), fmt(r.get("dense_reference_s")), f"{r['peak_rss_mib']:.0f}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="only n=4,541 real embeddings and n=10,000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="faiss threads (default 2)")
    parser.add_argument("--exact-limit", type=int, default=EXACT_LIMIT,
                        help="also time the exact kNN graph up to this many rows (the ratio column)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--e2e", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.e2e:
        print(json.dumps(run_e2e(args.e2e, args.dim, args.k, args.threads)))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.dim, args.k, args.threads, args.exact_limit)))
        return
    sizes = [4541, 10_000] if args.quick else args.sizes
    rows = []
    for n in sizes:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--dim", str(args.dim), "--k", str(args.k),
                               "--threads", str(args.threads), "--exact-limit", str(args.exact_limit)], capture_output=True, text=True, env=env)
        if proc.returncode:
            print(f"n={n} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        proc = subprocess.run([sys.executable, __file__, "--e2e", str(n), "--dim", str(args.dim), "--k", str(args.k),
                               "--threads", str(args.threads)], capture_output=True, text=True, env=env)
        if proc.returncode:
            print(f"n={n} end to end failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        else:
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(json.dumps(rows[-1]), file=sys.stderr)
    stored = json.loads(STORE.read_text()) if STORE.exists() else {}
    stored.update({str(r["n"]): {**r, "command": "python benchmarks/bench_selection.py " + " ".join(sys.argv[1:])} for r in rows})
    STORE.parent.mkdir(exist_ok=True)
    STORE.write_text(json.dumps(stored, indent=1, sort_keys=True))
    all_rows = [stored[key] for key in sorted(stored, key=int)]
    commands = sorted({r["command"] for r in all_rows})
    body = (
        "Data: the real MiniLM embeddings of SMS spam where n fits (4,541 rows), above that a synthetic "
        "stand-in (100-component Gaussian mixture on a 32-dim subspace mapped to d=384, plus noise, "
        "L2-normalised); k = 10; random scores. \"fwd+rev\" is D2 forward (with building the CSR "
        "adjacency) + reverse over all n rows on the given graph; \"end to end\" is `ds.d2.coreset` on a "
        "Dataset with an embedding column (graph with `index=\"auto\"` included); \"dense ref\" is the "
        "authors' approach (dense n×n distances, O(N·n) argmax loop) for N = n/3 picks. Recall@k: the "
        f"auto graph vs exact search for 2,000 sampled rows. faiss threads = {args.threads}, "
        f"numba = {'yes' if all_rows and all_rows[0]['numba'] else 'no'}, {os.cpu_count()} CPU cores; each size in its "
        "own subprocess (peak RSS is that size's alone).\n\nCommands:\n\n"
        + "\n".join(f"    {c}" for c in commands) + "\n\n" + table(all_rows)
    )
    print(body)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _results import write_section

    write_section("Selection core: kNN graph and D2", body)


if __name__ == "__main__":
    main()
