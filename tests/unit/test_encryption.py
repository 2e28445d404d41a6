"""Encrypted artifacts: the envelope, the CLI, and every way a sealed artifact must be refused."""
import json
import shutil

import pytest
import torch

from app.artifact_source import CACHE_ENV, load_info
from train import encryption
from train.artifact import MANIFEST, SEALED, SIGNATURE, WEIGHTS, ArtifactError, load_model, read_info, sha256_file, verify
from train.artifact_cli import main
from train.encryption import KEY_FILE_ENV, KEYS_FILE
from train.signing import SIGNING_KEY_ENV, VERIFY_KEY_ENV
from tests.conftest import TINY, make_artifact


@pytest.fixture(autouse=True)
def no_ambient_keys(monkeypatch):
    for name in (KEY_FILE_ENV, SIGNING_KEY_ENV, VERIFY_KEY_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keys(tmp_path):
    """Two KEKs, k1 and k2, made by the CLI."""
    for key_id in ("k1", "k2"):
        assert main(["keygen", "--output", str(tmp_path / f"{key_id}.key"), "--key-id", key_id]) == 0
    return tmp_path / "k1.key", tmp_path / "k2.key"


@pytest.fixture
def sealed(tiny_artifact, tmp_path, keys):
    """(plaintext copy, the same artifact encrypted in place under k1)."""
    plain, model = tmp_path / "plain", tmp_path / "model"
    shutil.copytree(tiny_artifact, plain)
    shutil.copytree(tiny_artifact, model)
    assert main(["encrypt", "--model", str(model), "--key-file", str(keys[0])]) == 0
    return plain, model


def _key_text(path) -> str:
    return json.loads(path.read_text())["key"]


def _rewrite_manifest(root, **changes):
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"].update(changes)
    (root / MANIFEST).write_text(json.dumps(manifest))


def _logits(model):
    ids = torch.tensor([[101, 2023, 2143, 2001, 6919, 102]])
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_keygen_writes_an_owner_only_key_never_overwrites_and_keeps_the_signing_mode(keys, tmp_path, capsys):
    k1, _ = keys
    assert oct(k1.stat().st_mode)[-3:] == "600" and json.loads(k1.read_text())["key_id"] == "k1"
    assert _key_text(k1) not in capsys.readouterr().out
    before = k1.read_bytes()
    assert main(["keygen", "--output", str(k1)]) == 2 and k1.read_bytes() == before
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keygen", "--output", str(tmp_path / "x.key"), "--private-key", str(tmp_path / "p.pem")]) == 2
    assert main(["keygen", "--output", str(tmp_path / "y.key"), "--key-id", "../bad"]) == 2
    assert main(["keygen", "--output", str(tmp_path / "z.key")]) == 0  # a generated key id
    assert json.loads((tmp_path / "z.key").read_text())["key_id"].startswith("k")


def test_round_trip_loads_the_same_weights_and_inspect_needs_no_key(sealed, keys, capsys):
    plain, model = sealed
    capsys.readouterr()
    assert not (model / WEIGHTS).exists() and not list(model.rglob("*.safetensors"))
    info, before = read_info(model), read_info(plain)
    assert info.encrypted and not before.encrypted
    assert info.plaintext_version == before.version != info.version  # encryption keeps the plaintext version
    original, loaded = load_model(before), load_model(info, keys[0])
    reference = original.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in loaded.state_dict().items())
    torch.testing.assert_close(_logits(loaded), _logits(original), atol=1e-6, rtol=0)
    assert main(["inspect", "--model", str(model)]) == 0
    shown = capsys.readouterr().out
    described = json.loads(shown)
    assert described | {"model": None} == {
        "model": None, "version": info.version, "plaintext_version": before.version, "encrypted": True,
        "scheme": encryption.SCHEME, "weights_size": (plain / WEIGHTS).stat().st_size, "key_ids": ["k1"],
        "signed": False, "files": "ok"}
    assert _key_text(keys[0]) not in shown and _key_text(keys[0]) not in (model / KEYS_FILE).read_text()


