"""Safe loading: no unpickling of files, ``torch.load(weights_only=True)``, remote code off, tokens never leak.

Static checks read the source of every module in ``hf_d2prune/`` (AST, not regexes, so comments and
strings do not count); behavioural checks run the code with the model loaders and the Hub mocked.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
from pathlib import Path

import datasets
import numpy as np
import pytest

import hf_d2prune
from hf_d2prune.errors import ModelNotFoundError

PACKAGE = Path(hf_d2prune.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
TOKEN = "hf_SAFEloadingTOKENmustNEVERappear987654321"

# Calls that deserialise arbitrary Python objects from bytes a user or the Hub supplied.
UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"), ("dill", "load"),
    ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"), ("joblib", "load"), ("pd", "read_pickle"),
    ("pandas", "read_pickle"), ("marshal", "loads"), ("shelve", "open"), ("yaml", "load"), ("yaml", "unsafe_load"),
}


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.AST) -> tuple[str, ...]:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return tuple(reversed(parts))


def _keyword(call: ast.Call, name: str):
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def test_sources_are_found():
    assert len(SOURCES) > 20 and PACKAGE / "embedding.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_unpickling_of_untrusted_files(path):
    for call in _calls(path):
        name = _dotted(call.func)
        assert name[-2:] not in UNSAFE_CALLS, f"{path.name}:{call.lineno}: {'.'.join(name)}"
        if name[-1:] == ("load",) and name[:1] in (("np",), ("numpy",)):
            allow = _keyword(call, "allow_pickle")
            assert allow is None or (isinstance(allow, ast.Constant) and allow.value is False), \
                f"{path.name}:{call.lineno}: np.load(allow_pickle=...)"
        if name[-1:] == ("read_pickle",):
            raise AssertionError(f"{path.name}:{call.lineno}: read_pickle")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_torch_load_has_weights_only_true(path):
    for call in _calls(path):
        if _dotted(call.func)[-2:] == ("torch", "load"):
            value = _keyword(call, "weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, f"{path.name}:{call.lineno}"


def test_torch_load_is_used_somewhere_so_the_check_above_is_live():
    found = [p.name for p in SOURCES for c in _calls(p) if _dotted(c.func)[-2:] == ("torch", "load")]
    assert "embedding.py" in found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_trust_remote_code_is_never_switched_on_by_the_library(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            value = _keyword(node, "trust_remote_code")
            assert not (isinstance(value, ast.Constant) and value.value is True), f"{path.name}:{node.lineno}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            defaults = dict(zip([a.arg for a in positional][len(positional) - len(args.defaults):], args.defaults))
            defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
            if "trust_remote_code" in defaults:
                default = defaults["trust_remote_code"]
                assert isinstance(default, ast.Constant) and default.value is False, f"{path.name}:{node.lineno} {node.name}"


def test_public_signatures_default_trust_remote_code_to_false():
    from hf_d2prune import embedding

    for fn in (datasets.Dataset.d2.embed, embedding.build_encoder):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False


def test_no_eval_or_exec_in_the_library():
    for path in SOURCES:
        for call in _calls(path):
            assert _dotted(call.func) not in (("eval",), ("exec",)), f"{path.name}:{call.lineno}"


# ----------------------------------------------------------------------------- behaviour

def test_text_model_is_loaded_without_remote_code_unless_asked(monkeypatch):
    import sentence_transformers

    seen = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            seen.append(kwargs)
            raise OSError("not a real model")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Recorder)
    ds = datasets.Dataset.from_dict({"text": ["a", "b"]})
    with pytest.raises(ModelNotFoundError):
        ds.d2.embed("text", model="someone/some-model")
    with pytest.raises(ModelNotFoundError):
        ds.d2.embed("text", model="someone/some-model", trust_remote_code=True)
    assert [kw["trust_remote_code"] for kw in seen] == [False, True]


def test_image_model_is_loaded_without_remote_code_unless_asked(monkeypatch):
    import transformers
    from PIL import Image

    seen = []

    def record(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("not a real model")

    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", record)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", record)
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4))]}, features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(Exception):
        ds.d2.embed("image", model="someone/vision-model")
    assert seen and all(value is False for value in seen)


@pytest.fixture(scope="module")
def ranked():
    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(20)], "label": rng.integers(0, 2, 20),
                                     "score": rng.random(20)},
                                    features=datasets.Features({"text": datasets.Value("string"),
                                                                "label": datasets.ClassLabel(names=["a", "b"]),
                                                                "score": datasets.Value("float32")}))
    return ds.d2.coreset(score="score", method="topk")


def _no_token_anywhere(hub, caplog, capsys, *datasets_):
    for path, data in hub.uploads.items():
        assert TOKEN.encode() not in data, path
    assert all(TOKEN not in record.getMessage() and TOKEN not in str(record.args) for record in caplog.records)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out and TOKEN not in captured.err
    for ds in datasets_:
        assert TOKEN not in repr(ds.info) and TOKEN not in str(ds.d2.provenance)


def test_push_to_hub_token_never_logged_printed_or_written(ranked, monkeypatch, caplog, capsys, tmp_path):
    from test_hub import FakeHub

    hub = FakeHub().install(monkeypatch)
    caplog.set_level(logging.DEBUG)
    small = ranked.d2.prune(keep=0.5, method="topk")
    small.d2.push_to_hub("me/safe", full=ranked, token=TOKEN, license="mit", scores_config=True, include_scores=True)
    assert hub.tokens == {TOKEN}
    assert sorted(hub.uploads)  # something was uploaded, and checked below
    _no_token_anywhere(hub, caplog, capsys, small, ranked)
    card = small.d2.card(full=ranked, license="mit")
    assert TOKEN not in str(card)


def test_failed_push_error_does_not_carry_the_token(ranked, monkeypatch, caplog, capsys):
    from test_hub import FakeHub

    hub = FakeHub().install(monkeypatch)
    hub.fail_commit = True
    caplog.set_level(logging.DEBUG)
    small = ranked.d2.prune(keep=0.5, method="topk")
    with pytest.raises(OSError) as caught:
        small.d2.push_to_hub("me/safe", token=TOKEN, license="mit")
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value.args)
    _no_token_anywhere(hub, caplog, capsys, small)


def test_cli_push_with_hf_token_in_the_environment_never_shows_it(ranked, monkeypatch, caplog, capsys, tmp_path):
    from hf_d2prune.cli import main
    from test_hub import FakeHub

    hub = FakeHub().install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    ranked.add_column("embedding", list(np.eye(20, 3, dtype=np.float32) + 0.1)).save_to_disk(str(src))
    rc = main(["-vv", "run", str(src), "--keep", "0.5", "--score", "score", "--method", "topk", "--license", "mit",
               "--out", str(tmp_path / "out"), "--hub-dir", str(tmp_path / "hubdir"), "--push-to-hub", "me/safe-cli"])
    assert rc == 0
    assert hub.uploads
    _no_token_anywhere(hub, caplog, capsys)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for path in (tmp_path / "hubdir").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert os.environ["HF_TOKEN"] == TOKEN  # untouched
