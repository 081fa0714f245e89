"""The transformers Trainer integration against what real runs do: checkpoints and resumes, the
mistakes that must fail before training, tuple outputs, prediction, and row ids that must match."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_d2prune.dynamics import DynamicsCallback, DynamicsRecorder, DynamicsTrainer, add_row_ids, train_dynamics
from hf_d2prune.dynamics.trainer import DYNAMICS_FILE
from hf_d2prune.errors import InvalidParameterError, InvalidValuesError

from test_dynamics_training import Head, digits_dataset
from transformers_compat import emulate_sampling_strategy

torch.set_num_threads(1)
emulate_sampling_strategy()  # transformers 4.x: train_sampling_strategy= below (see the module)

SCORES = ["forgetting", "aum", "el2n", "entropy", "confidence", "variability", "tdds"]


@pytest.fixture(scope="module")
def digits640():
    return digits_dataset(flip_fraction=0.1)[0].select(range(640))


def arguments(folder, **overrides):
    """Deterministic CPU runs: constant lr, no clipping, no weight decay, sequential order."""
    from transformers import TrainingArguments

    options = dict(output_dir=str(folder), num_train_epochs=4, per_device_train_batch_size=32, learning_rate=2e-3,
                   lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, optim="adamw_torch",
                   train_sampling_strategy="sequential", report_to=[], save_strategy="no", logging_strategy="no",
                   use_cpu=True, seed=0, disable_tqdm=True)
    options.update(overrides)
    return TrainingArguments(**options)


class TupleHead(Head):
    """Head returning a (loss, logits) tuple, as transformers models do with return_dict=False."""

    def forward(self, pixels, labels=None):
        out = super().forward(pixels, labels)
        return (out["loss"], out["logits"]) if labels is not None else (out["logits"],)


@pytest.mark.parametrize("sampling, save", [("sequential", {"save_strategy": "steps", "save_steps": 30}),
                                            ("random", {"save_strategy": "epoch"})],
                         ids=["mid-epoch checkpoint", "shuffled, epoch checkpoint"])
def test_a_run_resumed_from_a_checkpoint_scores_as_the_uninterrupted_run(digits640, tmp_path, sampling, save):
    """Every checkpoint carries the recorder; a new Trainer resuming from one (model, optimizer, data
    position and the dynamics so far) ends with the scores of the run that was never interrupted."""
    import os

    train = add_row_ids(digits640)
    args = arguments(tmp_path, train_sampling_strategy=sampling, **save)
    whole = DynamicsCallback(scores=SCORES, tdds_window=2)
    DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=whole).train()
    checkpoints = sorted((p for p in os.listdir(tmp_path) if p.startswith("checkpoint-")), key=lambda p: int(p.split("-")[1]))
    assert all(os.path.isfile(tmp_path / p / DYNAMICS_FILE) for p in checkpoints)
    resume_from = str(tmp_path / checkpoints[0])  # step 30 of 80: mid-epoch 1; or the end of epoch 0

    resumed = DynamicsCallback(scores=SCORES, tdds_window=2)
    DynamicsTrainer(model=Head(seed=5), args=args, train_dataset=train, dynamics=resumed).train(
        resume_from_checkpoint=resume_from)
    want, got = whole.results(), resumed.results()
    for name in SCORES:
        assert np.isfinite(got[name]).all(), name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_checkpoints_dynamics_load_as_a_recorder_with_the_scores_so_far(digits640, tmp_path):
    """d2_dynamics.npz is a recorder archive: loaded alone, it scores the epochs before the checkpoint
    as a run that stopped there; the epoch it stopped in rides along for resuming."""
    train = add_row_ids(digits640)
    scores = ["forgetting", "aum", "el2n", "entropy"]
    DynamicsTrainer(model=Head(), args=arguments(tmp_path / "long", save_strategy="epoch"), train_dataset=train,
                    dynamics=DynamicsCallback(scores=scores)).train()
    short = DynamicsCallback(scores=scores)
    DynamicsTrainer(model=Head(), args=arguments(tmp_path / "short", num_train_epochs=2), train_dataset=train,
                    dynamics=short).train()
    path = tmp_path / "long" / "checkpoint-40" / DYNAMICS_FILE  # 20 steps an epoch: the end of epoch 1
    loaded = DynamicsRecorder.load(path)
    assert {k: int(v) for k, v in DynamicsRecorder.read_extra(path).items()} == {"epoch": 1, "rows_this_epoch": 640}
    got, want = loaded.results(), short.results()
    for name in scores:
        assert np.isfinite(got[name]).all(), name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_resuming_from_a_plain_recorder_file_is_refused(digits640, tmp_path):
    train = add_row_ids(digits640)
    DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=1, save_strategy="epoch"), train_dataset=train,
                    dynamics=DynamicsCallback(scores=["aum"])).train()
    path = tmp_path / "checkpoint-20" / DYNAMICS_FILE
    DynamicsRecorder.load(path).save(path)  # the state without the epoch it stopped in
    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=2), train_dataset=train,
                              dynamics=DynamicsCallback(scores=["aum"]))
    with pytest.raises(InvalidValuesError, match="not the epoch it stopped in"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-20"))


def test_resuming_from_a_checkpoint_without_dynamics_fails_before_training(digits640, tmp_path):
    from transformers import Trainer

    train = add_row_ids(digits640)
    plain = Head()
    Trainer(model=plain, args=arguments(tmp_path, num_train_epochs=1, save_strategy="epoch"), train_dataset=train).train()
    model = Head()
    trainer = DynamicsTrainer(model=model, args=arguments(tmp_path, num_train_epochs=2), train_dataset=train,
                              dynamics=DynamicsCallback(scores=["aum"]))
    with pytest.raises(InvalidValuesError, match=f"holds no {DYNAMICS_FILE}"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 20  # the checkpoint's step: not one step further


def test_a_second_train_call_records_a_fresh_run(digits640, tmp_path):
    """train() again starts a new run: its scores replace the first run's (no 'presented twice')."""
    train = add_row_ids(digits640)
    dynamics = DynamicsCallback(scores=["aum", "forgetting"])
    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=2), train_dataset=train,
                              dynamics=dynamics)
    trainer.train()
    first = dynamics.results()["aum"]
    trainer.train()
    second = dynamics.results()["aum"]
    assert np.isfinite(second).all() and not np.allclose(first, second)  # the model kept learning: new margins
    assert dynamics.recorder.families[0].seen.max() == 2  # forgetting: 2 presentations, not 4


