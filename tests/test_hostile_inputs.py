"""Hostile input: the malformed calls real users make, for every public ``ds.d2`` method and the CLI.

The cases are one table, ``CASES``: ``(id, call, expected)``. ``expected`` is either ``OK`` (the call
returns a correct result, checked where there is something to check) or ``Raises(type, pattern)``: a
typed exception (a :class:`hf_d2prune.D2PruneError` subclass, or the built-in ``ValueError`` /
``TypeError`` / ``OSError`` it resembles) whose message names the column or parameter. Every case
also asserts that no input dataset changed (fingerprint and data). Cases that fail because of a bug
in a file this suite may not edit are marked ``xfail(strict=True)`` with the fix in the reason.

``test_zz_case_count`` prints how many cases ran and passed (``pytest -s`` shows it); the count is
mechanical: one row of the table = one case. A few hypothesis properties at the end fuzz the same
entry points with random garbage.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional

import datasets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hf_d2prune  # noqa: F401  (registers ds.d2)
from hf_d2prune.cli import main
from hf_d2prune.errors import (
    ColumnNotFoundError,
    ColumnTypeError,
    D2PruneError,
    InvalidParameterError,
    InvalidValuesError,
    OutputExistsError,
)

torch.set_num_threads(1)
datasets.disable_progress_bars()

METHODS = ["d2", "random", "topk", "easiest", "ccs", "moderate", "kcenter"]
F32 = datasets.Value("float32")


def _vec(d: int) -> datasets.Sequence:
    return datasets.Sequence(F32, length=d)


def _base(n: int = 8, d: int = 3, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"embedding": rng.normal(size=(n, d)).astype(np.float32), "score": rng.random(n).astype(np.float32),
         "label": np.arange(n) % 2, "text": [f"row {i}" for i in range(n)]},
        features=datasets.Features({"embedding": _vec(d), "score": F32,
                                    "label": datasets.ClassLabel(names=["a", "b"]), "text": datasets.Value("string")}),
    )


def _with(ds: datasets.Dataset, column: str, values: list, feature: Any = None) -> datasets.Dataset:
    out = ds.remove_columns(column) if column in ds.column_names else ds
    # (add_column takes feature= only from datasets 3 on)
    added = datasets.Dataset.from_dict({column: values}, features=None if feature is None else datasets.Features({column: feature}))
    return datasets.concatenate_datasets([out, added], axis=1)


def _build() -> dict[str, datasets.Dataset]:
    base = _base()
    X = np.asarray(base["embedding"])
    nan_x, inf_x = X.copy(), X.copy()
    nan_x[2, 1], inf_x[5, 0] = np.nan, np.inf
    ranked = base.d2.coreset(score="score", method="topk")
    return {
        "base": base,
        "empty": base.select([]),
        "one": base.select([3]),
        "two": base.select([0, 1]),
        "dups": datasets.Dataset.from_dict({"embedding": [[1.0, 1.0]] * 6, "score": [0.5] * 6, "label": [0, 1] * 3,
                                            "text": ["same"] * 6}),
        "zeros": datasets.Dataset.from_dict({"embedding": [[0.0, 0.0]] * 5, "score": [0.0] * 5}),
        "nan_emb": _with(base, "embedding", [list(r) for r in nan_x]),
        "inf_emb": _with(base, "embedding", [list(r) for r in inf_x]),
        "ragged": _with(base, "embedding", [[1.0, 2.0]] * 3 + [[1.0]] + [[1.0, 2.0]] * 4),
        "null_emb": _with(base, "embedding", [[1.0, 2.0]] * 4 + [None] + [[3.0, 1.0]] * 3),
        "str_emb": _with(base, "embedding", [["a", "b"]] * 8),
        "empty_vec": _with(base, "embedding", [[]] * 8, feature=datasets.Sequence(F32)),
        "nan_score": _with(base, "score", [0.1, float("nan"), 0.3, 0.2, float("nan"), 0.6, 0.7, 0.8]),
        "null_score": _with(base, "score", [0.1, None, 0.3, 0.2, 0.5, 0.6, 0.7, 0.8]),
        "neg_score": _with(base, "score", [-5.0, -1.0, -3.0, -2.0, -0.5, -9.0, -7.0, -1.0]),
        "const_score": _with(base, "score", [2.0] * 8),
        "str_label": _with(base, "label", ["cat", "dog"] * 4),
        "float_label": _with(base, "label", [0.0, 1.5, 0.0, 1.5, 0.0, 1.5, 0.0, 1.5]),
        "null_label": _with(base, "label", [0, 1, None, 1, 0, 1, 0, 1]),
        "ranked": ranked,
        "ranked_cut": base.d2.coreset(score="score", method="d2", k=2, hard_cutoff=0.5),
        "texts": datasets.Dataset.from_dict({"text": ["a", None, "", "dddd"], "label": [0, 1, 0, 1], "n": [1, 2, 3, 4]}),
        "dyn": datasets.Dataset.from_dict({"embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.5]],
                                           "label": [0, 1, 0, 1], "slabel": ["a", "b", "a", "b"]}),
    }


def _enc(values: list) -> np.ndarray:
    """A tiny deterministic text encoder (length, vowels), standing in for a model."""
    return np.array([[len(v or "") + 1.0, sum(c in "aeiou" for c in (v or "")) + 1.0] for v in values])


def _head() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(2, 2)


@dataclasses.dataclass
class Raises:
    error: type
    pattern: str


class _Ok:
    def __init__(self, check: Optional[Callable[[Any], None]] = None):
        self.check = check

    def __call__(self, check: Callable[[Any], None]) -> "_Ok":
        return _Ok(check)


OK = _Ok()


def _ranks_ok(column: str):
    def check(out):
        ranks = np.asarray(out[column])
        kept = np.sort(ranks[ranks >= 0])
        np.testing.assert_array_equal(kept, np.arange(len(kept)))
        assert ((ranks >= 0) | (ranks == -1)).all()
    return check


def _all_equal_and_small(column: str):
    # identical rows are equally typical; faiss k-means splits an empty cluster by perturbing a
    # centroid by ~1/1024 of its norm, so "0" comes back as ~1e-3 (docs/reliability.md)
    def check(out):
        values = np.asarray(out[column])
        assert np.ptp(values) == 0 and values.max() < 1e-2
    return check


def _rows(n: int):
    def check(out):
        assert len(out) == n
    return check


def _cli(ctx, *argv: str) -> int:
    """Run the CLI; a non-zero exit status shows as ``SystemExit(status)``, as the shell sees it."""
    rc = main([a.format(**ctx) for a in argv])
    if rc:
        raise SystemExit(rc)
    return rc


def _dd_missing(d):
    return datasets.DatasetDict({"train": d["base"], "test": d["base"].remove_columns("score")})


XFAIL = "xfail"
# (id, call(d, ctx) -> result, expected[, xfail reason])
CASES: list[tuple] = [
    # ---- coreset: columns
    ("coreset-misspelled-score", lambda d, c: d["base"].d2.coreset(score="scroe"), Raises(ColumnNotFoundError, r"'scroe' not found; available: .*score")),
    ("coreset-wrong-case-score", lambda d, c: d["base"].d2.coreset(score="Score"), Raises(ColumnNotFoundError, r"Did you mean 'score'")),
    ("coreset-score-not-a-string", lambda d, c: d["base"].d2.coreset(score=3), Raises(InvalidParameterError, r"column name must be a string, got 3")),
    ("coreset-missing-embedding", lambda d, c: d["base"].d2.coreset(score="score", embedding="emb"), Raises(ColumnNotFoundError, r"'emb' not found")),
    ("coreset-score-is-text", lambda d, c: d["base"].d2.coreset(score="text", method="topk"), Raises(ColumnTypeError, r"column 'text' holds string")),
    ("coreset-score-is-vector", lambda d, c: d["base"].d2.coreset(score="embedding", method="topk"), Raises(ColumnTypeError, r"column 'embedding' holds fixed_size_list")),
    ("coreset-embedding-is-scalar", lambda d, c: d["base"].d2.coreset(score="score", embedding="score", k=2), Raises(ColumnTypeError, r"column 'score' holds float.*lists of numbers")),
    ("coreset-embedding-is-text", lambda d, c: d["base"].d2.coreset(method="kcenter", embedding="text"), Raises(ColumnTypeError, r"column 'text' holds string")),
    ("coreset-by-missing", lambda d, c: d["base"].d2.coreset(score="score", by="lable", k=2), Raises(ColumnNotFoundError, r"'lable' not found")),
    ("coreset-by-vector", lambda d, c: d["base"].d2.coreset(score="score", by="embedding", k=2), Raises(ColumnTypeError, r"column 'embedding'")),
    ("coreset-by-string-labels", lambda d, c: d["str_label"].d2.coreset(score="score", by="label", k=2), OK(_ranks_ok("d2_rank"))),
    ("coreset-by-null-labels", lambda d, c: d["null_label"].d2.coreset(score="score", by="label", k=2), Raises(InvalidValuesError, r"label column 'label' has missing labels in 1 row \(first: 2\)")),
    ("coreset-by-float-labels", lambda d, c: d["float_label"].d2.coreset(score="score", by="label", k=2), Raises(ColumnTypeError, r"label column 'label'")),
    ("coreset-moderate-missing-label", lambda d, c: d["base"].d2.coreset(method="moderate", label="lable"), Raises(ColumnNotFoundError, r"'lable' not found")),
    ("coreset-moderate-string-label", lambda d, c: d["str_label"].d2.coreset(method="moderate", label="label"), OK(_ranks_ok("moderate_rank"))),
    ("coreset-output-column-over-source", lambda d, c: d["base"].d2.coreset(score="score", method="topk", output_column="text"), Raises(InvalidParameterError, r"output_column 'text'")),
    # ---- coreset: embedding values
    ("coreset-nan-embedding", lambda d, c: d["nan_emb"].d2.coreset(score="score", k=2), Raises(InvalidValuesError, r"column 'embedding' holds NaN or inf in 1 row \(first: 2\)")),
    ("coreset-inf-embedding", lambda d, c: d["inf_emb"].d2.coreset(method="kcenter"), Raises(InvalidValuesError, r"column 'embedding' holds NaN or inf in 1 row \(first: 5\)")),
    ("coreset-nan-embedding-moderate", lambda d, c: d["nan_emb"].d2.coreset(method="moderate"), Raises(InvalidValuesError, r"first: 2")),
    ("coreset-ragged-embedding", lambda d, c: d["ragged"].d2.coreset(score="score", k=2), Raises(InvalidValuesError, r"unequal length.*row 3 has 1")),
    ("coreset-null-embedding", lambda d, c: d["null_emb"].d2.coreset(score="score", k=2), Raises(InvalidValuesError, r"missing embeddings in 1 row \(first: 4\)")),
    ("coreset-string-embedding", lambda d, c: d["str_emb"].d2.coreset(method="kcenter"), Raises(ColumnTypeError, r"lists of string")),
    ("coreset-empty-vectors", lambda d, c: d["empty_vec"].d2.coreset(method="kcenter"), Raises(InvalidValuesError, r"empty vectors")),
    ("coreset-all-zero-embeddings", lambda d, c: d["zeros"].d2.coreset(score="score", k=2), OK(_ranks_ok("d2_rank"))),
    *[(f"coreset-all-duplicates-{m}", (lambda m: lambda d, c: d["dups"].d2.coreset(score="score", method=m, k=2))(m), OK(_ranks_ok(f"{m}_rank")))
      for m in METHODS],
    # ---- coreset: scores
    ("coreset-nan-score-unmeasured", lambda d, c: d["nan_score"].d2.coreset(score="score", k=2), Raises(InvalidValuesError, r"score column 'score' holds NaN or inf in 2 rows \(first: 1, 4\)")),
    ("coreset-nan-score-topk", lambda d, c: d["nan_score"].d2.coreset(score="score", method="topk"), Raises(InvalidValuesError, r"first: 1, 4")),
    ("coreset-nan-cutoff-score", lambda d, c: d["base"].add_column("cut", [1.0, 2.0, float("nan")] + [0.5] * 5).d2.coreset(score="score", k=2, hard_cutoff=0.25, cutoff_score="cut"), Raises(InvalidValuesError, r"cutoff_score column 'cut' holds NaN or inf in 1 row \(first: 2\)")),
    ("coreset-missing-cutoff-score", lambda d, c: d["base"].d2.coreset(score="score", k=2, hard_cutoff=0.25, cutoff_score="aum"), Raises(ColumnNotFoundError, r"'aum' not found")),
    ("coreset-null-score", lambda d, c: d["null_score"].d2.coreset(score="score", k=2), Raises(InvalidValuesError, r"column 'score' has missing values in 1 row \(first: 1\)")),
    ("coreset-negative-scores", lambda d, c: d["neg_score"].d2.coreset(score="score", k=2), OK(_ranks_ok("d2_rank"))),
    ("coreset-constant-scores-ccs", lambda d, c: d["const_score"].d2.coreset(score="score", method="ccs"), OK(_ranks_ok("ccs_rank"))),
    ("coreset-bool-score", lambda d, c: d["base"].add_column("b", [True, False] * 4).d2.coreset(score="b", method="topk"), OK(_ranks_ok("topk_rank"))),
    # ---- coreset: parameters
    ("coreset-no-score-for-d2", lambda d, c: d["base"].d2.coreset(method="d2"), Raises(InvalidParameterError, r"needs score=")),
    ("coreset-unknown-method", lambda d, c: d["base"].d2.coreset(score="score", method="D2 "), Raises(InvalidParameterError, r"unknown method 'D2 '")),
    ("coreset-method-list", lambda d, c: d["base"].d2.coreset(score="score", method=["d2"]), Raises(InvalidParameterError, r"unknown method")),
    ("coreset-k-0", lambda d, c: d["base"].d2.coreset(score="score", k=0), Raises(InvalidParameterError, r"k must be >= 1")),
    ("coreset-k-float", lambda d, c: d["base"].d2.coreset(score="score", k=2.0), Raises(InvalidParameterError, r"k must be an integer")),
    ("coreset-k-equals-n", lambda d, c: d["base"].d2.coreset(score="score", k=8), Raises(InvalidParameterError, r"k=8 must be smaller than the number of rows \(8\); use k <= 7")),
    ("coreset-k-n-minus-1", lambda d, c: d["base"].d2.coreset(score="score", k=7), OK(_ranks_ok("d2_rank"))),
    ("coreset-huge-k", lambda d, c: d["base"].d2.coreset(score="score", k=10**12), Raises(InvalidParameterError, r"k=1000000000000")),
    ("coreset-huge-k-class-wise", lambda d, c: d["base"].d2.coreset(score="score", k=10**6, by="label"), OK(_ranks_ok("d2_rank"))),
    ("coreset-budget-0", lambda d, c: d["base"].d2.coreset(score="score", k=2, budget=0), Raises(InvalidParameterError, r"budget must be >= 1")),
    ("coreset-budget-1", lambda d, c: d["base"].d2.coreset(score="score", k=2, budget=1), OK(lambda o: np.testing.assert_array_equal(np.sort(o["d2_rank"]), [-1] * 7 + [0]))),
    ("coreset-budget-n", lambda d, c: d["base"].d2.coreset(score="score", k=2, budget=8), OK(_ranks_ok("d2_rank"))),
    ("coreset-budget-n-plus-1-d2", lambda d, c: d["base"].d2.coreset(score="score", k=2, budget=9), Raises(InvalidParameterError, r"budget")),
    ("coreset-budget-n-plus-1-kcenter", lambda d, c: d["base"].d2.coreset(method="kcenter", budget=9), Raises(InvalidParameterError, r"budget=9 exceeds the 8 rows")),
    ("coreset-budget-n-plus-1-topk", lambda d, c: d["base"].d2.coreset(score="score", method="topk", budget=9), OK(_ranks_ok("topk_rank"))),
    ("coreset-gamma-negative", lambda d, c: d["base"].d2.coreset(score="score", k=2, gamma_forward=-1), Raises(InvalidParameterError, r"gamma_forward")),
    ("coreset-gamma-nan", lambda d, c: d["base"].d2.coreset(score="score", k=2, gamma_reverse=float("nan")), Raises(InvalidParameterError, r"gamma_reverse")),
    ("coreset-gamma-string", lambda d, c: d["base"].d2.coreset(score="score", k=2, gamma_forward="1"), Raises(InvalidParameterError, r"gamma_forward")),
    ("coreset-hard-cutoff-1", lambda d, c: d["base"].d2.coreset(score="score", k=2, hard_cutoff=1.0), Raises(InvalidParameterError, r"hard_cutoff must lie in \[0.0, 1.0\)")),
    ("coreset-hard-cutoff-negative", lambda d, c: d["base"].d2.coreset(score="score", k=2, hard_cutoff=-0.1), Raises(InvalidParameterError, r"hard_cutoff")),
    ("coreset-hard-cutoff-nan", lambda d, c: d["base"].d2.coreset(score="score", k=2, hard_cutoff=float("nan")), Raises(InvalidParameterError, r"hard_cutoff")),
    ("coreset-hard-cutoff-on-random", lambda d, c: d["base"].d2.coreset(method="random", hard_cutoff=0.1), Raises(InvalidParameterError, r"'d2' and 'ccs'")),
    ("coreset-graph-unknown", lambda d, c: d["base"].d2.coreset(score="score", k=2, graph="undirected"), Raises(InvalidParameterError, r"graph must be")),
    ("coreset-index-unknown", lambda d, c: d["base"].d2.coreset(score="score", k=2, index="flat"), Raises(InvalidParameterError, r"index must be")),
    ("coreset-index-ivf-tiny", lambda d, c: d["base"].d2.coreset(score="score", k=2, index="ivf"), OK(_ranks_ok("d2_rank"))),
    ("coreset-n-bins-0", lambda d, c: d["base"].d2.coreset(score="score", method="ccs", n_bins=0), Raises(InvalidParameterError, r"n_bins")),
    ("coreset-seed-negative", lambda d, c: d["base"].d2.coreset(method="random", seed=-1), Raises(InvalidParameterError, r"seed must be >= 0")),
    ("coreset-seed-none", lambda d, c: d["base"].d2.coreset(method="random", seed=None), Raises(InvalidParameterError, r"seed must be an integer")),
    ("coreset-seed-string", lambda d, c: d["base"].d2.coreset(method="random", seed="42"), Raises(InvalidParameterError, r"seed")),
    # ---- coreset: sizes
    ("coreset-empty-dataset", lambda d, c: d["empty"].d2.coreset(score="score", method="topk"), Raises(InvalidParameterError, r"dataset is empty")),
    ("coreset-one-row-d2", lambda d, c: d["one"].d2.coreset(score="score"), Raises(InvalidParameterError, r"at least 2 rows.*method='topk'")),
    *[(f"coreset-one-row-{m}", (lambda m: lambda d, c: d["one"].d2.coreset(score="score", method=m))(m), OK(lambda o, m=m: np.testing.assert_array_equal(o[f"{m}_rank"], [0])))
      for m in METHODS[1:]],
    ("coreset-two-rows-d2-k1", lambda d, c: d["two"].d2.coreset(score="score", k=1), OK(_ranks_ok("d2_rank"))),
    # ---- prune
    ("prune-before-coreset", lambda d, c: d["base"].d2.prune(keep=0.5), Raises(ColumnNotFoundError, r"run ds.d2.coreset")),
    ("prune-wrong-method", lambda d, c: d["ranked"].d2.prune(keep=0.5, method="d2"), Raises(ColumnNotFoundError, r"Available rank columns: topk_rank")),
    *[(f"prune-keep-{v!r}", (lambda v: lambda d, c: d["ranked"].d2.prune(keep=v, method="topk"))(v), Raises(InvalidParameterError, r"keep"))
      for v in (0, 0.0, -1, -0.5, 1.0001, 9, float("nan"), float("inf"), "30%", None, True)],
    ("prune-keep-1-row", lambda d, c: d["ranked"].d2.prune(keep=1, method="topk"), OK(_rows(1))),
    ("prune-keep-n-rows", lambda d, c: d["ranked"].d2.prune(keep=8, method="topk"), OK(_rows(8))),
    ("prune-keep-1.0", lambda d, c: d["ranked"].d2.prune(keep=1.0, method="topk"), OK(_rows(8))),
    ("prune-keep-tiny-fraction", lambda d, c: d["ranked"].d2.prune(keep=1e-9, method="topk"), OK(_rows(1))),
    ("prune-keep-numpy-float", lambda d, c: d["ranked"].d2.prune(keep=np.float32(0.5), method="topk"), OK(_rows(4))),
    ("prune-keep-numpy-int", lambda d, c: d["ranked"].d2.prune(keep=np.int64(3), method="topk"), OK(_rows(3))),
    ("prune-more-than-ranked", lambda d, c: d["ranked_cut"].d2.prune(keep=6), Raises(InvalidParameterError, r"ranks only 4 of 8.*keep at most 4")),
    ("prune-empty-dataset", lambda d, c: d["ranked"].select([]).d2.prune(keep=0.5, method="topk"), Raises(InvalidParameterError, r"keep")),
    ("prune-rank-column-is-text", lambda d, c: d["ranked"].d2.prune(keep=2, rank_column="text"), Raises(ColumnTypeError, r"column 'text'")),
    ("prune-rank-column-is-float-score", lambda d, c: d["ranked"].d2.prune(keep=2, rank_column="score"), Raises(ColumnTypeError, r"'score'")),
    # ---- score / embeddings
    ("score-unknown-name", lambda d, c: d["base"].d2.score("protoype_distance"), Raises(InvalidParameterError, r"unknown score 'protoype_distance'")),
    ("score-missing-embedding", lambda d, c: d["base"].d2.score(embedding="emb"), Raises(ColumnNotFoundError, r"'emb' not found")),
    ("score-nan-embedding", lambda d, c: d["nan_emb"].d2.score(), Raises(InvalidValuesError, r"first: 2")),
    ("score-ragged-embedding", lambda d, c: d["ragged"].d2.score(), Raises(InvalidValuesError, r"unequal length")),
    ("score-empty-dataset", lambda d, c: d["empty"].d2.score(), Raises(InvalidValuesError, r"empty")),
    ("score-one-row", lambda d, c: d["one"].d2.score(label=None), OK(lambda o: np.testing.assert_allclose(o["prototype_distance"], [0.0], atol=1e-6))),
    ("score-null-labels", lambda d, c: d["null_label"].d2.score(label="label"), Raises(InvalidValuesError, r"missing labels")),
    ("score-string-labels", lambda d, c: d["str_label"].d2.score(label="label"), OK(_rows(8))),
    ("score-n-prototypes-0", lambda d, c: d["base"].d2.score(label=None, n_prototypes=0), Raises(InvalidParameterError, r"n_prototypes")),
    ("score-n-prototypes-more-than-n", lambda d, c: d["base"].d2.score(label=None, n_prototypes=100), OK(_rows(8))),
    ("score-duplicates", lambda d, c: d["dups"].d2.score(label=None), OK(_all_equal_and_small("prototype_distance"))),
    ("embeddings-missing", lambda d, c: d["base"].d2.embeddings("emb"), Raises(ColumnNotFoundError, r"'emb' not found")),
    ("embeddings-empty", lambda d, c: d["empty"].d2.embeddings(), Raises(InvalidValuesError, r"empty")),
    ("embeddings-text-column", lambda d, c: d["base"].d2.embeddings("text"), Raises(ColumnTypeError, r"d2.embed")),
    ("embeddings-nan", lambda d, c: d["nan_emb"].d2.embeddings(), Raises(InvalidValuesError, r"first: 2")),
    # ---- embed (a callable model: no network, no weights)
    ("embed-misspelled-column", lambda d, c: d["texts"].d2.embed("txet", _enc), Raises(ColumnNotFoundError, r"'txet' not found; available: text, label, n")),
    ("embed-column-not-a-string", lambda d, c: d["texts"].d2.embed(5, _enc), Raises(InvalidParameterError, r"column name must be a string")),
    ("embed-numeric-column-default-model", lambda d, c: d["texts"].d2.embed("n"), Raises(ColumnTypeError, r"column 'n' holds int64.*model=<callable>")),
    ("embed-empty-dataset", lambda d, c: d["texts"].select([]).d2.embed("text", _enc), Raises(InvalidValuesError, r"empty")),
    ("embed-none-and-empty-texts", lambda d, c: d["texts"].d2.embed("text", _enc), OK(lambda o: np.testing.assert_allclose(o.d2.embeddings()[1], o.d2.embeddings()[2]))),
    ("embed-model-returns-nan", lambda d, c: d["texts"].d2.embed("text", lambda v: np.full((len(v), 2), np.nan)), Raises(InvalidValuesError, r"returned NaN or inf")),
    ("embed-model-returns-1d", lambda d, c: d["texts"].d2.embed("text", lambda v: np.ones(len(v))), Raises(InvalidValuesError, r"returned an array of shape \(1,\)")),
    ("embed-model-returns-wrong-rows", lambda d, c: d["texts"].d2.embed("text", lambda v: np.ones((len(v) + 1, 2))), Raises(InvalidValuesError, r"must return \(batch, dim\)")),
    ("embed-model-returns-none", lambda d, c: d["texts"].d2.embed("text", lambda v: None), Raises(InvalidValuesError, r"must return")),
    ("embed-model-returns-strings", lambda d, c: d["texts"].d2.embed("text", lambda v: [["x"]] * len(v)), Raises(InvalidValuesError, r"not numbers")),
    ("embed-model-returns-0-dim", lambda d, c: d["texts"].d2.embed("text", lambda v: np.ones((len(v), 0))), Raises(InvalidValuesError, r"dim >= 1")),
    ("embed-model-dim-changes", lambda d, c: d["texts"].d2.embed("text", lambda v: np.ones((len(v), 1 + len(v[0] or ""))), map_batch_size=1), Raises(InvalidValuesError, r"same dimension")),
    ("embed-model-is-an-int", lambda d, c: d["texts"].d2.embed("text", 5), Raises(InvalidParameterError, r"model must be")),
    ("embed-batch-size-0", lambda d, c: d["texts"].d2.embed("text", _enc, batch_size=0), Raises(InvalidParameterError, r"batch_size")),
    ("embed-num-proc-0", lambda d, c: d["texts"].d2.embed("text", _enc, num_proc=0), Raises(InvalidParameterError, r"num_proc")),
    ("embed-output-over-input", lambda d, c: d["texts"].d2.embed("text", _enc, output_column="text"), Raises(InvalidParameterError, r"overwrite the input column")),
    ("embed-output-column-empty", lambda d, c: d["texts"].d2.embed("text", _enc, output_column=""), Raises(InvalidParameterError, r"output_column")),
    # ---- train_dynamics
    ("dynamics-string-labels", lambda d, c: d["dyn"].d2.train_dynamics(_head(), label="slabel", inputs="embedding", epochs=2, progress=False), Raises(ColumnTypeError, r"class_encode_column\('slabel'\)")),
    ("dynamics-missing-label", lambda d, c: d["dyn"].d2.train_dynamics(_head(), label="lbl", inputs="embedding", epochs=2, progress=False), Raises(ColumnNotFoundError, r"'lbl' not found")),
    ("dynamics-null-label", lambda d, c: _with(d["dyn"], "label", [0, None, 1, 0]).d2.train_dynamics(_head(), inputs="embedding", epochs=2, progress=False), Raises(InvalidValuesError, r"'label' has missing values")),
    ("dynamics-negative-label", lambda d, c: _with(d["dyn"], "label", [0, -1, 1, 0]).d2.train_dynamics(_head(), inputs="embedding", epochs=2, progress=False), Raises(InvalidValuesError, r"ids outside")),
    ("dynamics-label-beyond-logits", lambda d, c: _with(d["dyn"], "label", [0, 5, 1, 0]).d2.train_dynamics(_head(), inputs="embedding", epochs=2, progress=False), Raises(InvalidParameterError, r"num_labels=6")),
    ("dynamics-classlabel", lambda d, c: d["dyn"].cast_column("label", datasets.ClassLabel(names=["x", "y"])).d2.train_dynamics(_head(), inputs="embedding", epochs=2, scores=["aum"], progress=False), OK(_rows(4))),
    ("dynamics-model-input-width", lambda d, c: d["dyn"].d2.train_dynamics(torch.nn.Linear(3, 2), inputs="embedding", epochs=2, progress=False), Raises(InvalidParameterError, r"cannot take inputs \['embedding'\]")),
    ("dynamics-missing-inputs", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="emb", progress=False), Raises(ColumnNotFoundError, r"'emb' not found")),
    ("dynamics-text-inputs-no-tokenizer", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="slabel", progress=False), Raises(ColumnTypeError, r"tokenizer=")),
    ("dynamics-nan-inputs", lambda d, c: _with(d["dyn"], "embedding", [[1.0, 0.0], [float("nan"), 1.0], [1.0, 1.0], [0.0, 0.5]]).d2.train_dynamics(_head(), inputs="embedding", epochs=2, progress=False), Raises(InvalidValuesError, r"first: 1")),
    ("dynamics-empty", lambda d, c: d["dyn"].select([]).d2.train_dynamics(_head(), inputs="embedding", progress=False), Raises(InvalidValuesError, r"empty")),
    ("dynamics-one-row", lambda d, c: d["dyn"].select([0]).d2.train_dynamics(_head(), inputs="embedding", epochs=2, scores=["aum"], progress=False), OK(_rows(1))),
    ("dynamics-epochs-0", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", epochs=0, progress=False), Raises(InvalidParameterError, r"epochs must be >= 1")),
    ("dynamics-too-few-epochs-for-tdds", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", epochs=2, scores=["tdds"], progress=False), Raises(InvalidParameterError, r"too few for tdds")),
    ("dynamics-subset-0", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", subset=0, progress=False), Raises(InvalidParameterError, r"subset must lie in \(0.0, 1.0\]")),
    ("dynamics-subset-above-1", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", subset=1.5, progress=False), Raises(InvalidParameterError, r"subset")),
    ("dynamics-lr-nan", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", lr=float("nan"), progress=False), Raises(InvalidParameterError, r"lr")),
    ("dynamics-unknown-score", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", scores=["aumm"], progress=False), Raises(InvalidParameterError, r"unknown score 'aumm'")),
    ("dynamics-no-scores", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", scores=[], progress=False), Raises(InvalidParameterError, r"scores is empty")),
    ("dynamics-unknown-option", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", epochs=2, progress=False, du_windw=3), Raises(InvalidParameterError, r"unknown score option 'du_windw'")),
    ("dynamics-model-not-a-module", lambda d, c: d["dyn"].d2.train_dynamics(lambda x: x, inputs="embedding", progress=False), Raises(InvalidParameterError, r"torch.nn.Module")),
    ("dynamics-seed-string", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", epochs=2, seed="x", progress=False), Raises(InvalidParameterError, r"seed")),
    ("dynamics-batch-size-0", lambda d, c: d["dyn"].d2.train_dynamics(_head(), inputs="embedding", batch_size=0, progress=False), Raises(InvalidParameterError, r"batch_size")),
    # ---- card / publishing
    ("card-no-license", lambda d, c: d["ranked"].d2.prune(keep=2, method="topk").d2.card(), Raises(InvalidParameterError, r"license=")),
    ("save-for-hub-into-a-file", lambda d, c: d["ranked"].d2.save_for_hub(c["file"], license="mit"), Raises(OutputExistsError, r"is a file")),
    ("save-for-hub-non-empty-folder", lambda d, c: d["ranked"].d2.save_for_hub(c["nonempty"], license="mit"), Raises(OutputExistsError, r"overwrite=True")),
    ("push-invalid-repo-id", lambda d, c: d["ranked"].d2.push_to_hub("not a repo/x y", license="mit"), Raises(InvalidParameterError, r"repo_id")),
    # ---- DatasetDict
    ("dict-split-lacks-score", lambda d, c: _dd_missing(d).d2.coreset(score="score", method="topk"), Raises(ColumnNotFoundError, r"split 'test': column 'score' not found")),
    ("dict-split-lacks-embedding", lambda d, c: datasets.DatasetDict({"a": d["base"], "b": d["base"].remove_columns("embedding")}).d2.score(), Raises(ColumnNotFoundError, r"split 'b'")),
    ("dict-one-empty-split", lambda d, c: datasets.DatasetDict({"a": d["base"], "b": d["empty"]}).d2.coreset(score="score", method="topk"), Raises(InvalidParameterError, r"split 'b': the dataset is empty")),
    ("dict-prune-per-split", lambda d, c: datasets.DatasetDict({"a": d["ranked"], "b": d["ranked"].select(range(4))}).d2.prune(keep=0.5, method="topk"), OK(lambda o: [len(o["a"]), len(o["b"])] == [4, 2] or pytest.fail(str(o)))),
    ("dict-card-is-per-split", lambda d, c: datasets.DatasetDict({"a": d["ranked"]}).d2.card(), Raises(InvalidParameterError, r"dd\['train'\].d2.card")),
    # ---- the command line (exit status 2 + message on stderr, or argparse's exit 2)
    ("cli-missing-path", lambda d, c: _cli(c, "run", "{tmp}/nope", "--keep", "0.5", "--out", "{tmp}/o"), Raises(SystemExit, r"cannot load '.*/nope': that file or folder does not exist")),
    ("cli-missing-csv", lambda d, c: _cli(c, "run", "{tmp}/nope.csv", "--keep", "0.5", "--out", "{tmp}/o"), Raises(SystemExit, r"does not exist")),
    ("cli-unknown-extension", lambda d, c: _cli(c, "run", "{tmp}/data.xyz", "--keep", "0.5", "--out", "{tmp}/o"), Raises(SystemExit, r"use one of .csv")),
    ("cli-empty-csv", lambda d, c: _cli(c, "run", "{tmp}/empty.csv", "--keep", "0.5", "--out", "{tmp}/o"), Raises(SystemExit, r"holds no rows")),
    *[(f"cli-keep-{v}", (lambda v: lambda d, c: _cli(c, "run", "{src}", "--keep", v, "--score", "score", "--k", "2", "--out", "{tmp}/o"))(v), Raises(SystemExit, r"keep"))
      for v in ("0", "-1", "nan", "2.5", "13", "abc")],
    ("cli-k-0", lambda d, c: _cli(c, "run", "{src}", "--keep", "0.5", "--score", "score", "--k", "0", "--out", "{tmp}/o"), Raises(SystemExit, r"k must be >= 1")),
    ("cli-k-too-large", lambda d, c: _cli(c, "run", "{src}", "--keep", "0.5", "--score", "score", "--k", "99", "--out", "{tmp}/o"), Raises(SystemExit, r"k=99")),
    ("cli-misspelled-score", lambda d, c: _cli(c, "run", "{src}", "--keep", "0.5", "--score", "scroe", "--out", "{tmp}/o"), Raises(SystemExit, r"'scroe' not found")),
    ("cli-unknown-method", lambda d, c: _cli(c, "run", "{src}", "--keep", "0.5", "--method", "d3", "--out", "{tmp}/o"), Raises(SystemExit, r"invalid choice: 'd3'")),
    ("cli-hard-cutoff-1", lambda d, c: _cli(c, "run", "{src}", "--keep", "0.5", "--score", "score", "--hard-cutoff", "1", "--out", "{tmp}/o"), Raises(SystemExit, r"hard_cutoff")),
    ("cli-embed-numeric-column", lambda d, c: _cli(c, "embed", "{src}", "--column", "score", "--out", "{tmp}/o"), Raises(SystemExit, r"column 'score' holds")),
    ("cli-select-missing-embedding", lambda d, c: _cli(c, "select", "{src}", "--score", "score", "--embedding-column", "emb", "--out", "{tmp}/o"), Raises(SystemExit, r"'emb' not found")),
    ("cli-out-is-a-file", lambda d, c: _cli(c, "select", "{src}", "--score", "score", "--method", "topk", "--out", "{file}"), Raises(SystemExit, r"is a file")),
    ("cli-misspelled-label-column", lambda d, c: _cli(c, "run", "{src}", "--keep", "0.5", "--label-column", "lbl", "--out", "{tmp}/o"), Raises(SystemExit, r"'lbl' not found")),
    ("cli-dynamics-score-text-labels", lambda d, c: _cli(c, "run", "{src}", "--keep", "0.5", "--score", "aum", "--label-column", "text", "--epochs", "2", "--out", "{tmp}/o"), Raises(SystemExit, r"label column 'text'")),
]

IDS = [case[0] for case in CASES]
assert len(IDS) == len(set(IDS)), "case ids must be unique"

_RESULTS: dict[str, bool] = {}


@pytest.fixture(scope="module")
def data():
    return _build()


@pytest.fixture(scope="module")
def ctx(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    src = tmp / "src"
    data["base"].save_to_disk(str(src))
    (tmp / "empty.csv").write_text("text,label\n")
    (tmp / "data.xyz").write_text("x")
    (tmp / "a_file").write_text("keep me")
    (tmp / "nonempty").mkdir()
    (tmp / "nonempty" / "mine.txt").write_text("mine")
    return {"tmp": str(tmp), "src": str(src), "file": str(tmp / "a_file"), "nonempty": str(tmp / "nonempty")}


def _snapshot(data: dict) -> dict:
    return {name: (ds._fingerprint, ds.column_names, ds.to_dict()) for name, ds in data.items()}


@pytest.fixture(scope="module")
def before(data):
    return _snapshot(data)


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case[4])] if len(case) > 3 and case[3] == XFAIL else []
        yield pytest.param(case, id=case[0], marks=marks)


def _same_nan(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN != NaN; the repr of both snapshots is compared instead


@pytest.mark.parametrize("case", _params())
def test_hostile_case(case, data, ctx, before, capsys):
    case_id, call, expected = case[:3]
    _RESULTS[case_id] = False
    if isinstance(expected, Raises):
        with pytest.raises(BaseException) as caught:
            call(data, ctx)
        err = caught.value
        if expected.error is SystemExit:
            # the CLI: a library error exits with status 2 (argparse too) and says why on stderr
            code = err.code if isinstance(err, SystemExit) else None
            message = capsys.readouterr().err
            if code is None and not isinstance(err, SystemExit):
                raise AssertionError(f"{case_id}: expected exit status 2, got {type(err).__name__}: {err}") from err
            assert code == 2, (code, message)
        else:
            assert isinstance(err, expected.error), f"{case_id}: expected {expected.error.__name__}, got {type(err).__name__}: {err}"
            message = str(err)
        assert isinstance(err, (D2PruneError, ValueError, TypeError, OSError, SystemExit)), type(err)
        assert not isinstance(err, (KeyError, IndexError)) and (not isinstance(err, AttributeError) or isinstance(err, D2PruneError))
        assert re.search(expected.pattern, message), f"{case_id}: {message!r} does not match {expected.pattern!r}"
    else:
        result = call(data, ctx)
        if expected.check is not None:
            expected.check(result)
    after = _snapshot(data)
    for name in data:
        assert _same_nan(after[name], before[name]), f"{case_id} changed the input dataset '{name}'"
    _RESULTS[case_id] = True


# ----------------------------------------------------------------------------- properties

_FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@st.composite
def _garbage_dataset(draw):
    n = draw(st.integers(0, 7))
    d = draw(st.integers(1, 3))
    floats = st.one_of(st.floats(-3, 3, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
    X = np.array(draw(st.lists(st.lists(floats, min_size=d, max_size=d), min_size=n, max_size=n)), np.float32).reshape(n, d)
    s = np.array(draw(st.lists(floats, min_size=n, max_size=n)), np.float32)
    return datasets.Dataset.from_dict({"embedding": X, "score": s, "label": np.arange(n) % 2},
                                      features=datasets.Features({"embedding": _vec(d), "score": F32, "label": datasets.Value("int64")}))


@_FAST
@given(ds=_garbage_dataset(), method=st.sampled_from(METHODS), k=st.integers(-1, 9),
       budget=st.one_of(st.none(), st.integers(-1, 9)), by=st.sampled_from([None, "label"]))
def test_property_coreset_never_fails_untyped(ds, method, k, budget, by):
    """Any (n, d, NaN/inf, k, budget) combination gives a valid ranking or a typed, named error."""
    before = (ds._fingerprint, repr(ds.to_dict()))
    try:
        out = ds.d2.coreset(score="score", method=method, k=k, budget=budget, by=by if method == "d2" else None)
    except D2PruneError as err:
        assert isinstance(err, (ValueError, TypeError)) and str(err)
    else:
        ranks = np.asarray(out[f"{method}_rank"])
        kept = np.sort(ranks[ranks >= 0])
        np.testing.assert_array_equal(kept, np.arange(len(kept)))
    assert (ds._fingerprint, repr(ds.to_dict())) == before


@_FAST
@given(keep=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 12), st.text(max_size=3), st.none()))
def test_property_prune_keep_is_exact_or_refused(data, keep):
    ranked = data["ranked"]
    n = len(ranked)
    try:
        small = ranked.d2.prune(keep=keep, method="topk")
    except InvalidParameterError as err:
        assert "keep" in str(err)
    else:
        expected = keep if isinstance(keep, int) else max(1, int(np.floor(keep * n + 0.5)))
        assert len(small) == expected


def test_zz_case_count(capsys):
    """Print the table's count (run with -s to see it); every non-xfail case must have passed."""
    expected_fail = {case[0] for case in CASES if len(case) > 3 and case[3] == XFAIL}
    passed = sum(_RESULTS.get(case_id, False) for case_id in IDS)
    line = (f"hostile-input cases: {len(IDS)} tried, {passed} pass, "
            f"{len(expected_fail)} known failures (xfail: {', '.join(sorted(expected_fail))})")
    with capsys.disabled():
        print("\n" + line)
    if len(_RESULTS) == len(IDS):  # the whole table ran in this session
        assert passed == len(IDS) - len(expected_fail)
