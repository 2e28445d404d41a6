"""Models through S3: train export -> upload -> serve from s3:// -> classify, against a real
S3-compatible server (moto) on loopback."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import ray
import requests
from ray import serve

from app.artifact_source import local_artifact
from app.config import AppArgs
from tests.conftest import free_port, shipped_graph
from train.artifact import ArtifactError, read_info
from train.config import load_config
from train.run import fit

pytestmark = pytest.mark.slow
BUCKET = "models"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # before ray.init: Ray's workers inherit the driver's environment
    try:
        for _ in range(100):
            try:
                boto3.client("s3").create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False, log_to_driver=False)
        yield boto3.client("s3")
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        proc.terminate()
        proc.wait(10)
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def test_train_to_s3_then_serve_from_s3(s3, sentiment_csv):
    cfg = load_config("tiny", {"data": str(sentiment_csv)})
    location, version, _ = fit(cfg, f"s3://{BUCKET}/runs/demo")
    assert location == f"s3://{BUCKET}/runs/demo/model"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/demo/")["Contents"]}
    assert "runs/demo/model/model.safetensors" in keys and any("/ray_train/run-" in k for k in keys)

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(shipped_graph(AppArgs(model=location)), name="classifier", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    body = requests.post(f"{url}/v1/classify", json={"texts": ["the acting was superb", "the plot was awful"]},
                         timeout=30).json()
    assert [p["label"] for p in body["predictions"]] == ["positive", "negative"]
    assert body["model"]["version"] == version[:16]


def test_tampered_artifact_in_s3_is_refused(s3, tiny_artifact, tmp_path):
    for path in tiny_artifact.iterdir():
        s3.upload_file(str(path), BUCKET, f"tampered/{path.name}")
    s3.put_object(Bucket=BUCKET, Key="tampered/config.json", Body=b'{"id2label": {"0": "x", "1": "y"}}')
    local = local_artifact(f"s3://{BUCKET}/tampered")
    with pytest.raises(ArtifactError, match="config.json: sha256 does not match"):
        read_info(local)
    shutil.rmtree(local)
