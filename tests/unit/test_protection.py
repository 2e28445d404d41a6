import base64
import json
import logging
import shutil

import pytest

from app.errors import NotReady
from app.keys import KeyStore, create, main as keys_main, revoke
from app.limits import TokenBuckets
from app.redact import redact
from train.artifact import SIGNATURE, ArtifactError, verify
from train.artifact_cli import main as artifact_main
from train.signing import LEGACY_KEY_ENV, SIGNING_KEY_ENV, VERIFY_KEY_ENV, KeyFileError
from tests.conftest import TINY, make_artifact


def test_keys_file_stores_hashes_only_and_cli_prints_key_once(tmp_path, capsys):
    path = tmp_path / "keys.json"
    assert keys_main(["create", "--name", "ci", "--scopes", "classify,admin", "--file", str(path)]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("rtc_") and len(key) > 40
    assert key not in path.read_text() and oct(path.stat().st_mode)[-3:] == "600"
    assert keys_main(["list", "--file", str(path)]) == 0
    assert capsys.readouterr().out == "ci\tadmin,classify\tactive\n"
    found = KeyStore(str(path)).lookup(key)
    assert found.name == "ci" and found.scopes == {"classify", "admin"}
    assert keys_main(["create", "--name", "ci", "--file", str(path)]) == 2
    assert keys_main(["create", "--name", "x", "--scopes", "root", "--file", str(path)]) == 2


def test_lookup_refuses_unknown_and_revoked_keys_and_notices_changes(tmp_path):
    path = tmp_path / "keys.json"
    key = create(path, "a", ["classify"])
    store = KeyStore(str(path), check_every_s=0)
    assert store.lookup(key).name == "a"
    assert store.lookup(key + "x") is None and store.lookup("") is None
    revoke(path, "a")
    assert store.lookup(key) is None


def test_missing_or_unparsable_keys_file_fails_start_up(tmp_path):
    with pytest.raises(FileNotFoundError):
        KeyStore(str(tmp_path / "none.json"))
    path = tmp_path / "keys.json"
    create(path, "a", ["classify"])
    data = json.loads(path.read_text())
    data["keys"][0]["salt"] = "not hex"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="salt"):
        KeyStore(str(path))


def test_keys_file_gone_or_half_written_while_serving_answers_not_ready_until_fixed(tmp_path, caplog):
    path = tmp_path / "keys.json"
    key = create(path, "a", ["classify"])
    good = path.read_text()
    store = KeyStore(str(path), check_every_s=0)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        path.write_text(good[: len(good) // 2])  # an editor writing in place, caught halfway
        for _ in range(2):  # the second look finds the same broken file: no second log line
            with pytest.raises(NotReady):
                store.lookup(key)
        path.write_text(good)
        assert store.lookup(key).name == "a"
        path.unlink()
        with pytest.raises(NotReady):
            store.lookup(key)
        path.write_text(good)
        assert store.lookup(key).name == "a"
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING", "ERROR", "WARNING"]
    assert "JSONDecodeError" in caplog.records[0].getMessage()
    assert "FileNotFoundError" in caplog.records[2].getMessage()


def test_token_bucket_allows_burst_then_asks_to_wait():
    buckets = TokenBuckets(rate=1.0, burst=2)
    assert buckets.take("k") == 0 and buckets.take("k") == 0
    assert 0 < buckets.take("k") <= 1.0
    assert buckets.take("other") == 0
    assert buckets.take("fast", rate=1000, burst=1) == 0


@pytest.mark.parametrize("text,masked", [
    ("mail me at jane.doe+x@example.co.uk now", "mail me at [EMAIL] now"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
    ("call +44 20 7946 0958 today", "call [PHONE] today"),
    ("from 192.168.10.20 here", "from [IP] here"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [IBAN]"),
    ("a great film from 1999", "a great film from 1999"),
])
def test_redaction_masks_pii_and_keeps_ordinary_text(text, masked):
    assert redact(text) == masked


@pytest.fixture
def key_pair(tmp_path):
    private, public = tmp_path / "signing.pem", tmp_path / "verify.pem"
    assert artifact_main(["keygen", "--private-key", str(private), "--public-key", str(public)]) == 0
    return private, public


def test_keygen_writes_an_owner_only_private_key_and_never_overwrites(key_pair, tmp_path, capsys):
    private, public = key_pair
    assert oct(private.stat().st_mode)[-3:] == "600"
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    before = private.read_bytes()
    assert artifact_main(["keygen", "--private-key", str(private), "--public-key", str(tmp_path / "other.pem")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and private.read_bytes() == before


def test_signed_artifacts(tmp_path, monkeypatch, key_pair):
    private, public = key_pair
    monkeypatch.setenv(SIGNING_KEY_ENV, str(private))
    signed = make_artifact(tmp_path / "signed", random_init=TINY)
    assert len(base64.b64decode((signed / SIGNATURE).read_bytes())) == 64  # an Ed25519 signature
    monkeypatch.delenv(SIGNING_KEY_ENV)
    verify(signed, public)
    monkeypatch.setenv(VERIFY_KEY_ENV, str(public))  # the environment is the fallback for serving
    verify(signed)
    other = tmp_path / "other"
    other.mkdir()
    artifact_main(["keygen", "--private-key", str(other / "s.pem"), "--public-key", str(other / "v.pem")])
    with pytest.raises(ArtifactError, match="signature does not match"):
        verify(signed, other / "v.pem")
    unsigned = tmp_path / "unsigned"
    shutil.copytree(signed, unsigned)
    (unsigned / SIGNATURE).unlink()
    with pytest.raises(ArtifactError, match="unsigned artifact refused"):
        verify(unsigned)
    monkeypatch.delenv(VERIFY_KEY_ENV)
    verify(unsigned)  # no key configured: the manifest alone is checked
    manifest = json.loads((signed / "manifest.json").read_text())
    manifest["files"]["config.json"] = "0" * 64
    (signed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="signature does not match"):
        verify(signed, public)


def test_sign_and_verify_cli_for_a_release_step(tiny_artifact, tmp_path, key_pair, capsys):
    private, public = key_pair
    model = tmp_path / "model"
    shutil.copytree(tiny_artifact, model)
    assert artifact_main(["verify", "--model", str(model), "--public-key", str(public)]) == 1
    assert "unsigned artifact refused" in capsys.readouterr().err
    assert artifact_main(["sign", "--model", str(model), "--private-key", str(private)]) == 0
    assert artifact_main(["verify", "--model", str(model), "--public-key", str(public)]) == 0
    assert "checked signature and files" in capsys.readouterr().out
    (model / "config.json").write_text("{}")
    assert artifact_main(["sign", "--model", str(model), "--private-key", str(private)]) == 1  # signs only intact files
    assert "config.json: sha256 does not match" in capsys.readouterr().err


def test_serving_refuses_a_private_key_and_a_legacy_hmac_secret(tiny_artifact, key_pair, monkeypatch):
    private, public = key_pair
    with pytest.raises(KeyFileError, match="not a public key PEM"):
        verify(tiny_artifact, private)
    monkeypatch.setenv(LEGACY_KEY_ENV, "an-old-hmac-secret")
    with pytest.raises(KeyFileError, match="MODEL_SIGNING_KEY .* no longer read.*MODEL_VERIFY_KEY"):
        verify(tiny_artifact, public)
    assert artifact_main(["sign", "--model", str(tiny_artifact), "--private-key", str(private)]) == 2
