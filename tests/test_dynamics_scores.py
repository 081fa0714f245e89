"""Online accumulators vs slow references computed from the full recorded history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_d2prune.dynamics import KNOWN_SCORES, DynamicsRecorder, required_epochs
from hf_d2prune.errors import InvalidParameterError, InvalidValuesError

torch.set_num_threads(1)  # tiny models on a shared 2-core machine: threads only contend

ALL = tuple(KNOWN_SCORES)


# ---------------------------------------------------------------- slow, obviously-correct references
def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def reference_scores(history, n_rows, *, du_window=10, tdds_window=10, tdds_decay=0.9, el2n_epochs=10,
                     grand_epochs=1, grand_bias=True):
    """history[row] = list of (epoch, logits (C,), label, features or None) in presentation order."""
    out = {name: np.full(n_rows, np.nan) for name in ALL}
    for row, events in history.items():
        if not events:
            continue
        epochs = [e for e, _, _, _ in events]
        Z = [np.asarray(z, dtype=np.float64) for _, z, _, _ in events]
        y = events[0][2]
        P = [softmax(z) for z in Z]
        T = len(Z)
        correct = [int(np.argmax(z) == y) for z in Z]
        events_count = sum(1 for t in range(1, T) if correct[t - 1] == 1 and correct[t] == 0)
        out["forgetting"][row] = events_count if any(correct) else T
        out["aum"][row] = -np.mean([z[y] - max(z[c] for c in range(len(z)) if c != y) for z in Z])

        def onehot_err(p):
            target = np.zeros_like(p)
            target[y] = 1
            return np.linalg.norm(p - target)

        def in_epochs(epoch, option):
            return epoch < option if isinstance(option, int) else epoch in option

        chosen = [t for t in range(T) if in_epochs(epochs[t], el2n_epochs)]
        if chosen:
            out["el2n"][row] = np.mean([onehot_err(P[t]) for t in chosen])
        chosen = [t for t in range(T) if in_epochs(epochs[t], grand_epochs)]
        if chosen and events[0][3] is not None:
            out["grand"][row] = np.mean([onehot_err(P[t]) * np.sqrt(np.sum(np.square(events[t][3])) + grand_bias)
                                         for t in chosen])
        p = P[-1]
        out["entropy"][row] = -np.sum(p * np.log(p))
        out["least_confidence"][row] = 1 - p.max()
        top = np.sort(p)[::-1]
        out["margin"][row] = 1 - (top[0] - top[1])
        out["loss"][row] = -np.log(p[y])
        py = np.array([q[y] for q in P])
        out["confidence"][row] = 1 - py.mean()
        out["variability"][row] = py.std()
        out["correctness"][row] = 1 - np.mean(correct)
        J = du_window
        if T - J >= 1:  # He et al.: T − J windows of J epochs, unbiased std
            out["dynamic_uncertainty"][row] = np.mean([np.std(py[k:k + J], ddof=1) for k in range(T - J)])
        W = tdds_window
        if T >= W:  # the TDDS authors' importance_evaluation.py, for one row
            total = 0.0
            for k in range(T - W + 1):
                kd = [np.abs(P[j + 1] * (np.log(P[j + 1] + 1e-8) - np.log(P[j] + 1e-8))).sum()
                      for j in range(k, k + W - 1)]
                kd = np.array(kd)
                v = np.linalg.norm(kd - kd.sum() / (W - 1))
                total += v * tdds_decay * (1 - tdds_decay) ** (T - W - k)
            out["tdds"][row] = total
    return out


def synthetic_history(n_rows=60, num_classes=5, epochs=14, seed=0, skip=0.1, feature_dim=4):
    """Random logits that drift over epochs; a random batch order per epoch; some rows skipped."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n_rows)
    base = rng.normal(size=(n_rows, num_classes))
    batches = []
    for epoch in range(epochs):
        order = rng.permutation(n_rows)
        order = order[rng.random(n_rows) > skip] if epoch % 3 == 2 else order  # rows skipped in some epochs
        for start in range(0, len(order), 16):
            ids = order[start:start + 16]
            logits = base[ids] * (1 + epoch / 3) + rng.normal(scale=1.5, size=(len(ids), num_classes))
            feats = rng.normal(size=(len(ids), feature_dim))
            batches.append((ids, logits, labels[ids], epoch, feats))
    return batches, labels


