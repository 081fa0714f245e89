"""The accessor itself: registration, caching, conflicts, provenance."""

from __future__ import annotations

import datasets
import pytest

import hf_d2prune
from hf_d2prune.errors import NamespaceConflictError
from hf_d2prune.namespace import D2Accessor, D2DictAccessor, register_accessor


def test_class_access_returns_the_accessor_type():
    assert datasets.Dataset.d2 is D2Accessor
    assert datasets.DatasetDict.d2 is D2DictAccessor
    assert "Add an embedding column" in D2Accessor.embed.__doc__


def test_instance_access_is_cached_and_holds_the_dataset():
    ds = datasets.Dataset.from_dict({"x": [1, 2]})
    assert ds.d2 is ds.d2
    assert ds.d2._ds is ds
    other = datasets.Dataset.from_dict({"x": [3]})
    assert other.d2 is not ds.d2


def test_registering_over_an_existing_attribute_is_refused():
    with pytest.raises(NamespaceConflictError, match="already has an attribute 'map'.*HF_D2PRUNE_ACCESSOR"):
        register_accessor("map")
    assert datasets.Dataset.map.__name__ == "map"


def test_registering_twice_under_our_name_is_a_no_op():
    register_accessor("d2")
    assert datasets.Dataset.d2 is D2Accessor


def test_dict_accessor_mirrors_every_public_method():
    public = {n for n in dir(D2Accessor) if not n.startswith("_") and callable(getattr(D2Accessor, n))}
    assert public <= set(dir(D2DictAccessor))


def test_provenance_keeps_user_description_and_replaces_repeated_steps():
    from hf_d2prune.provenance import read_provenance, with_step

    ds = datasets.Dataset.from_dict({"x": [1]}, info=datasets.DatasetInfo(description="My data."))
    a = with_step(ds.map(lambda r: r), {"step": "embed", "output": "embedding", "model": "m1"})
    b = with_step(a.map(lambda r: r), {"step": "embed", "output": "embedding", "model": "m2"})
    c = with_step(b.map(lambda r: r), {"step": "coreset", "output": "d2_rank"})
    assert read_provenance(ds) == []
    assert ds.info.description == "My data."
    assert [s["model"] for s in read_provenance(b)] == ["m2"]
    assert [s["step"] for s in read_provenance(c)] == ["embed", "coreset"]
    assert c.info.description.startswith("My data.")
    assert read_provenance(a)[0]["library_version"] == hf_d2prune.__version__


@pytest.mark.parametrize("name", ["card", "save_for_hub", "push_to_hub"])
def test_publishing_is_per_split_only(name):
    from hf_d2prune.errors import InvalidParameterError

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1]})})
    with pytest.raises(InvalidParameterError, match=rf"dd\['train'\]\.d2\.{name}"):
        getattr(dd.d2, name)("me/repo")
