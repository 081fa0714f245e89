"""The ``hf-d2prune`` command line: embed, score, select and prune a dataset from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from .builtin import BUILTIN_DATASETS
from .coreset import METHODS

__all__ = ["main", "build_parser"]

_DATASET_HELP = (
    "a built-in dataset (" + ", ".join(BUILTIN_DATASETS) + "; offline), a folder written by "
    "Dataset.save_to_disk, a .csv/.tsv/.json/.jsonl/.parquet file, or a Hugging Face Hub dataset id"
)

_EPILOG = """\
examples:
  hf-d2prune run sms_spam --keep 0.3 --out out/sms-d2-30
  hf-d2prune embed 20newsgroups --column text --out out/news-embedded
  hf-d2prune select out/news-embedded --score prototype_distance --method d2 --out out/news-ranked
  hf-d2prune run imdb --text-column text --label-column label --keep 0.5 --out out/imdb-50 \\
      --hub-dir out/imdb-50-hub --license other
  hf-d2prune card out/sms-d2-30 --full out/sms-scored --out out/card/README.md

Every command writes with Dataset.save_to_disk to a temporary folder first and moves it into
place when complete, so an interrupted run never leaves a half-written --out.
"""


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help=_DATASET_HELP)
    p.add_argument("--split", default="train", help="split to load (default: train)")
    p.add_argument("--config", default=None, help="Hub dataset configuration name")
    p.add_argument("--revision", default=None, help="Hub dataset revision")
    p.add_argument("--out", required=True, help="output folder (Dataset.save_to_disk layout)")


def _add_embed_options(p: argparse.ArgumentParser, *, required_column: bool) -> None:
    g = p.add_argument_group("embedding")
    g.add_argument("--column", "--text-column", "--image-column", dest="column", required=required_column,
                   default=None, help="text or image column to embed (default for run: 'text' or 'image', whichever exists)")
    g.add_argument("--model", default=None,
                   help="sentence-transformers / transformers model id or local path (default: MiniLM-L6 for text, "
                        "EfficientNet-Lite0 for images, both offline from PyPI packages)")
    g.add_argument("--embedding-column", default="embedding", help="name of the embedding column (default: embedding)")
    g.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default: 64)")
    g.add_argument("--no-normalize", action="store_true", help="keep raw vectors instead of L2-normalising them")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: a GPU if present)")
    g.add_argument("--num-proc", type=int, default=None,
                   help="CPU processes for embedding (Dataset.map) and for the partitions of --partitions")


def _add_select_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    g.add_argument("--label-column", default=None, help="label column (default: 'label' if present)")
    g.add_argument("--score", default=None,
                   help="score column (higher = harder). A training-dynamics score name (aum, forgetting, el2n, "
                        "tdds, dynamic_uncertainty, ...) that is not a column yet is computed by training a linear "
                        "head on the embeddings (see --epochs, --subset); with no --score, the geometric score "
                        "'prototype_distance' (distance to the class centroid) is computed and used")
    g.add_argument("--epochs", type=int, default=15, help="epochs of the head trained for a dynamics --score")
    g.add_argument("--subset", type=float, default=None,
                   help="train the head on this seeded fraction of rows only and extrapolate the score to the rest")
    g.add_argument("--extrapolate", default="knn", choices=["knn", "gnn"],
                   help="how --subset scores reach the other rows (default: knn)")
    g.add_argument("--match-steps", default="auto", choices=["auto", "on", "off"],
                   help="train the --subset with as many optimizer steps per epoch as a full run (a batch of "
                        "the subset's share); auto: on for dynamic_uncertainty and tdds (default: auto)")
    g.add_argument("--lower-is-harder", action="store_true",
                   help="the score column runs the other way (e.g. raw AUM, confidence): flip it on purpose")
    g.add_argument("--method", default="d2", choices=list(METHODS),
                   help="selection method (default: d2)")
    g.add_argument("--k", type=int, default=10, help="neighbours per row in the kNN graph (default: 10)")
    g.add_argument("--gamma-forward", type=float, default=1.0, help="D2 forward kernel width γ_f (default: 1.0)")
    g.add_argument("--gamma-reverse", type=float, default=1.0, help="D2 reverse kernel width γ_r (default: 1.0)")
    g.add_argument("--graph", default="symmetric", choices=["symmetric", "directed"], help="D2 graph (default: symmetric)")
    g.add_argument("--index", default="auto", choices=["auto", "exact", "hnsw", "ivf"],
                   help="kNN index: exact below a size threshold, approximate above (default: auto)")
    g.add_argument("--class-wise", action="store_true", help="equal budget per class, D2 inside each class")
    g.add_argument("--strata", type=int, default=None,
                   help="stratified D2: this many equal-width score strata with equal budgets (CCS's), D2 inside "
                        "each (default: one graph)")
    g.add_argument("--hard-cutoff", type=float, default=0.0,
                   help="drop this fraction of rows with the lowest --cutoff-score before selecting (CCS); default 0")
    g.add_argument("--cutoff-score", default=None, help="column ranked for --hard-cutoff (default: the score column)")
    g.add_argument("--partitions", type=int, default=None,
                   help="D2 inside this many k-means partitions, budgets proportional to size (default: one global run)")
    g.add_argument("--partition-neighbours", default="halo", choices=["halo", "local", "global"],
                   help="graph of each partition with --partitions (default: halo)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-d2prune",
        description="Make a Hugging Face dataset smaller without making models worse: embed rows, score "
                    "them, select a coreset with D2 Pruning (diverse and difficult) or a baseline, and save it.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"hf-d2prune {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="the whole job: embed (if needed), score (if needed), select, prune, save",
                       description="Embed (if the embedding column is absent), score (if --score is absent), "
                                   "select with --method and save the coreset of --keep rows to --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_source(p)
    p.add_argument("--keep", type=float, required=True,
                   help="fraction of rows to keep (0 < keep <= 1) or, if > 1, a number of rows")
    p.add_argument("--save-scored", default=None,
                   help="also save the full dataset with embedding, score and rank columns to this folder")
    _add_embed_options(p, required_column=False)
    _add_select_options(p)
    _add_hub_options(p)

    p = sub.add_parser("embed", help="add an embedding column and save the dataset",
                       description="Add an embedding column computed from a text or image column.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_source(p)
    _add_embed_options(p, required_column=True)

    p = sub.add_parser("select", help="add a <method>_rank column (needs an embedding column) and save",
                       description="Rank every row with --method (0 = picked first, -1 = never) and save the "
                                   "full dataset; any budget is then rank < budget.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_source(p)
    p.add_argument("--embedding-column", default="embedding", help="embedding column")
    _add_select_options(p)

    p = sub.add_parser("card", help="write the dataset card (and plots) of a pruned dataset",
                       description="Generate README.md for a dataset pruned with hf-d2prune (a save_to_disk folder) "
                                   "from the provenance it carries; --full adds retention, budgets and plots.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dataset", help="folder written by 'hf-d2prune run --out' (or Dataset.save_to_disk) of the pruned dataset")
    p.add_argument("--full", default=None, help="folder of the full ranked dataset ('run --save-scored')")
    p.add_argument("--out", default="README.md", help="card path; plots go to plots/ beside it")
    p.add_argument("--license", default=None, help="Hub license id (default: the dataset's own, if recorded)")
    p.add_argument("--source", default=None, help="source dataset id on the Hub (or a built-in name)")
    return parser


def _add_hub_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Hugging Face Hub")
    g.add_argument("--hub-dir", default=None,
                   help="also write the Hub repo layout (parquet under data/, README.md card, plots/) to this folder")
    g.add_argument("--push-to-hub", default=None, metavar="REPO", help="push the coreset and its card to this dataset repo")
    g.add_argument("--license", default=None, help="Hub license id for the card (default: the source's, if recorded)")
    g.add_argument("--private", action="store_true", help="create the Hub repo private")
    g.add_argument("--include-scores", action="store_true", help="keep embedding/score/rank columns in the uploaded data")
    g.add_argument("--scores-config", action="store_true", help="also upload the full scored dataset as config 'scores'")


def _publish(args: argparse.Namespace, ranked, small) -> None:
    from .hub import push_to_hub, save_for_hub

    options = dict(full=ranked, license=args.license, source=args.dataset, source_revision=args.revision,
                   include_scores=args.include_scores, scores_config=args.scores_config)
    if args.hub_dir:
        out = save_for_hub(small, args.hub_dir, **options)
        print(f"Hub layout -> {out} (card: {out / 'README.md'})")
    if args.push_to_hub:
        info = push_to_hub(small, args.push_to_hub, private=args.private or None, **options)
        print(f"pushed -> {getattr(info, 'commit_url', args.push_to_hub)}")


def _card(args: argparse.Namespace) -> int:
    from pathlib import Path

    import datasets

    from .card import build_card

    small = datasets.load_from_disk(args.dataset)
    full = datasets.load_from_disk(args.full) if args.full else None
    out = Path(args.out)
    card = build_card(small, full=full, license=args.license, source=args.source,
                      plots_dir=out.parent / "plots" if full is not None else None)
    card.save(out)
    print(f"card -> {out}")
    return 0


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _embed_kwargs(args: argparse.Namespace) -> dict:
    return dict(model=args.model, output_column=args.embedding_column, batch_size=args.batch_size,
                normalize=not args.no_normalize, device=args.device, num_proc=args.num_proc)


def _default_column(ds, requested: Optional[str], candidates: Sequence[str], what: str) -> Optional[str]:
    if requested is not None:
        return requested
    for name in candidates:
        if name in ds.column_names:
            return name
    return None


def _dynamics_score(ds, args: argparse.Namespace, label: Optional[str]):
    """Compute a training-dynamics ``--score`` with a linear head on the embeddings (and extrapolate)."""
    import torch

    from .errors import InvalidParameterError

    from .dynamics.api import _labels_and_classes

    if label is None:
        raise InvalidParameterError(f"--score {args.score} is a training-dynamics score and needs --label-column.")
    labels, num_classes = _labels_and_classes(ds, label)  # validates before any model is built
    num_classes = num_classes or int(labels.max()) + 1
    torch.manual_seed(args.seed)
    head = torch.nn.Linear(ds.features[args.embedding_column].length, num_classes)
    ds = ds.d2.train_dynamics(head, label=label, inputs=args.embedding_column, epochs=args.epochs,
                              scores=[args.score], subset=args.subset, seed=args.seed,
                              match_steps={"auto": None, "on": True, "off": False}[args.match_steps])
    if args.subset is not None:
        ds = ds.d2.extrapolate(args.score, method=args.extrapolate, embedding=args.embedding_column, seed=args.seed)
    return ds


def _select(ds, args: argparse.Namespace):
    from .arrays import require_columns
    from .dynamics.recorder import KNOWN_SCORES

    if args.label_column is not None:
        require_columns(ds, args.label_column)
    label = _default_column(ds, args.label_column, ["label", "labels"], "label")
    score = args.score
    if score is None:
        score = "prototype_distance"
        if score not in ds.column_names:
            ds = ds.d2.score("prototype_distance", embedding=args.embedding_column, label=label)
    elif score not in ds.column_names and score in KNOWN_SCORES:
        ds = _dynamics_score(ds, args, label)
    ds = ds.d2.coreset(
        score=score, method=args.method, embedding=args.embedding_column, k=args.k,
        gamma_forward=args.gamma_forward, gamma_reverse=args.gamma_reverse, graph=args.graph,
        index=args.index, by=label if args.class_wise else None, strata=args.strata, hard_cutoff=args.hard_cutoff,
        cutoff_score=args.cutoff_score, higher_is_harder=not args.lower_is_harder, seed=args.seed,
        label=label, partitions=args.partitions, partition_neighbours=args.partition_neighbours,
        num_proc=getattr(args, "num_proc", None) or 1,
    )
    return ds


def _parse_keep(value: float):
    """``--keep``: a fraction in (0, 1] or a whole number of rows > 1."""
    from .errors import InvalidParameterError

    if 0 < value <= 1:
        return float(value)
    if value > 1 and float(value).is_integer():
        return int(value)
    raise InvalidParameterError(f"--keep {value} is neither a fraction in (0, 1] nor a whole number of rows.")


def _run(args: argparse.Namespace) -> int:
    from .io import load_any, save_atomic

    if args.command == "card":
        return _card(args)
    keep = _parse_keep(args.keep) if args.command == "run" else None
    if getattr(args, "push_to_hub", None):
        from .hub import check_repo_id

        check_repo_id(args.push_to_hub)  # fail before any embedding
    ds = load_any(args.dataset, split=args.split, config=args.config, revision=args.revision)
    if isinstance(keep, int) and keep > len(ds):
        from .errors import InvalidParameterError

        raise InvalidParameterError(f"--keep {keep} rows, but '{args.dataset}' has only {len(ds)} rows.")
    if args.command in ("run", "embed") and (args.command == "embed" or args.embedding_column not in ds.column_names):
        column = _default_column(ds, args.column, ["text", "image", "img", "sentence"], "column")
        if column is None:
            raise SystemExit(f"hf-d2prune: no --column given and no 'text' or 'image' column in {ds.column_names}")
        ds = ds.d2.embed(column, **_embed_kwargs(args))
    if args.command == "embed":
        save_atomic(ds, args.out)
        print(f"embedded {len(ds)} rows -> {args.out}")
        return 0
    ds = _select(ds, args)
    method = "d2" if args.method == "d2" else args.method
    if args.command == "select":
        save_atomic(ds, args.out)
        print(f"ranked {len(ds)} rows with {method} -> {args.out} (column {method}_rank)")
        return 0
    small = ds.d2.prune(keep=keep, method=method)
    if args.save_scored:
        save_atomic(ds, args.save_scored)
    save_atomic(small, args.out)
    if args.hub_dir or args.push_to_hub:
        _publish(args, ds, small)
    summary = {"source_rows": len(ds), "kept_rows": len(small), "method": method, "out": str(args.out)}
    label = _default_column(ds, args.label_column, ["label", "labels"], "label")
    if label is not None:
        summary["kept_per_class"] = _per_class(ds, small, label)
    print(json.dumps(summary, indent=2))
    return 0


def _per_class(ds, small, label: str) -> dict:
    import numpy as np

    names = getattr(ds.features[label], "names", None)
    full = np.asarray(ds[label])
    kept = np.asarray(small[label])
    out = {}
    for value in np.unique(full):
        key = names[int(value)] if names is not None else str(value)
        out[key] = f"{int((kept == value).sum())}/{int((full == value).sum())}"
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``hf-d2prune``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    from .errors import D2PruneError

    try:
        return _run(args)
    except D2PruneError as err:
        print(f"hf-d2prune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