def history_of(batches, n_rows, per_row_epoch=False):
    """Each row's presentations; with ``per_row_epoch`` a batch's epoch is an array, one per row."""
    history = {row: [] for row in range(n_rows)}
    for ids, logits, labels, epoch, feats in batches:
        for i, row in enumerate(ids):
            history[int(row)].append((int(epoch[i]) if per_row_epoch else epoch, logits[i], int(labels[i]),
                                      None if feats is None else feats[i]))
    return history


@pytest.mark.parametrize("options", [
    {},
    {"du_window": 3, "tdds_window": 4, "tdds_decay": 0.5, "el2n_epochs": [0, 5], "grand_epochs": 3},
    {"du_window": 2, "tdds_window": 2, "el2n_epochs": 1, "grand_bias": False},
])
# 100: flushes mid-epoch and when the inputs switch between numpy and torch; 7: batches larger
# than the staging buffer, folded directly; 400 (numpy only): each flush folds several epochs.
@pytest.mark.parametrize("flush_rows, mixed", [(100, True), (7, True), (400, False)])
def test_every_score_matches_reference_on_synthetic_history(options, flush_rows, mixed):
    n_rows, num_classes = 60, 5
    batches, _ = synthetic_history(n_rows, num_classes)
    rec = DynamicsRecorder(n_rows, num_classes, ALL, flush_rows=flush_rows, **options)
    as_torch = [mixed and epoch % 2 == 1 for _, _, _, epoch, _ in batches]
    for (ids, logits, labels, epoch, feats), torch_in in zip(batches, as_torch):
        rec.update(ids, torch.as_tensor(logits, dtype=torch.float32) if torch_in else logits, labels, epoch, feats)
    got = rec.results()
    # float32 logits fed as torch: compare against what the recorder saw
    seen = [(ids, logits.astype(np.float32).astype(np.float64) if torch_in else logits, labels, epoch, feats)
            for (ids, logits, labels, epoch, feats), torch_in in zip(batches, as_torch)]
    want = reference_scores(history_of(seen, n_rows), n_rows, **options)
    for name in ALL:
        assert got[name].dtype == np.float32 and got[name].shape == (n_rows,)
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(want[name]), err_msg=name)
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("as_torch", [False, True])
def test_one_fold_of_a_chunk_spanning_every_epoch_matches_reference(as_torch):
    """fold() with one epoch per row: 14 epochs in one chunk, rows repeated across them, margins and
    probabilities derived once for the chunk and folded epoch by epoch; float32 tensors fold in float32."""
    n_rows, num_classes = 60, 5
    batches, _ = synthetic_history(n_rows, num_classes)
    options = {"du_window": 3, "tdds_window": 4, "el2n_epochs": [0, 5], "grand_epochs": 3}
    ids = np.concatenate([b[0] for b in batches])
    logits = np.concatenate([b[1] for b in batches])
    if as_torch:
        logits = logits.astype(np.float32).astype(np.float64)  # what the recorder sees
    labels = np.concatenate([b[2] for b in batches])
    epochs = np.concatenate([np.full(len(b[0]), b[3]) for b in batches])
    feats = np.concatenate([b[4] for b in batches])
    rec = DynamicsRecorder(n_rows, num_classes, ALL, **options)
    rec.fold(ids, torch.as_tensor(logits, dtype=torch.float32) if as_torch else logits, labels, epochs, feats)
    got = rec.results()
    want = reference_scores(history_of([(ids, logits, labels, epochs, feats)], n_rows, per_row_epoch=True),
                            n_rows, **options)
    for name in ALL:
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(want[name]), err_msg=name)
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6, equal_nan=True, err_msg=name)
    with pytest.raises(InvalidValuesError, match="non-decreasing"):
        rec.fold([0, 1], np.zeros((2, num_classes)), [0, 0], [20, 19], np.zeros((2, 4)))
    with pytest.raises(InvalidValuesError, match="one epoch per row"):
        rec.fold([0, 1], np.zeros((2, num_classes)), [0, 0], [20, 21, 22], np.zeros((2, 4)))