def test_each_encryption_draws_a_fresh_data_key(sealed, keys, tmp_path):
    plain, model = sealed
    assert main(["encrypt", "--model", str(plain), "--key-file", str(keys[0]), "--output", str(tmp_path / "again")]) == 0
    again = tmp_path / "again"
    assert (again / SEALED).read_bytes() != (model / SEALED).read_bytes()
    assert (again / KEYS_FILE).read_bytes() != (model / KEYS_FILE).read_bytes()
    assert read_info(again).plaintext_version == read_info(model).plaintext_version
    assert main(["encrypt", "--model", str(model), "--key-file", str(keys[0])]) == 1  # already encrypted


def test_missing_wrong_and_unknown_keys_are_refused_without_showing_a_key(sealed, keys, tmp_path):
    _, model = sealed
    info = read_info(model)
    with pytest.raises(ArtifactError, match=r"key id\(s\): k1\) and no model key"):
        load_model(info)
    impostor = tmp_path / "impostor.key"  # the right key id, other bytes
    encryption.generate_kek(impostor, "k1")
    with pytest.raises(ArtifactError, match="authentication failed unwrapping the data key") as refused:
        load_model(info, impostor)
    assert _key_text(impostor) not in str(refused.value) and _key_text(keys[0]) not in str(refused.value)
    with pytest.raises(ArtifactError, match=r"wrapped under key id\(s\) \['k1'\]; the configured .* holds \['k2'\]"):
        load_model(info, keys[1])
    (tmp_path / "broken.key").write_text('{"format": "rtc-kek/1", "key_id": "k1", "key": "c2VjcmV0"}')
    with pytest.raises(encryption.KeyFileError, match="not a model key file") as broken:
        load_model(info, tmp_path / "broken.key")
    assert "c2VjcmV0" not in str(broken.value)


def test_a_configured_key_refuses_plaintext_and_the_environment_names_it(sealed, keys, monkeypatch):
    plain, model = sealed
    monkeypatch.setenv(KEY_FILE_ENV, str(keys[0]))
    assert load_model(read_info(model)).config.num_labels == 2
    with pytest.raises(ArtifactError, match="plaintext artifact is refused while a model key is configured"):
        load_model(read_info(plain))


def test_tampered_ciphertext_is_refused_by_the_manifest_then_by_the_aead(sealed, keys):
    _, model = sealed
    blob = bytearray((model / SEALED).read_bytes())
    blob[len(blob) // 2] ^= 1
    (model / SEALED).write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="model.safetensors.enc: sha256 does not match"):
        verify(model)
    _rewrite_manifest(model, **{SEALED: sha256_file(model / SEALED)})  # an attacker without the signing key
    with pytest.raises(ArtifactError, match="authentication failed: the sealed weights were changed"):
        load_model(read_info(model), keys[0])


def test_a_rewritten_sibling_file_is_refused_by_the_aead_even_unsigned(sealed, keys):
    _, model = sealed
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}  # swap the labels the weights mean
    (model / "config.json").write_text(json.dumps(config))
    _rewrite_manifest(model, **{"config.json": sha256_file(model / "config.json")})
    with pytest.raises(ArtifactError, match="authentication failed"):
        load_model(read_info(model), keys[0])


def test_sealed_weights_moved_from_another_artifact_are_refused(sealed, keys, tmp_path):
    _, model = sealed
    other = make_artifact(tmp_path / "other", random_init={**TINY, "initializer_range": 0.5})
    assert main(["encrypt", "--model", str(other), "--key-file", str(keys[0])]) == 0  # the same KEK
    shutil.copyfile(other / SEALED, model / SEALED)
    _rewrite_manifest(model, **{SEALED: sha256_file(model / SEALED)})
    with pytest.raises(ArtifactError, match="authentication failed: the sealed weights"):
        load_model(read_info(model), keys[0])
    shutil.copyfile(other / KEYS_FILE, model / KEYS_FILE)  # and its wrapped data key with it
    with pytest.raises(ArtifactError, match="authentication failed unwrapping the data key"):
        load_model(read_info(model), keys[0])


