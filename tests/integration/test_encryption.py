"""An encrypted artifact served by the real graph on loopback, fetched through the model cache:
refused under a wrong key (/readyz stays 503), served under the right one, and no plaintext
weights anywhere on disk afterwards (the cache, the replicas' temp dir, Ray's session dir)."""
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import ray
import requests
from ray import serve

from app.artifact_source import CACHE_ENV
from app.config import AppArgs
from train.artifact import WEIGHTS, read_info
from train.artifact_encryption import encrypt_artifact
from train.encryption import KEY_FILE_ENV, generate_kek
from train.evaluate import predict
from tests.conftest import TINY, free_port, make_artifact, shipped_graph

pytestmark = pytest.mark.slow
TEXTS = ["a lovely film", "dreadful plot and boring ending", "fine", "great script, awful acting", "the end"]


def _key(path: Path) -> str:
    return json.loads(path.read_text())["key"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    made = tmp_path_factory.mktemp("encrypted")
    # Large initial weights make the labels depend on the text (tests/unit/test_evaluate.py).
    plain = make_artifact(made / "plain", random_init={**TINY, "initializer_range": 0.5},
                          labels=("negative", "neutral", "positive"))
    key, wrong = made / "k1.key", made / "impostor.key"
    generate_kek(key, "k1")
    generate_kek(wrong, "k1")  # the right key id, other bytes
    bucket = made / "bucket" / "model"
    encrypt_artifact(plain, key, bucket)
    # Short, private places for everything the cluster writes (Ray's socket paths have a length limit).
    root = Path(tempfile.mkdtemp(prefix="rtc-enc-", dir="/tmp"))
    dirs = {name: root / name for name in ("cache", "tmp", "ray")}
    for d in dirs.values():
        d.mkdir()
    env = {CACHE_ENV: str(dirs["cache"]), "TMPDIR": str(dirs["tmp"])}
    saved = {k: os.environ.get(k) for k in (*env, KEY_FILE_ENV)}
    os.environ.pop(KEY_FILE_ENV, None)
    os.environ.update(env)  # the raylet, hence every replica, inherits them
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=str(dirs["ray"]),
             configure_logging=False, log_to_driver=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    uri = f"file://{bucket}"
    started = time.time()
    try:
        # First under the wrong key: the Classifier must refuse to start and the graph stay unready.
        with pytest.raises(RuntimeError) as failed:
            serve.run(shipped_graph(AppArgs(model=uri, model_key_file=str(wrong)),
                                    Classifier={"max_constructor_retry_count": 1}), name="classifier", route_prefix="/")
        readyz = []
        for _ in range(40):
            try:
                readyz.append(requests.get(f"{url}/readyz", timeout=10))
            except requests.ConnectionError:  # the proxy may not route yet
                time.sleep(0.25)
                continue
            if len(readyz) == 3:
                break
        status = serve.status().applications["classifier"]
        message = f"{failed.value}\n{status.deployments['Classifier'].message}"
        serve.delete("classifier")
        refused = {"message": message, "readyz": readyz}
        serve.run(shipped_graph(AppArgs(model=uri, model_key_file=str(key))), name="classifier", route_prefix="/")
        yield {"url": url, "plain": plain, "bucket": bucket, "keys": (key, wrong), "dirs": dirs, "refused": refused,
               "started": started}
    finally:
        serve.shutdown()
        ray.shutdown()
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        shutil.rmtree(root, ignore_errors=True)


def test_a_wrong_key_keeps_the_replica_down_and_readyz_503_and_says_why_without_the_key(served):
    refused, (key, wrong) = served["refused"], served["keys"]
    assert "authentication failed unwrapping the data key" in refused["message"]
    assert refused["readyz"] and all(r.status_code == 503 for r in refused["readyz"])
    assert refused["readyz"][0].json()["error"]["type"] == "not_ready"
    logs = served["dirs"]["ray"] / "session_latest" / "logs"
    text = "".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file() and p.suffix in (".log", ".err", ".out"))
    assert "authentication failed unwrapping the data key" in text
    for secret in (_key(key), _key(wrong)):
        assert secret not in text and secret not in refused["message"]


def test_the_encrypted_artifact_answers_with_its_labels_and_version(served):
    response = requests.post(f"{served['url']}/v1/classify", json={"texts": TEXTS}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == read_info(served["bucket"]).version[:16]
    expected = predict(read_info(served["plain"]), TEXTS)  # the plaintext model, loaded here
    assert [p["label"] for p in body["predictions"]] == expected and len(set(expected)) > 1
    model = requests.get(f"{served['url']}/v1/model", timeout=10).json()
    assert model["labels"] == ["negative", "neutral", "positive"]


def _files(top: Path, since: float = 0.0):
    for path in (top.rglob("*") if top.is_dir() else []):
        if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since:
            yield path


def _holding(paths, window: bytes) -> list[Path]:
    found = []
    for path in paths:
        with open(path, "rb") as fh:
            if window in fh.read():
                found.append(path)
    return found


def test_no_plaintext_weights_at_rest_after_serving(served):
    assert requests.post(f"{served['url']}/v1/classify", json={"text": "answered"}, timeout=60).status_code == 200
    weights = (served["plain"] / WEIGHTS).read_bytes()
    window = weights[len(weights) // 2: len(weights) // 2 + 4096]
    assert _holding(_files(served["plain"]), window) == [served["plain"] / WEIGHTS]  # the scan can find it
    dirs = served["dirs"]
    assert list(dirs["cache"].iterdir()), "the artifact did not go through the model cache"
    own = [p for top in (*dirs.values(), served["bucket"]) for p in _files(top)]
    assert any(p.name.startswith("replica_classifier_Classifier") for p in own)  # the session dir is Ray's
    # Shared places other processes write to: only files written since this module started.
    shared = [p for top in [Path.home() / ".cache" / "huggingface", *Path("/tmp").glob("torchinductor_*")]
              for p in _files(top, served["started"])]
    assert [p for p in own if p.name.endswith(".safetensors")] == []
    assert _holding(own + shared, window) == []
