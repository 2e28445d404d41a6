"""Shared fixtures: small data files, a tiny random-BERT artifact built offline, free ports."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Keep every Ray cluster the tests start on loopback: with this, Ray uses 127.0.0.1 as the node
# address instead of the machine's interface address. Read when ray is first imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# A suite started in the background of a non-interactive shell (`cmd &` in a script) inherits
# SIGINT ignored, and so does every `serve run` it starts: the e2e tests' Ctrl-C then stopped
# nothing. A Python handler here is reset to the default in each child, as under a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3(bucket: str, **extra_env: str):
    """A real S3-compatible server (moto) on loopback holding an empty bucket; its endpoint and test
    credentials (and extra_env) are in os.environ meanwhile, so a Ray started inside inherits them.
    Yields a boto3 S3 client."""
    import boto3

    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", **extra_env}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for _ in range(100):
            try:
                boto3.client("s3").create_bucket(Bucket=bucket)
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        yield boto3.client("s3")
    finally:
        proc.terminate()
        proc.wait(10)
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def wait_ready(url: str, proc, timeout: float = 300) -> float:
    """Poll url/readyz until 200 while proc runs; return the seconds it took."""
    import time

    import requests

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:  # not listening yet, or still deploying
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def make_artifact(out: Path, base_model: str = "all-MiniLM-L6-v2", random_init: dict | None = None,
                  labels=("negative", "positive"), max_length: int = 32, multi_label: bool = False,
                  calibration: dict | None = None) -> Path:
    """An exported artifact without a training run: base weights (or random ones) and a fresh head;
    calibration: calibration.json's content (a temperature, or per-label thresholds)."""
    import torch

    from train.artifact import export
    from train.model import build

    torch.manual_seed(0)
    model, tokenizer = build(base_model, list(labels), random_init, multi_label)
    config = {"base_model": base_model, "max_length": max_length, "labels": list(labels)}
    metrics = {"validation": {"accuracy": 0.0}, "note": "untrained test artifact"}
    export(model, tokenizer, out, config, metrics, calibration=calibration)
    return out


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("tiny") / "model", random_init=TINY)


@pytest.fixture(scope="session")
def sentiment_csv() -> Path:
    return FIXTURES / "sentiment.csv"


def shipped_graph(args, **overrides: dict):
    """compose() with serve_config.yaml's deployment options, as `serve run` starts the graph, so
    the tests run what ships; `overrides` replace whole option keys per deployment. CPU shares stay
    as shipped: the test clusters have the 2 CPUs the config is sized for (tests/unit/test_config.py
    checks the graph fits them at its minimum replicas)."""
    from app.builder import compose, config_options

    options = config_options()
    for name, extra in overrides.items():
        options[name] = options[name] | extra
    return compose(args, **options)
