import json
import re
import shutil

import pytest

from app.artifact_source import CACHE_ENV, local_artifact
from train import signing
from train.artifact import (
    MANIFEST, SIGNATURE, ArtifactError, load_model, load_tokenizer, read_info, sha256_file, sign, verify,
)
from train.signing import VERIFY_KEY_ENV


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


def _relist(artifact, change):
    manifest = json.loads((artifact / MANIFEST).read_text())
    change(manifest)
    (artifact / MANIFEST).write_text(json.dumps(manifest))


UNSAFE = ["../escape", "/etc/cron.d/x", "a/../../b", "..", "sub\\..\\x", "C:x", "c:/x", "./config.json", "a//b",
          "tokenizer.json/", "manifest.sig"]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_in_a_local_manifest_are_refused(artifact, name):
    _relist(artifact, lambda m: m["files"].__setitem__(name, "0" * 64))
    with pytest.raises(ArtifactError, match=f"unsafe file name {re.escape(repr(name))}"):
        verify(artifact)


@pytest.mark.parametrize("change,problem", [
    (lambda m: m.__setitem__("files", ["model.safetensors"]), "files: Input should be an object"),
    (lambda m: m["files"].__setitem__("config.json", "F" * 64), "files.config.json: String should match pattern"),
    (lambda m: m["files"].__setitem__("config.json", "ab"), "files.config.json: String should match pattern"),
    (lambda m: m["files"].__setitem__("config.json", 7), "files.config.json: Input should be a valid string"),
    (lambda m: m.__setitem__("signed_by", "me"), "signed_by: Extra inputs are not permitted"),
    (lambda m: m.__setitem__("format", "other/1"), "format: Input should be 'ray-text-classifier/1'"),
])
def test_manifest_shape_is_checked(artifact, change, problem):
    _relist(artifact, change)
    with pytest.raises(ArtifactError, match=f"not a valid manifest: {re.escape(problem)}"):
        verify(artifact)


def test_symlink_out_of_a_local_artifact_is_refused(artifact, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.move(artifact / "tokenizer.json", outside)  # same bytes, so only the location is wrong
    (artifact / "tokenizer.json").symlink_to(outside)
    with pytest.raises(ArtifactError, match="'tokenizer.json' resolves outside the folder"):
        verify(artifact)


# ----- file:// sources: what a writer to the bucket can and cannot do to a serving node -----

def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def bucket(artifact, tmp_path, monkeypatch):
    """tmp/bucket/art holds an artifact reachable as file://; the cache is tmp/cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(VERIFY_KEY_ENV, raising=False)
    root = tmp_path / "bucket"
    shutil.copytree(artifact, root / "art")
    return root


def test_file_uri_is_copied_to_the_cache_verified_and_reused(bucket, tmp_path):
    local = local_artifact(f"file://{bucket}/art")
    assert local.parent == tmp_path / "cache" and read_info(local).labels == ["negative", "positive"]
    assert _tree(tmp_path / "cache") == [local.name, *(f"{local.name}/{n}" for n in _tree(local))]
    (bucket / "art" / "model.safetensors").unlink()  # reused: only the manifest is fetched again
    assert local_artifact(f"file://{bucket}/art") == local
    (local / MANIFEST).write_text("{}")  # a cached copy whose manifest differs is not reused
    with pytest.raises(ArtifactError, match="cached copy differs from the manifest"):
        local_artifact(f"file://{bucket}/art")


@pytest.mark.parametrize("hostile", ["../escape", "absolute"])
def test_file_uri_manifest_naming_a_path_outside_is_refused_before_writing(bucket, tmp_path, hostile):
    # The named file exists where a naive download would read it, so only the name check stops it.
    name = str(tmp_path / "planted") if hostile == "absolute" else hostile
    source = bucket / "escape" if hostile == "../escape" else bucket / "art" / name.lstrip("/")
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("attacker's bytes")
    _relist(bucket / "art", lambda m: m["files"].__setitem__(name, sha256_file(source)))
    before = _tree(tmp_path)
    with pytest.raises(ArtifactError, match=f"not a valid manifest: unsafe file name {re.escape(repr(name))}"):
        local_artifact(f"file://{bucket}/art")
    assert _tree(tmp_path) == before  # nothing written anywhere: no cache, no planted file


def test_file_uri_with_a_changed_file_leaves_nothing_in_the_cache(bucket, tmp_path):
    (bucket / "art" / "config.json").write_text('{"id2label": {"0": "x", "1": "y"}}')
    with pytest.raises(ArtifactError, match="config.json: sha256 does not match"):
        local_artifact(f"file://{bucket}/art")
    assert _tree(tmp_path / "cache") == []  # verified in a temp dir, never renamed into place


def test_file_uri_signature_is_checked_before_any_file_is_fetched(bucket, tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.mkdir()
    signing.generate(keys / "s.pem", keys / "v.pem")
    signing.generate(keys / "attacker.pem", keys / "attacker.pub")
    sign(bucket / "art", keys / "attacker.pem")  # a writer to the bucket without the real key
    for path in (bucket / "art").iterdir():  # and no weights: a download attempt would fail otherwise
        if path.name not in (MANIFEST, SIGNATURE):
            path.unlink()
    monkeypatch.setenv(VERIFY_KEY_ENV, str(keys / "v.pem"))
    with pytest.raises(ArtifactError, match="manifest.sig: signature does not match"):
        local_artifact(f"file://{bucket}/art")
    (bucket / "art" / SIGNATURE).unlink()
    with pytest.raises(ArtifactError, match="unsigned artifact refused"):
        local_artifact(f"file://{bucket}/art")
    assert not (tmp_path / "cache").exists()
