import json
import logging
import shutil

import pytest

from app.errors import NotReady
from app.keys import KeyStore, create, main as keys_main, revoke
from app.limits import TokenBuckets
from app.redact import redact
from train.artifact import SIGNATURE, SIGNING_KEY_ENV, ArtifactError, verify
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


def test_signed_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv(SIGNING_KEY_ENV, "secret-one")
    signed = make_artifact(tmp_path / "signed", random_init=TINY)
    assert (signed / SIGNATURE).exists()
    verify(signed)
    monkeypatch.setenv(SIGNING_KEY_ENV, "secret-two")
    with pytest.raises(ArtifactError, match="signature does not match"):
        verify(signed)
    monkeypatch.delenv(SIGNING_KEY_ENV)
    unsigned = tmp_path / "unsigned"
    shutil.copytree(signed, unsigned)
    (unsigned / SIGNATURE).unlink()
    verify(unsigned)  # no key configured: the manifest alone is checked
    monkeypatch.setenv(SIGNING_KEY_ENV, "secret-one")
    with pytest.raises(ArtifactError, match="unsigned artifact refused"):
        verify(unsigned)
    manifest = json.loads((signed / "manifest.json").read_text())
    manifest["files"]["config.json"] = "0" * 64
    (signed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="signature does not match"):
        verify(signed)
