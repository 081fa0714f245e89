"""Dataset cards: YAML the Hub accepts (checked offline), numbers equal to the data's, unknowns said."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import datasets
import hf_d2prune  # noqa: F401  (registers ds.d2)
from hf_d2prune.card import (
    BIBTEX,
    HUB_LICENSES,
    SIZE_CATEGORIES,
    build_card,
    check_card_metadata,
    read_card_provenance,
)
from hf_d2prune.errors import InvalidParameterError

N_ROWS = 300


@functools.lru_cache(maxsize=1)
def ranked_sms() -> datasets.Dataset:
    """300 real SMS messages, embedded with MiniLM, scored and ranked with D2 (shared with test_hub)."""
    from hf_d2prune.builtin import load_builtin

    ds = load_builtin("sms_spam").select(range(N_ROWS))
    ds = ds.d2.embed("text").d2.score("prototype_distance", label="label")
    return ds.d2.coreset(score="prototype_distance", method="d2", k=10)


@pytest.fixture(scope="module")
def ranked():
    return ranked_sms()


@pytest.fixture(scope="module")
def small(ranked):
    return ranked.d2.prune(keep=0.3)


def _yaml(card):
    return card.data.to_dict()


def _counts(ds, column="label"):
    names = ds.features[column].names
    values = np.asarray(ds[column])
    return {name: int((values == i).sum()) for i, name in enumerate(names)}


def test_card_metadata_passes_offline_checks_and_numbers_match(ranked, small, tmp_path):
    from huggingface_hub import DatasetCard, DatasetCardData

    card = build_card(small, full=ranked, source="sms_spam", license="cc-by-4.0", plots_dir=tmp_path / "plots")
    meta = check_card_metadata(card)

    # the YAML round-trips through the Hub client's own parser and dataclass
    reparsed = DatasetCard(str(card))
    assert isinstance(reparsed.data, DatasetCardData)
    assert reparsed.data.license == "cc-by-4.0" and meta["license"] in HUB_LICENSES
    assert meta["size_categories"] == ["n<1K"] and meta["size_categories"][0] in SIZE_CATEGORIES
    assert meta["task_categories"] == ["text-classification"]
    assert {"data-pruning", "coreset", "d2-pruning"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]

    # numbers: computed here from the datasets, independently of the card code
    kept, source = _counts(small), _counts(ranked)
    block = meta["hf_d2prune"]
    assert block["rows"] == len(small) == 90 and block["source_rows"] == N_ROWS
    assert block["kept_per_class"] == kept and block["source_per_class"] == source
    text = card.text
    assert f"A coreset of **{len(small)}** of {N_ROWS} rows (30.0%)" in text
    for name in kept:
        assert f"| {name} | {source[name]} | {kept[name]} | {100 * kept[name] / source[name]:.1f}% |" in text
    ranks = np.asarray(ranked["d2_rank"])
    labels = np.asarray(ranked["label"])
    for keep in (0.1, 0.2, 0.3, 0.5, 0.7):
        rows = int(np.floor(keep * N_ROWS + 0.5))
        chosen = (ranks >= 0) & (ranks < rows)
        per_class = " | ".join(str(int((labels[chosen] == i).sum())) for i in range(2))
        assert f"| `d2_rank` | {100 * keep:g}% | {rows} | {per_class} |" in text

    # every recorded parameter of every step appears in the card, with its value
    for step in small.d2.provenance:
        for key, value in step.items():
            if key == "step" or (key == "output" and value is None):
                continue
            shown = "— (not set)" if value is None else f"`{value:g}`" if isinstance(value, float) else f"`{value}`"
            assert f"| `{key}` | {shown} |" in text, (step["step"], key)
    assert "sentence-transformers/all-MiniLM-L6-v2" in text and "no revision pinned" in text
    # the YAML leaves out what was not set (None)
    assert read_card_provenance(card) == [{k: v for k, v in step.items() if v is not None} for step in small.d2.provenance]
    assert "revision" in small.d2.provenance[0] and small.d2.provenance[0]["revision"] is None


def test_plots_are_pngs_linked_from_the_card(ranked, small, tmp_path):
    card = build_card(small, full=ranked, license="mit", plots_dir=tmp_path / "plots")
    for name in ("score_kept_vs_dropped.png", "retention_per_class.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
        assert f"](plots/{name})" in card.text


def test_keep_builds_the_same_card_as_full(ranked, small):
    a = build_card(small, full=ranked, license="mit", source="sms_spam")
    b = build_card(ranked, keep=0.3, license="mit", source="sms_spam")
    assert _yaml(a)["hf_d2prune"]["kept_per_class"] == _yaml(b)["hf_d2prune"]["kept_per_class"]
    assert a.text == b.text


def test_without_full_the_card_says_what_it_cannot_know(small, tmp_path):
    card = build_card(small, license="mit", plots_dir=tmp_path / "plots")
    check_card_metadata(card)
    assert "The dropped rows" in card.text and "The source dataset id" in card.text
    assert "![" not in card.text and not (tmp_path / "plots").exists()
    assert "source_per_class" not in _yaml(card)["hf_d2prune"]
    assert "| ham | unknown |" in card.text


def test_license_is_inherited_or_required(small):
    with pytest.raises(InvalidParameterError, match="license="):
        build_card(small)  # sms_spam's package copy records no license
    inherited = datasets.Dataset.from_dict({"text": ["a", "b"]}, info=datasets.DatasetInfo(license="cc-by-4.0"))
    assert _yaml(build_card(inherited))["license"] == "cc-by-4.0"
    with pytest.raises(InvalidParameterError, match="not a license id the Hub accepts"):
        build_card(small, license="Apache License, v2")


def test_plain_dataset_without_provenance_gets_an_honest_card():
    ds = datasets.Dataset.from_dict(
        {"text": ["hello", "free prize now", "see you"], "label": [0, 1, 0]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["ham", "spam"])}),
    )
    card = build_card(ds, license="mit")
    meta = check_card_metadata(card)
    assert "no `hf_d2prune` provenance" in card.text
    assert "how these rows were chosen is unknown" in card.text
    assert "d2-pruning" not in meta["tags"] and meta["hf_d2prune"]["provenance"] == []
    assert meta["hf_d2prune"]["kept_per_class"] == {"ham": 2, "spam": 1}
    with pytest.raises(InvalidParameterError, match="no prune record"):
        build_card(ds, full=ds, license="mit")


def test_full_must_be_the_dataset_that_was_pruned(ranked, small):
    with pytest.raises(InvalidParameterError, match="rows"):
        build_card(small, full=ranked.select(range(200)), license="mit")
    with pytest.raises(InvalidParameterError, match="not both"):
        build_card(ranked, full=ranked, keep=0.3, license="mit")


def test_reproduce_snippet_is_valid_python_with_every_selection_parameter(ranked, small):
    card = build_card(small, full=ranked, license="mit", source="ucirvine/sms_spam", source_revision="abc123")
    code = re.search(r"```python\n(.*?)```", card.text, re.DOTALL).group(1)
    compile(code, "<card>", "exec")
    assert "datasets.load_dataset('ucirvine/sms_spam', split='train', revision='abc123')" in code
    coreset = next(s for s in small.d2.provenance if s["step"] == "coreset")
    line = next(l for l in code.splitlines() if ".d2.coreset(" in l)
    for key in ("k", "gamma_forward", "gamma_reverse", "graph", "hard_cutoff", "score"):
        assert f"{key}={coreset[key]!r}" in line
    assert "small = ds.d2.prune(keep=0.3, rank_column='d2_rank')" in code
    assert _yaml(card)["source_datasets"] == ["ucirvine/sms_spam"]


def test_citations_follow_the_steps(ranked, small):
    card = build_card(small, full=ranked, license="mit")
    bib = re.search(r"```bibtex\n(.*?)```", card.text, re.DOTALL).group(1)
    keys = re.findall(r"@\w+\{(\w+),", bib)
    assert keys == ["maharana2024d2", "sorscher2022beyond"]
    assert "Schmidt" not in bib

    # a score measured on part of the rows and extrapolated: the extrapolation paper is cited
    measured = np.zeros(N_ROWS, dtype=bool)
    measured[:30] = True
    partial = ranked.add_column("prototype_distance_measured", measured)
    card = build_card(partial, keep=0.3, license="mit")
    assert "Measured on 30 of 300 rows (10.0%" in card.text
    assert "@article{schmidt2025effective," in card.text


def test_bibtex_entries_are_well_formed():
    for key, entry in BIBTEX.items():
        assert entry.startswith("@") and f"{{{key}," in entry
        assert entry.count("{") == entry.count("}"), key
    dois = {k: re.findall(r"doi\s*=\s*\{([^}]*)\}", e) for k, e in BIBTEX.items()}
    # only DOIs checked against the publisher's page (ACL Anthology) are written
    assert {k: v for k, v in dois.items() if v} == {"swayamdipta2020dataset": ["10.18653/v1/2020.emnlp-main.746"]}


def test_size_categories_match_datasets_resources():
    import json
    from importlib import resources

    listed = json.loads(resources.files("datasets.utils.resources").joinpath("size_categories.json").read_text())
    assert [c for c in listed if c != "unknown"] == list(SIZE_CATEGORIES)


def test_template_is_found_through_the_package():
    from hf_d2prune.card import _template_path

    path = _template_path()
    assert path.is_file() and "{{ card_data }}" in path.read_text()
