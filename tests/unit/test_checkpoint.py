"""Resuming loads a checkpoint's weights strictly (train.model.load_weights, used by train.loop)."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import TINY
from train.model import build, load_weights


def _saved(tmp_path, labels=("a", "b"), seed=0):
    torch.manual_seed(seed)
    model, _ = build("all-MiniLM-L6-v2", list(labels), TINY)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model, tmp_path / "model.safetensors"


def test_a_checkpoint_restores_every_weight(tmp_path):
    saved, path = _saved(tmp_path)
    torch.manual_seed(1)
    fresh, _ = build("all-MiniLM-L6-v2", ["a", "b"], TINY)
    load_weights(fresh, path)
    for name, value in saved.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_a_checkpoint_missing_a_layer_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    weights = load_file(path)
    del weights["classifier.weight"]
    save_file(weights, path)
    fresh, _ = build("all-MiniLM-L6-v2", ["a", "b"], TINY)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*classifier\.weight"):
        load_weights(fresh, path)


def test_a_checkpoint_for_other_labels_is_refused(tmp_path):
    _, path = _saved(tmp_path, labels=("a", "b", "c"))
    fresh, _ = build("all-MiniLM-L6-v2", ["a", "b"], TINY)
    with pytest.raises(RuntimeError, match="size mismatch for classifier.weight"):
        load_weights(fresh, path)


def test_a_checkpoint_with_extra_weights_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    weights = load_file(path)
    weights["classifier.extra"] = torch.zeros(2)
    save_file(weights, path)
    fresh, _ = build("all-MiniLM-L6-v2", ["a", "b"], TINY)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*classifier\.extra"):
        load_weights(fresh, path)
