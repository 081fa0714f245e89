"""train_dynamics' inputs and side effects: the model's mode, missing values, images of mixed modes,
formatted datasets, and fingerprints that change with the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_d2prune.dynamics import train_dynamics
from hf_d2prune.errors import ColumnTypeError, InvalidValuesError

from test_dynamics_training import Head, _NoLogits, digits_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits200():
    return digits_dataset()[0].select(range(200))


class Dropout(Head):
    """Head with dropout: its output depends on the mode."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, pixels, labels=None):
        return {"logits": self.out(self.drop(self.body(pixels)))}


@pytest.mark.parametrize("training", [True, False])
def test_the_model_comes_back_in_the_mode_it_went_in(digits200, training):
    model = Dropout().train(training)
    train_dynamics(digits200, model, inputs="pixels", epochs=1, scores=["aum"], progress=False)
    assert model.training is training and model.drop.training is training


def test_a_probe_that_fails_leaves_the_model_in_its_mode(digits200):
    model = _NoLogits().train()
    with pytest.raises(InvalidValuesError, match="without 'logits'"):
        train_dynamics(digits200, model, inputs="pixels", progress=False)
    assert model.training


def test_missing_texts_fail_before_training_naming_the_rows():
    import datasets

    texts = datasets.Dataset.from_dict({"text": ["a", None, "c", "d", None, "f"], "label": [0, 1, 0, 1, 0, 1]})

    def tokenizer(*args, **kwargs):
        raise AssertionError("the texts must be checked before anything is tokenized")

    with pytest.raises(InvalidValuesError, match=r"column .text. is missing \(None\) in 1 row \(first: 3\)"):
        train_dynamics(texts.select([0, 2, 3, 4]), torch.nn.Linear(4, 2), tokenizer=tokenizer, progress=False)


def _images(modes):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = []
    for mode in modes:
        gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        picture = Image.fromarray(gray, mode="L")
        pictures.append(picture if mode == "L" else picture.convert(mode))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
    return datasets.Dataset.from_dict({"image": pictures, "label": [i % 2 for i in range(len(modes))]}, features=features)


def test_images_of_other_modes_are_converted_to_the_first_ones():
    """A grayscale dataset with a few RGB and palette images: the pixels path makes every image 1
    channel (the gray value), so batches stack and the model sees one layout."""
    images = _images(["L", "RGB", "L", "P", "L", "RGB"] * 4)
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(64, 2)

        def forward(self, pixels):
            seen.append(pixels.detach().clone())
            return self.layer(pixels.flatten(1))

    train_dynamics(images, Probe(), inputs="image", epochs=1, batch_size=6, shuffle=False, scores=["aum"], progress=False)
    batch = torch.cat(seen[1:])  # [0] is the probe of the first 2 rows
    assert batch.shape == (24, 1, 8, 8)
    expected = np.stack([np.asarray(im.convert("L"), dtype=np.float32) / 255 for im in images["image"]])
    np.testing.assert_allclose(batch[:, 0].numpy(), expected, atol=1e-6)


def test_a_torch_formatted_image_dataset_takes_the_pixels_path():
    images = _images(["L"] * 12).with_format("torch")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    out = train_dynamics(images, model, inputs="image", epochs=1, batch_size=4, scores=["aum"], progress=False)
    assert np.isfinite(np.asarray(out["aum"])).all()


def test_runs_that_score_differently_get_different_fingerprints(digits200):
    """A collate_fn (like a tokenizer or an optimizer) is not part of the call's parameters; the
    scores it leads to are, so a cached map over one run's output is never served for another's."""

    def plain(batch):
        return torch.tensor(batch["pixels"])

    def doubled(batch):
        return 2 * torch.tensor(batch["pixels"])

    one = train_dynamics(digits200, Head(), collate_fn=plain, epochs=1, scores=["aum"], progress=False)
    two = train_dynamics(digits200, Head(), collate_fn=doubled, epochs=1, scores=["aum"], progress=False)
    again = train_dynamics(digits200, Head(), collate_fn=plain, epochs=1, scores=["aum"], progress=False)
    assert not np.allclose(np.asarray(one["aum"]), np.asarray(two["aum"]))
    assert one._fingerprint != two._fingerprint
    assert one._fingerprint == again._fingerprint  # deterministic: the same run, the same fingerprint


def test_an_accelerator_that_accumulates_gradients_is_refused_before_training(digits200):
    from accelerate import Accelerator

    from hf_d2prune.errors import InvalidParameterError

    model = Head()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(InvalidParameterError, match="accumulates gradients over 4 steps.*raise batch_size"):
        train_dynamics(digits200, model, inputs="pixels", accelerator=Accelerator(cpu=True, gradient_accumulation_steps=4),
                       progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_images_deeper_than_8_bits_are_refused_not_saturated():
    """A 16-bit image has no 0-255 range: converting it to 8 bits would clip it to near-white."""
    import datasets
    from PIL import Image

    deep = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # mode I;16
    assert deep.mode == "I;16"
    for modes in (["I;16"] * 4, ["L", "L", "I;16", "L"]):
        pictures = [deep if mode == "I;16" else Image.new("L", (8, 8), 7) for mode in modes]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=2)})
        images = datasets.Dataset.from_dict({"image": pictures, "label": [0, 1] * 2}, features=features)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        with pytest.raises(ColumnTypeError, match="16-bit or float pixels"):
            train_dynamics(images, model, inputs="image", epochs=1, batch_size=4, scores=["aum"], progress=False)
