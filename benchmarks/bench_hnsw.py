"""HNSW settings behind `knn_graph(index="hnsw")`: vector storage and search width vs recall and time.

One index per storage (float32 "flat", float16, 8-bit scalar quantiser) is built on the same
rows; then every row is searched for its k + 5 candidates at several search widths (efSearch),
the candidates are re-ranked by exact distance (as `knn_graph` does), and recall@k is measured
against exact search for 2,000 sampled rows. Index memory is faiss's own size of the built
index. Data: the synthetic stand-in of bench_selection.py (d = 384).

    python benchmarks/bench_hnsw.py --n 200000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
STORE = ROOT / "benchmarks" / "results" / "hnsw.json"


def main() -> None:
    import faiss

    from bench_selection import embeddings

    from hf_d2prune.graph import _brute_force, RowBlocks, recall_at_k

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 32, 48, 64])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)

    n, k = args.n, args.k
    candidates = k + 5
    x, data = embeddings(n, 384)
    sample = np.sort(np.random.default_rng(2).choice(n, size=2000, replace=False))
    src = RowBlocks([x])
    exact = _brute_force(src, x[sample], k + 1)
    exact = np.array([[j for j in row if j != i][:k] for i, row in zip(sample, exact)])

    rows = []
    for storage in ("flat", "fp16", "sq8"):
        if storage == "flat":
            index = faiss.IndexHNSWFlat(384, args.m)
        else:
            qtype = faiss.ScalarQuantizer.QT_fp16 if storage == "fp16" else faiss.ScalarQuantizer.QT_8bit
            index = faiss.IndexHNSWSQ(384, qtype, args.m)
        index.hnsw.efConstruction = args.ef_construction
        t = time.perf_counter()
        if storage == "sq8":
            index.train(x[np.sort(np.random.default_rng(0).choice(n, size=min(n, 65536), replace=False))])
        index.add(x)
        build = time.perf_counter() - t
        size = faiss.serialize_index(index).nbytes
        for ef in args.ef:
            index.hnsw.efSearch = max(ef, candidates)
            t = time.perf_counter()
            for start in range(0, n, 4096):
                index.search(x[start:start + 4096], candidates)
            search = time.perf_counter() - t
            ids = index.search(x[sample], candidates)[1]
            dist = ((x[ids] - x[sample][:, None, :]) ** 2).sum(-1)
            ids = np.take_along_axis(ids, np.argsort(dist, axis=1, kind="stable"), 1)
            ids = np.array([[j for j in row if j != i][:k] for i, row in zip(sample, ids)])
            rows.append({"storage": storage, "ef_search": ef, "build_s": build, "search_all_s": search,
                         "recall_at_k": recall_at_k(ids, exact), "index_mib": size / 2**20})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        del index

    command = "python benchmarks/bench_hnsw.py " + " ".join(sys.argv[1:])
    STORE.parent.mkdir(exist_ok=True)
    STORE.write_text(json.dumps({"n": n, "k": k, "data": data, "command": command, "rows": rows}, indent=1))
    lines = ["| storage | efSearch | build (s) | search all rows (s) | recall@10 (re-ranked) | index size (MiB) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['storage']} | {r['ef_search']} | {r['build_s']:.1f} | {r['search_all_s']:.1f} | "
                     f"{r['recall_at_k']:.4f} | {r['index_mib']:.0f} |")
    body = (
        f"{n:,} rows of the synthetic stand-in (d = 384), k = {k}, HNSW M = {args.m}, efConstruction = "
        f"{args.ef_construction}; every row searched for k + 5 candidates, re-ranked by exact distance; recall "
        f"against exact search for 2,000 sampled rows; faiss on {args.threads} threads, {os.cpu_count()} CPU cores "
        f"(shared machine: compare rows of this run only).\n\nCommand: `{command}`\n\n" + "\n".join(lines) + "\n\n"
        "`knn_graph` defaults: float16 storage (half the memory of float32 for the vectors, the same recall) and "
        "efSearch `max(48, 2·(k+5))`.\n"
    )
    print(body)
    from _results import write_section

    write_section("HNSW storage and search width", body)


if __name__ == "__main__":
    main()
