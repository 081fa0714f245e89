"""Throughput of ``ds.d2.embed`` against raw ``SentenceTransformer.encode`` on the same texts.

A/B interleaved in one process: each repetition runs both paths (alternating which goes
first) on the same real texts with the same batch size, so machine noise hits both alike.
``ds.d2.embed`` is given the loaded model object (it hashes the weights for the fingerprint)
and runs with ``load_from_cache_file=False`` so every repetition really embeds.

    python benchmarks/bench_embed.py                 # 5,000 texts, 3 repetitions
    python benchmarks/bench_embed.py --n 1000 --reps 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402

import hf_d2prune  # noqa: E402,F401
from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.embedding import resolve_text_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="number of texts (20 Newsgroups train)")
    parser.add_argument("--max-words", type=int, default=64, help="truncate each post to its first N words")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    datasets.disable_progress_bars()
    news = load_builtin("20newsgroups").select(range(args.n))
    texts = [" ".join(t.split()[: args.max_words]) for t in news["text"]]
    ds = datasets.Dataset.from_dict({"text": texts})
    model = SentenceTransformer(resolve_text_model(None)[0], device="cpu")
    model.encode(texts[:128], batch_size=args.batch_size)  # warm-up

    raw, ours = [], []
    for rep in range(args.reps):
        def run_raw():
            t = time.perf_counter()
            model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
            raw.append(args.n / (time.perf_counter() - t))

        def run_ours():
            t = time.perf_counter()
            ds.d2.embed("text", model, batch_size=args.batch_size, load_from_cache_file=False)
            ours.append(args.n / (time.perf_counter() - t))

        for fn in ((run_raw, run_ours) if rep % 2 == 0 else (run_ours, run_raw)):
            fn()
        print(f"rep {rep}: raw {raw[-1]:.1f} rows/s, ds.d2.embed {ours[-1]:.1f} rows/s")

    ratio = statistics.median(ours) / statistics.median(raw)
    print()
    print(f"| path | rows/s (median of {args.reps}) |")
    print("|---|---|")
    print(f"| SentenceTransformer.encode | {statistics.median(raw):.1f} |")
    print(f"| ds.d2.embed | {statistics.median(ours):.1f} |")
    print(f"| ratio | {ratio:.3f} |")
    print(f"\n{args.n} texts of 20 Newsgroups (first {args.max_words} words), batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