def test_recorder_state_round_trips_through_a_file_mid_run(tmp_path):
    rng = np.random.default_rng(0)
    n, classes = 50, 4
    options = dict(du_window=3, tdds_window=3, el2n_epochs=3, grand_epochs=2)
    names = ["forgetting", "aum", "el2n", "grand", "entropy", "margin", "confidence", "dynamic_uncertainty", "tdds"]
    whole = DynamicsRecorder(n, classes, names, **options)
    part = DynamicsRecorder(n, classes, names, flush_rows=20, **options)
    for epoch in range(6):
        order, logits = rng.permutation(n), rng.normal(size=(n, classes)) * 2
        norms = rng.uniform(1, 3, (n, 1))
        for start in range(0, n, 16):
            ids = order[start:start + 16]
            for recorder in (whole, part):
                recorder.update(ids, logits[start:start + 16], ids % classes, epoch, norms[start:start + 16])
            if (epoch, start) == (2, 16):  # mid-epoch, with rows staged
                part.save(tmp_path / "state")  # the name as given, no ".npz" added
                part = DynamicsRecorder.load(tmp_path / "state")
                assert part.flush_rows == 20
    want, got = whole.results(), part.results()
    for name in names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    with pytest.raises(InvalidValuesError, match="no 'meta'"):
        DynamicsRecorder.from_state_dict({"last_epoch": np.zeros(n, dtype=np.int32)})