def test_final_prediction_scores_of_float32_logits_keep_float64_precision():
    """Entropy and loss of a confident row are ~1e-12: float32 arithmetic cannot resolve 1 + 1e-12,
    so they are computed in float64 from the float32 logits (everything else folds in float32)."""
    logits = torch.tensor([[30.0, 0.0, 1.0], [0.0, 28.0, 0.0], [0.2, 0.1, 0.0]], dtype=torch.float32)
    labels = np.array([0, 1, 2])
    rec = DynamicsRecorder(3, 3, ["entropy", "loss", "el2n", "aum"])
    rec.update([0, 1, 2], logits, labels, 0)
    got = rec.results()
    for i, z in enumerate(logits.double().numpy()):
        p = softmax(z)
        np.testing.assert_allclose(got["entropy"][i], -(p * np.log(p)).sum(), rtol=1e-5)
        np.testing.assert_allclose(got["loss"][i], np.log(np.exp(z - z.max()).sum()) - (z[labels[i]] - z.max()), rtol=1e-5)
    assert 0 < got["entropy"][0] < 1e-10 and 0 < got["loss"][0] < 1e-11


def test_final_epoch_declared_skips_earlier_final_predictions_with_the_same_scores():
    """set_final_epoch(): the final-prediction scores skip the folds of earlier epochs; every score is unchanged."""
    n_rows, num_classes = 40, 4
    rng = np.random.default_rng(3)
    labels = rng.integers(0, num_classes, n_rows)
    scores = ["entropy", "least_confidence", "margin", "loss", "aum", "forgetting"]
    plain, declared = DynamicsRecorder(n_rows, num_classes, scores), DynamicsRecorder(n_rows, num_classes, scores)
    declared.check_epoch_rows(np.arange(n_rows), labels)
    declared.set_final_epoch(3)
    for epoch in range(4):
        order = rng.permutation(n_rows)
        logits = rng.normal(size=(n_rows, num_classes)) * (epoch + 1)
        plain.fold(order, logits, labels[order], epoch)
        with declared.prevalidated():
            declared.fold(order, logits, labels[order], epoch)
    ours, theirs = declared.results(), plain.results()
    for name in scores:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_default_buffer_holds_4_mib_of_logits_and_at_least_8192_rows():
    assert DynamicsRecorder(10, 10).flush_rows == (4 << 20) // 40
    assert DynamicsRecorder(10, 1000).flush_rows == 8192
    assert DynamicsRecorder(10, 10, flush_rows=5).flush_rows == 5


def test_rows_never_seen_are_nan_and_windowed_scores_need_enough_presentations():
    rec = DynamicsRecorder(3, 2, ["aum", "dynamic_uncertainty", "tdds"], du_window=2, tdds_window=3)
    for epoch in range(3):
        rec.update([0, 1], [[1.0, 0.0], [0.0, float(epoch)]], [0, 1], epoch)
    rec.update([0], [[2.0, 0.0]], [0], 3)
    got = rec.results()
    assert np.isnan(got["aum"][2])
    # row 1: 3 presentations → DU has 3 − 2 = 1 window, TDDS exactly 1 window; row 0: 4 presentations
    assert np.isfinite(got["dynamic_uncertainty"][:2]).all() and np.isfinite(got["tdds"][:2]).all()
    rec2 = DynamicsRecorder(2, 2, ["dynamic_uncertainty", "tdds"], du_window=2, tdds_window=3)
    for epoch in range(2):
        rec2.update([0, 1], [[1.0, 0.0], [0.0, 1.0]], [0, 1], epoch)
    assert np.isnan(rec2.results()["dynamic_uncertainty"]).all()  # 2 presentations, J = 2: 0 windows
    assert np.isnan(rec2.results()["tdds"]).all()


def test_forgetting_counts_events_and_never_learned_rows_rank_hardest():
    rec = DynamicsRecorder(3, 2, ["forgetting"])
    right, wrong = [2.0, 0.0], [0.0, 2.0]
    pattern = {0: [right, wrong, right, wrong], 1: [right] * 4, 2: [wrong] * 4}
    for epoch in range(4):
        rec.update([0, 1, 2], [pattern[r][epoch] for r in range(3)], [0, 0, 0], epoch)
    np.testing.assert_array_equal(rec.results()["forgetting"], [2, 0, 4])


def test_directions_are_higher_is_harder():
    # row 0 confidently right, row 1 confidently wrong (a flipped label)
    rec = DynamicsRecorder(2, 3, ALL, du_window=2, tdds_window=2, grand_epochs=3)
    for epoch in range(3):
        rec.update([0, 1], [[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]], [0, 1], epoch, features=np.ones((2, 2)))
    got = rec.results()
    for name in ("forgetting", "aum", "el2n", "grand", "loss", "confidence", "correctness"):
        assert got[name][1] > got[name][0], name