def test_rotation_rewraps_only_the_data_key_and_keeps_version_and_signature(sealed, keys, tmp_path, capsys):
    _, model = sealed
    k1, k2 = keys
    private, public = tmp_path / "s.pem", tmp_path / "v.pem"
    assert main(["keygen", "--private-key", str(private), "--public-key", str(public)]) == 0
    assert main(["sign", "--model", str(model), "--private-key", str(private)]) == 0
    stored = {n: (model / n).read_bytes() for n in (SEALED, MANIFEST, SIGNATURE)}
    version = read_info(model).version
    assert main(["rewrap", "--model", str(model), "--key-file", str(k1), "--new-key-file", str(k2), "--keep-old"]) == 0
    assert read_info(model).wrapped_keys and json.loads((model / KEYS_FILE).read_text())["wrapped"][1]["key_id"] == "k2"
    for key in (k1, k2):  # meanwhile both open it: replicas roll while the Secret holds both
        load_model(read_info(model, public), key)
    capsys.readouterr()
    assert main(["rewrap", "--model", str(model), "--key-file", str(k2), "--new-key-file", str(k2)]) == 0
    assert f"version {version}, unchanged" in capsys.readouterr().out
    assert {n: (model / n).read_bytes() for n in stored} == stored and read_info(model, public).version == version
    with pytest.raises(ArtifactError, match=r"wrapped under key id\(s\) \['k2'\]"):
        load_model(read_info(model), k1)
    secret = tmp_path / "secret"  # a mounted Secret: a directory of key files plus kubelet dot-entries
    (secret / "..data").mkdir(parents=True)
    for key in (k1, k2):
        shutil.copy(key, secret / key.name)
    load_model(read_info(model), secret)
    assert main(["rewrap", "--model", str(model), "--key-file", str(k1), "--new-key-file", str(k1)]) == 1


def test_signed_encryption_and_decrypt_restores_the_plaintext_artifact(sealed, keys, tmp_path, capsys):
    plain, model = sealed
    private, public = tmp_path / "s.pem", tmp_path / "v.pem"
    main(["keygen", "--private-key", str(private), "--public-key", str(public)])
    out = tmp_path / "signed"
    assert main(["encrypt", "--model", str(plain), "--key-file", str(keys[0]), "--output", str(out),
                 "--private-key", str(private)]) == 0
    verify(out, public)  # the signature covers the stored (sealed) files: checked with no model key
    assert main(["decrypt", "--model", str(model), "--key-file", str(keys[1]), "--output", str(tmp_path / "d")]) == 1
    assert main(["decrypt", "--model", str(model), "--key-file", str(keys[0]), "--output", str(tmp_path / "d")]) == 0
    assert verify(tmp_path / "d") == read_info(plain).version
    assert (tmp_path / "d" / WEIGHTS).read_bytes() == (plain / WEIGHTS).read_bytes()


def test_export_writes_sealed_weights_only(keys, tmp_path):
    from train.artifact import export
    from train.model import build

    model, tokenizer = build("all-MiniLM-L6-v2", ["a", "b"], TINY)
    version = export(model, tokenizer, tmp_path / "out", {"max_length": 16}, {}, encrypt_key_file=keys[0])
    assert not list((tmp_path / "out").rglob("*.safetensors")) and read_info(tmp_path / "out").version == version
    reference = model.state_dict()
    loaded = load_model(read_info(tmp_path / "out"), keys[0]).state_dict()
    assert all(torch.equal(reference[k], v) for k, v in loaded.items())


def test_a_bucket_copy_is_cached_sealed_and_its_wrapped_keys_read_fresh(sealed, keys, tmp_path, monkeypatch):
    _, model = sealed
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    uri = f"file://{model}"
    assert load_model(load_info(uri), keys[0])
    (cached,) = (tmp_path / "cache").iterdir()
    assert not (cached / KEYS_FILE).exists() and not list(cached.rglob("*.safetensors"))
    # A rotation at the origin leaves the manifest, hence the cached copy, as it was.
    assert main(["rewrap", "--model", str(model), "--key-file", str(keys[0]), "--new-key-file", str(keys[1])]) == 0
    info = load_info(uri)
    assert info.path == cached and load_model(info, keys[1])
    with pytest.raises(ArtifactError, match=r"\['k2'\]"):
        load_model(info, keys[0])


def test_a_model_too_large_for_one_shot_gcm_gets_a_clear_error(monkeypatch):
    monkeypatch.setattr(encryption, "MAX_PLAINTEXT", 10)
    with pytest.raises(ValueError, match="one-shot limit of 10; a segmented scheme"):
        encryption.seal(b"x" * 11, "0" * 64, WEIGHTS)