def test_the_callback_on_a_plain_trainer_fails_before_training(digits640, tmp_path):
    from transformers import Trainer

    model = Head()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model=model, args=arguments(tmp_path, num_train_epochs=1), train_dataset=add_row_ids(digits640),
                      callbacks=[DynamicsCallback(scores=["aum"])])
    with pytest.raises(InvalidParameterError, match="DynamicsTrainer"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_batch_without_row_ids_fails_at_the_first_step(digits640, tmp_path):
    """A collator of the user's own that drops the id column: the first training step says so."""

    def pixels_and_labels(rows):
        return {"pixels": torch.tensor([r["pixels"] for r in rows]), "labels": torch.tensor([r["label"] for r in rows])}

    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=1),
                              train_dataset=add_row_ids(digits640), data_collator=pixels_and_labels,
                              dynamics=DynamicsCallback(scores=["aum"]))
    with pytest.raises(InvalidValuesError, match="no 'd2_row_id' column: add it .* add_row_ids"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_labels_out_of_range_fail_at_the_first_step_not_after_training(digits640, tmp_path):
    """-100 (the 'ignore' label) passes the loss silently. The labels read with the row ids are checked
    against the logits at the first step, wherever the row is (here in the last batch); a collator of
    the user's own that brings labels from elsewhere still has its first batch checked at once."""
    import datasets

    labels = np.asarray(digits640["label"])
    labels[600] = -100
    train = add_row_ids(datasets.Dataset.from_dict({"pixels": np.asarray(digits640["pixels"]), "label": labels}))
    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=2), train_dataset=train,
                              dynamics=DynamicsCallback(scores=["aum"]))
    with pytest.raises(InvalidValuesError, match=r"column 'label' has labels outside \[0, 10\) .* 1 row \(first: 600\)"):
        trainer.train()
    assert trainer.state.global_step == 0

    def shifted(rows):  # an 'ignore' label from a collator: in no column
        return {"pixels": torch.tensor([r["pixels"] for r in rows]),
                "labels": torch.tensor([-100] + [r["label"] for r in rows[1:]]),
                "d2_row_id": torch.tensor([r["d2_row_id"] for r in rows])}

    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=2, remove_unused_columns=False),
                              train_dataset=add_row_ids(digits640), data_collator=shifted,
                              dynamics=DynamicsCallback(scores=["aum"]))
    with pytest.raises(InvalidValuesError, match=r"labels must lie in \[0, 10\)"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_too_few_epochs_for_a_score_fail_before_training(digits640, tmp_path):
    model = Head()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = DynamicsTrainer(model=model, args=arguments(tmp_path, num_train_epochs=3), train_dataset=add_row_ids(digits640),
                              dynamics=DynamicsCallback(scores=["aum", "dynamic_uncertainty"]))
    with pytest.raises(InvalidParameterError, match="epochs=3 is too few for dynamic_uncertainty: at least 11"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    short = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=2), train_dataset=add_row_ids(digits640),
                            dynamics=DynamicsCallback(scores=["el2n"], el2n_epochs=[5]))
    with pytest.raises(InvalidParameterError, match=r"el2n_epochs=\[5\] picks epochs the run of 2 epochs never reaches"):
        short.train()


def test_train_dynamics_refuses_epoch_choices_the_run_never_reaches(digits640):
    with pytest.raises(InvalidParameterError, match=r"el2n_epochs=\[19\] .* run of 10 epochs"):
        train_dynamics(digits640, Head(), inputs="pixels", scores=["el2n"], el2n_epochs=[19], progress=False)


