"""Models through S3: train export (signed) -> upload -> serve from s3:// with the public key ->
classify, against a real S3-compatible server (moto) on loopback; and what a writer to the bucket
without the signing key cannot do to a serving node."""
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import ray
import requests
from ray import serve

from app.artifact_source import local_artifact
from app.config import AppArgs
from tests.conftest import free_port, moto_s3, shipped_graph
from train import signing
from train.artifact import MANIFEST, SIGNATURE, ArtifactError, sha256_file, sign
from train.config import load_config
from train.run import fit

pytestmark = pytest.mark.slow
BUCKET = "models"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    # The server's settings are in the environment before ray.init: Ray's workers inherit them.
    with moto_s3(BUCKET, MODEL_CACHE_DIR=str(tmp_path_factory.mktemp("cache"))) as client:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False, log_to_driver=False)
        try:
            yield client
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The release key pair, and an attacker's who can write to the bucket but lacks the real key."""
    root = tmp_path_factory.mktemp("keys")
    signing.generate(root / "signing.pem", root / "verify.pem")
    signing.generate(root / "attacker.pem", root / "attacker.pub")
    return root


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _upload(s3, local: Path, prefix: str) -> None:
    for path in local.iterdir():
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")


def test_train_to_s3_then_serve_from_s3(s3, keys, sentiment_csv, monkeypatch):
    cfg = load_config("tiny", {"data": str(sentiment_csv)})
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, str(keys / "signing.pem"))  # training signs
    location, version, _ = fit(cfg, f"s3://{BUCKET}/runs/demo")
    assert location == f"s3://{BUCKET}/runs/demo/model"
    keys_in_bucket = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/demo/")["Contents"]}
    assert {"runs/demo/model/model.safetensors", "runs/demo/model/manifest.sig"} <= keys_in_bucket
    assert any("/ray_train/run-" in k for k in keys_in_bucket)

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # Every stage fetches and verifies the artifact with the public key only.
    args = AppArgs(model=location, verify_key_file=str(keys / "verify.pem"))
    serve.run(shipped_graph(args), name="classifier", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    body = requests.post(f"{url}/v1/classify", json={"texts": ["the acting was superb", "the plot was awful"]},
                         timeout=30).json()
    assert [p["label"] for p in body["predictions"]] == ["positive", "negative"]
    assert body["model"]["version"] == version[:16]


def test_tampered_artifact_in_s3_is_refused(s3, tiny_artifact):
    _upload(s3, tiny_artifact, "tampered")
    s3.put_object(Bucket=BUCKET, Key="tampered/config.json", Body=b'{"id2label": {"0": "x", "1": "y"}}')
    cache = Path(os.environ["MODEL_CACHE_DIR"])
    before = _tree(cache)
    with pytest.raises(ArtifactError, match="config.json: sha256 does not match"):
        local_artifact(f"s3://{BUCKET}/tampered")
    assert _tree(cache) == before  # checked in a temp dir, never renamed into the cache


@pytest.mark.parametrize("hostile", ["../escape", "absolute"])
def test_s3_manifest_naming_a_path_outside_the_cache_is_refused(s3, tiny_artifact, tmp_path, hostile):
    prefix = f"hostile-{hostile.strip('./')}"
    name = str(tmp_path / "planted") if hostile == "absolute" else hostile
    payload = tmp_path / "payload"
    payload.write_text("attacker's bytes")
    manifest = json.loads((tiny_artifact / MANIFEST).read_text())
    manifest["files"][name] = sha256_file(payload)
    _upload(s3, tiny_artifact, prefix)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{MANIFEST}", Body=json.dumps(manifest).encode())
    s3.upload_file(str(payload), BUCKET, "escape")  # where '../escape' would be read from
    cache = Path(os.environ["MODEL_CACHE_DIR"])
    before, around = _tree(cache), _tree(cache.parent)
    with pytest.raises(ArtifactError, match=f"not a valid manifest: unsafe file name {re.escape(repr(name))}"):
        local_artifact(f"s3://{BUCKET}/{prefix}")
    assert _tree(cache) == before and _tree(cache.parent) == around
    assert not (tmp_path / "planted").exists()


def test_s3_tampered_signature_is_refused_before_any_weight_is_downloaded(s3, tiny_artifact, keys, tmp_path):
    forged = tmp_path / "forged"
    shutil.copytree(tiny_artifact, forged)
    (forged / "config.json").write_text('{"id2label": {"0": "x", "1": "y"}}')
    forged_manifest = json.loads((forged / MANIFEST).read_text())
    forged_manifest["files"]["config.json"] = sha256_file(forged / "config.json")
    (forged / MANIFEST).write_text(json.dumps(forged_manifest))
    sign(forged, keys / "attacker.pem")
    # Only the manifest and signature are in the bucket: a download attempt would fail on a missing
    # object, not on the signature.
    for name in (MANIFEST, SIGNATURE):
        s3.upload_file(str(forged / name), BUCKET, f"forged/{name}")
    cache = Path(os.environ["MODEL_CACHE_DIR"])
    before = _tree(cache)
    with pytest.raises(ArtifactError, match="manifest.sig: signature does not match"):
        local_artifact(f"s3://{BUCKET}/forged", str(keys / "verify.pem"))
    s3.delete_object(Bucket=BUCKET, Key=f"forged/{SIGNATURE}")
    with pytest.raises(ArtifactError, match="unsigned artifact refused"):
        local_artifact(f"s3://{BUCKET}/forged", str(keys / "verify.pem"))
    assert _tree(cache) == before
