import json
import shutil

import pytest

from train.artifact import MANIFEST, ArtifactError, load_model, load_tokenizer, read_info, verify


@pytest.fixture
def artifact(tiny_artifact, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_artifact, copy)
    return copy


def test_exported_artifact_describes_itself(artifact):
    info = read_info(artifact)
    assert info.labels == ["negative", "positive"]
    assert info.max_length == 32 and len(info.version) == 64
    names = set(json.loads((artifact / MANIFEST).read_text())["files"])
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_config.json", "metrics.json"} <= names
    config = json.loads((artifact / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert load_model(info).config.num_labels == 2
    assert load_tokenizer(info)("hello")["input_ids"][0] == 101


def test_changed_file_is_refused(artifact):
    with open(artifact / "model.safetensors", "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ArtifactError, match="model.safetensors: sha256 does not match"):
        verify(artifact)


def test_unlisted_file_is_refused(artifact):
    (artifact / "extra.txt").write_text("x")
    with pytest.raises(ArtifactError, match=r"files not in the manifest: \['extra.txt'\]"):
        verify(artifact)


def test_missing_file_is_refused(artifact):
    (artifact / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="missing: \\['tokenizer.json'\\]"):
        verify(artifact)


def test_pickle_weights_are_refused_even_when_listed(artifact):
    (artifact / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"]["pytorch_model.bin"] = "0" * 64
    (artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="pickle-format weights are refused"):
        verify(artifact)


def test_directory_without_manifest_is_refused(artifact):
    (artifact / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        verify(artifact)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        verify(tmp_path / "nope")