def test_a_model_returning_tuples_records_its_logits_not_its_loss(digits640, tmp_path):
    train = add_row_ids(digits640)
    plain, tupled = DynamicsCallback(scores=["aum", "loss"]), DynamicsCallback(scores=["aum", "loss"])
    DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=2), train_dataset=train, dynamics=plain).train()
    DynamicsTrainer(model=TupleHead(), args=arguments(tmp_path, num_train_epochs=2), train_dataset=train,
                    dynamics=tupled).train()
    for name in ("aum", "loss"):
        np.testing.assert_allclose(tupled.results()[name], plain.results()[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_predict_on_rows_that_carry_ids_and_no_labels(digits640, tmp_path):
    train = add_row_ids(digits640)
    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=1), train_dataset=train,
                              dynamics=DynamicsCallback(scores=["aum"]))
    trainer.train()
    unlabelled = train.remove_columns("label").select(range(40))
    predictions = trainer.predict(unlabelled).predictions
    with torch.no_grad():
        expected = trainer.model(torch.tensor(np.asarray(unlabelled["pixels"]), dtype=torch.float32))["logits"]
    np.testing.assert_allclose(predictions, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_row_ids_must_index_the_rows_trained_on(digits640, tmp_path):
    """Ids added before a split no longer number the rows 0..n−1: add_row_ids and the Trainer say so
    before training; ids of a dataset shuffled after add_row_ids stay valid."""
    ids = add_row_ids(digits640)
    assert add_row_ids(ids.shuffle(seed=0))["d2_row_id"] is not None  # a permutation: fine
    split = ids.train_test_split(test_size=0.25, seed=0)["train"]
    with pytest.raises(InvalidValuesError, match="add_row_ids\\(ds.remove_columns\\('d2_row_id'\\)\\)"):
        add_row_ids(split)
    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=1), train_dataset=split,
                              dynamics=DynamicsCallback(scores=["aum"]))
    with pytest.raises(InvalidValuesError, match="outside \\[0, 480\\)"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_to_dataset_follows_the_id_column_of_a_shuffled_dataset(digits640, tmp_path):
    train = add_row_ids(digits640)
    dynamics = DynamicsCallback(scores=["aum", "loss"])
    DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=2), train_dataset=train,
                    dynamics=dynamics).train()
    in_order = dynamics.to_dataset(train)
    shuffled = dynamics.to_dataset(train.shuffle(seed=3))
    assert "d2_row_id" not in shuffled.column_names
    by_pixels = {tuple(np.round(p, 4)): a for p, a in zip(np.asarray(in_order["pixels"]), np.asarray(in_order["aum"]))}
    for pixels, aum in zip(np.asarray(shuffled["pixels"]), np.asarray(shuffled["aum"])):
        assert by_pixels[tuple(np.round(pixels, 4))] == aum
    assert shuffled._fingerprint != dynamics.to_dataset(train.shuffle(seed=4))._fingerprint


def test_an_iterable_dataset_records_each_pass_as_an_epoch(digits640, tmp_path):
    """A streamed dataset has no length: the callback takes n_rows, and each pass over the stream
    (the Trainer's "epoch" until max_steps) is recorded as its own epoch."""
    train = add_row_ids(digits640).to_iterable_dataset()
    with pytest.raises(InvalidParameterError, match="n_rows"):
        DynamicsTrainer(model=Head(), args=arguments(tmp_path, max_steps=60), train_dataset=train,
                        dynamics=DynamicsCallback(scores=["aum"]))
    with pytest.raises(InvalidParameterError, match="IterableDataset"):
        add_row_ids(train)
    dynamics = DynamicsCallback(scores=["aum", "forgetting"], n_rows=640)
    DynamicsTrainer(model=Head(), args=arguments(tmp_path, max_steps=60), train_dataset=train, dynamics=dynamics).train()
    assert np.isfinite(dynamics.results()["aum"]).all()  # (results() folds what is staged)
    presentations = dynamics.recorder.families[0].seen  # AUM's count; 60 steps of 32 rows = 3 passes over 640
    np.testing.assert_array_equal(presentations, np.full(640, 3))