def test_grand_equals_autograd_last_layer_gradient_norm():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    h = torch.randn(10, 6)
    y = torch.randint(0, 4, (10,))
    norms = []
    for i in range(10):
        layer.zero_grad()
        torch.nn.functional.cross_entropy(layer(h[i:i + 1]), y[i:i + 1]).backward()
        norms.append(torch.sqrt(layer.weight.grad.square().sum() + layer.bias.grad.square().sum()).item())
    rec = DynamicsRecorder(10, 4, ["grand"])
    rec.update(torch.arange(10), layer(h), y, 0, features=h)
    np.testing.assert_allclose(rec.results()["grand"], norms, rtol=1e-5)
    # (B, 1) norms, as numpy, give the same: the features are reduced to their norms as they come
    from_norms = DynamicsRecorder(10, 4, ["grand"])
    from_norms.update(np.arange(10), layer(h).detach().numpy(), y.numpy(), 0,
                      features=h.norm(dim=1, keepdim=True).numpy())
    np.testing.assert_allclose(from_norms.results()["grand"], norms, rtol=1e-5)


def test_state_is_per_row_and_independent_of_epochs():
    small = DynamicsRecorder(100, 10, ALL).state_bytes_per_row()
    assert small == DynamicsRecorder(1000, 10, ALL).state_bytes_per_row()
    tdds = next(v for k, v in small.items() if k == "tdds")
    assert tdds == 10 * 4 + 9 * 4 + 8 + 4  # previous p, W − 1 step terms, S, count
    assert next(v for k, v in small.items() if k == "dynamic_uncertainty") == 10 * 4 + 8 + 8 + 4


def test_required_epochs_and_errors():
    assert required_epochs(["aum"]) == 1
    assert required_epochs(["aum", "dynamic_uncertainty"]) == 11
    assert required_epochs(["tdds"], {"tdds_window": 5}) == 5
    with pytest.raises(InvalidParameterError, match="unknown score 'aumm'; known scores: forgetting, aum"):
        DynamicsRecorder(5, 2, ["aumm"])
    with pytest.raises(InvalidParameterError, match="unknown score option 'du_windw'"):
        DynamicsRecorder(5, 2, ["dynamic_uncertainty"], du_windw=3)
    with pytest.raises(InvalidParameterError, match="du_window must be an integer >= 2"):
        DynamicsRecorder(5, 2, ["dynamic_uncertainty"], du_window=1)
    rec = DynamicsRecorder(5, 2, ["aum"], flush_rows=1)  # check each batch as it comes
    rec.update([0, 1], [[0.0, 1.0], [1.0, 0.0]], [0, 1], 0)
    with pytest.raises(InvalidValuesError, match="presented twice in epoch 0"):
        rec.update([1], [[0.0, 1.0]], [1], 0)
    with pytest.raises(InvalidValuesError, match=r"labels must lie in \[0, 2\)"):
        rec.update([2], [[0.0, 1.0]], [2], 1)
    with pytest.raises(InvalidValuesError, match="logits are NaN"):
        rec.update([3], [[np.nan, 1.0]], [1], 1)
    buffered = DynamicsRecorder(5, 2, ["aum"])  # checked when the buffer is folded in
    buffered.update([0, 1], [[0.0, 1.0], [1.0, 0.0]], [0, 1], 0)
    buffered.update([1], [[0.0, 1.0]], [1], 0)
    with pytest.raises(InvalidValuesError, match=r"1 row \(first: 1\) presented twice in epoch 0"):
        buffered.results()
    with pytest.raises(InvalidParameterError, match="needs the penultimate features"):
        DynamicsRecorder(5, 2, ["grand"]).update([0], [[0.0, 1.0]], [1], 0)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_diverged_logits_name_their_rows_without_numpy_warnings():
    """+inf and −inf in one fold sum to NaN: the error names the row; no RuntimeWarning escapes."""
    rec = DynamicsRecorder(4, 2, ["aum"])
    rec.update([0, 1, 2], [[0.0, 1e308], [1e308, 0.0], [np.inf, -np.inf]], [0, 1, 1], 0)
    with pytest.raises(InvalidValuesError, match=r"logits are NaN or inf for 1 row \(first: 2\) at epoch 0"):
        rec.results()
