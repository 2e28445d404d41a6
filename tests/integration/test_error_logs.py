"""An unexpected error answers the one JSON 500 body, and the request text that caused it reaches
no log file of the cluster.

No route of the real graph raises an unexpected error on demand, so this serves a test-only graph
over real Serve and HTTP: a FastAPI app with the ingress's own error installation
(`errors.install`, as app/ingress.py does) and a route that raises ValueError quoting the text it
was sent, as a downstream error message might.
"""
import time
import uuid
from pathlib import Path

import pytest
import ray
import requests
from fastapi import FastAPI, Request
from ray import serve

from app import errors
from tests.conftest import free_port

pytestmark = pytest.mark.slow
api = FastAPI()
errors.install(api)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Quoting:
    @api.post("/quote")
    async def quote(self, request: Request) -> dict:
        text = (await request.json())["text"]
        raise ValueError(f"cannot handle {text!r}")


@pytest.fixture(scope="module")
def served():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Quoting.bind(), name="quoting", route_prefix="/")
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    yield f"http://127.0.0.1:{port}", logs
    serve.shutdown()
    ray.shutdown()


def _log_files(logs: Path) -> dict[Path, str]:
    return {p: p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()}


def test_unexpected_error_answers_500_and_logs_no_request_text(served):
    url, logs = served
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    response = requests.post(f"{url}/quote", json={"text": f"my card is {sentinel}"}, timeout=30)
    assert response.status_code == 500
    assert response.json() == {"error": {"type": "internal_error", "message": "internal error"}}
    assert sentinel not in response.text

    # The error is logged (its type and the route's frame) in the replica's own log file: that
    # line is waited for, so the files below are the ones the error was written to.
    deadline = time.monotonic() + 30
    while True:
        files = _log_files(logs)
        logged = [p for p, text in files.items()
                  if p.name.startswith("replica_quoting_Quoting") and "ValueError" in text and "in quote" in text]
        if logged or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert logged, sorted(p.name for p in files)
    leaked = sorted(str(p.relative_to(logs)) for p, text in files.items() if sentinel in text)
    assert not leaked, leaked