def test_resuming_a_stream_after_its_first_pass_is_refused(digits640, tmp_path):
    """The Trainer restarts a stream from its first row on resume, whatever the epoch: the rows would
    no longer match the epochs recorded, so a resume past the first pass raises."""
    train = add_row_ids(digits640).to_iterable_dataset()
    args = arguments(tmp_path, max_steps=50, save_strategy="steps", save_steps=25)
    DynamicsTrainer(model=Head(), args=args, train_dataset=train,
                    dynamics=DynamicsCallback(scores=["aum"], n_rows=640)).train()
    resumed = DynamicsTrainer(model=Head(), args=args, train_dataset=train,
                              dynamics=DynamicsCallback(scores=["aum"], n_rows=640))
    with pytest.raises(InvalidValuesError, match="streamed dataset"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-25"))  # step 25: in the second pass


def test_the_callback_registered_twice_counts_each_epoch_once(digits640, tmp_path):
    train = add_row_ids(digits640)
    once, twice = (DynamicsCallback(scores=["el2n", "aum"], el2n_epochs=2) for _ in range(2))
    DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=3), train_dataset=train, dynamics=once).train()
    trainer = DynamicsTrainer(model=Head(), args=arguments(tmp_path, num_train_epochs=3), train_dataset=train,
                              dynamics=twice, callbacks=[twice])
    trainer.add_callback(twice)  # and once more: transformers only warns
    trainer.train()
    assert twice.epoch == once.epoch == 2
    for name in ("el2n", "aum"):
        np.testing.assert_array_equal(twice.results()[name], once.results()[name], err_msg=name)


def test_options_given_as_numpy_values_or_defaults_save_and_resume(digits640, tmp_path):
    """el2n_epochs=np.int64(2) is saved with every checkpoint (as JSON) and resumed by a callback that
    says 2; a callback that spells out a default the first run left implicit resumes it too."""
    train = add_row_ids(digits640)
    args = arguments(tmp_path, num_train_epochs=3, save_strategy="epoch")
    whole = DynamicsCallback(scores=["el2n", "aum"], el2n_epochs=np.int64(2))
    DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=whole).train()
    resumed = DynamicsCallback(scores=["el2n", "aum"], el2n_epochs=2)
    DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=resumed).train(
        resume_from_checkpoint=str(tmp_path / "checkpoint-20"))
    np.testing.assert_allclose(resumed.results()["el2n"], whole.results()["el2n"], rtol=1e-5, atol=1e-6)

    args = arguments(tmp_path / "b", num_train_epochs=2, save_strategy="epoch")
    implicit = DynamicsCallback(scores=["el2n"])
    DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=implicit).train()
    spelled = DynamicsCallback(scores=["el2n"], el2n_epochs=10)  # the default
    DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=spelled).train(
        resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-20"))
    np.testing.assert_allclose(spelled.results()["el2n"], implicit.results()["el2n"], rtol=1e-5, atol=1e-6)
    other = DynamicsCallback(scores=["el2n"], el2n_epochs=1)
    with pytest.raises(InvalidValuesError, match="Resume with the callback the run started with"):
        DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=other).train(
            resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-20"))


def test_resuming_mid_epoch_with_ignore_data_skip_is_refused(digits640, tmp_path):
    """ignore_data_skip replays the resumed epoch from its start: its first rows, recorded before the
    checkpoint, would be presented twice."""
    train = add_row_ids(digits640)
    args = arguments(tmp_path, num_train_epochs=2, save_strategy="steps", save_steps=30)
    DynamicsTrainer(model=Head(), args=args, train_dataset=train, dynamics=DynamicsCallback(scores=["aum"])).train()
    skipping = arguments(tmp_path, num_train_epochs=2, ignore_data_skip=True)
    with pytest.raises(InvalidValuesError, match="ignore_data_skip"):
        DynamicsTrainer(model=Head(), args=skipping, train_dataset=train,
                        dynamics=DynamicsCallback(scores=["aum"])).train(resume_from_checkpoint=str(tmp_path / "checkpoint-30"))
