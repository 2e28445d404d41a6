"""POST /v1/explain on the real graph (loopback Ray, real HTTP): the answer, its limits, the scope."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import requests
from ray import serve

from app.config import AppArgs
from app.keys import create
from tests.conftest import free_port, shipped_graph
from tests.integration.test_serve import assert_error

pytestmark = pytest.mark.slow
# The tiny artifact keeps at most 32 tokens; 512 step-tokens are 16 steps of 32 tokens. The explain
# bucket is large but never refills, so one key can be emptied quickly. The timeout covers the
# Explainer's cold start from zero replicas on a busy 2-core machine.
LIMITS = {"explain_default_steps": 8, "explain_max_steps": 64, "explain_max_step_tokens": 512,
          "explain_timeout_s": 120.0, "explain_rate_limit_per_s": 0.001, "explain_rate_limit_burst": 30}
TEXT = "the film was lovely, truly lovely"  # 9 tokens with [CLS] and [SEP]


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.json"
    names = {"both": ["classify", "explain"], "explain": ["explain"], "classify": ["classify", "admin"],
             "flood": ["explain"], "limited": ["explain"]}
    keys = {name: create(keys_file, name, scopes) for name, scopes in names.items()}
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = AppArgs(model=str(tiny_artifact), name="tiny", api_keys_file=str(keys_file), **LIMITS)
    # One step per forward pass (batch_tokens below one row) makes an explanation long enough,
    # even on the tiny model, for concurrent requests to fill the Explainer's short queue.
    serve.run(shipped_graph(args, Explainer={"max_queued_requests": 2,
                                             "user_config": {"batch_tokens": 8, "torch_threads": 1}}),
              name="classifier", route_prefix="/")
    yield f"http://127.0.0.1:{port}", keys
    serve.shutdown()
    ray.shutdown()


def explain(url, key, body, path="/v1/explain"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(url + path, json=body, headers=headers, timeout=180)


def test_explanation_of_the_predicted_label(server):
    url, keys = server
    response = explain(url, keys["both"], {"text": TEXT})  # the first one also waits for a replica
    assert response.status_code == 200, response.text
    body = response.json()
    classified = explain(url, keys["both"], {"text": TEXT}, "/v1/classify").json()["predictions"][0]
    assert body["prediction"]["label"] == body["target"] == classified["label"]
    assert body["prediction"]["score"] == pytest.approx(classified["score"], abs=1e-5)
    assert body["score"] == body["prediction"]["score"] and body["method"] == "integrated_gradients"
    assert body["steps"] == 8 and body["baseline"]["kind"] == "pad" and body["truncated"] is False
    words = body["attributions"]
    assert [w["text"] for w in words] == ["the", "film", "was", "lovely", ",", "truly", "lovely"]
    assert all(TEXT[w["start"]: w["end"]] == w["text"] for w in words)
    c = body["completeness"]
    assert c["sum"] == pytest.approx(sum(w["attribution"] for w in words), abs=1e-9)
    assert c["expected"] == pytest.approx(body["score"] - body["baseline"]["score"], abs=1e-9)
    assert body["usage"]["tokens"] == 9 and body["usage"]["forward_rows"] == 10 and body["usage"]["cpu_ms"] > 0
    assert body["model"]["name"] == "tiny" and len(body["model"]["version"]) == 16


def test_another_label_and_occlusion(server):
    url, keys = server
    body = explain(url, keys["explain"], {"text": TEXT, "target": "negative", "method": "occlusion"}).json()
    assert body["target"] == "negative" and body["steps"] is None and body["completeness"] is None
    assert body["usage"]["forward_rows"] == 1 + len(body["attributions"]) == 8


@pytest.mark.parametrize("body,status,kind,fragment", [
    ({"text": "word " * 40, "steps": 32}, 413, "payload_too_large",
     "integrated_gradients of 32 tokens at 32 steps is 32 x 32 = 1024 step-tokens; at most 512"),
    ({"text": TEXT, "steps": 65}, 422, "validation_error", "steps may be at most 64; got 65"),
    ({"text": TEXT, "steps": 0}, 422, "validation_error", "steps: Input should be greater than or equal to 1"),
    ({"text": TEXT, "target": "neutral"}, 422, "validation_error",
     "target 'neutral' is not a label of this model; labels: ['negative', 'positive']"),
    ({"text": TEXT, "method": "lime"}, 422, "validation_error", "method: Input should be"),
    ({"text": "  "}, 422, "validation_error", "text is empty"),
    ({"texts": [TEXT]}, 422, "validation_error", "text: Field required"),
])
def test_limits_answer_before_any_work(server, body, status, kind, fragment):
    url, keys = server
    assert_error(explain(url, keys["explain"], body), status, kind, fragment)


def test_explain_scope_is_enforced_both_ways(server):
    url, keys = server
    assert_error(explain(url, None, {"text": TEXT}), 401, "unauthorized")
    assert_error(explain(url, keys["classify"], {"text": TEXT}), 403, "forbidden", "'explain' scope")
    assert_error(explain(url, keys["explain"], {"text": TEXT}, "/v1/classify"), 403, "forbidden", "'classify' scope")
    spec = requests.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {keys['classify']}"}, timeout=10)
    assert "/v1/explain" in spec.json()["paths"]


def test_explain_bucket_is_its_own(server):
    url, keys = server
    # Refused bodies still take a token: the bucket is charged before the body is read.
    statuses = [explain(url, keys["limited"], {"text": TEXT, "steps": 999}).status_code for _ in range(31)]
    assert statuses[:30] == [422] * 30
    limited = explain(url, keys["limited"], {"text": TEXT})
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1


def test_full_queue_answers_503_and_classify_is_untouched(server):
    url, keys = server
    with ThreadPoolExecutor(24) as pool:
        flood = [pool.submit(explain, url, keys["flood"], {"text": "word " * 10, "steps": 40}) for _ in range(16)]
        classify = [pool.submit(explain, url, keys["both"], {"text": f"review {i}"}, "/v1/classify") for i in range(24)]
        explained, classified = [f.result() for f in flood], [f.result() for f in classify]
    assert [r.status_code for r in classified] == [200] * 24
    statuses = sorted(r.status_code for r in explained)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 1, statuses
    shed = next(r for r in explained if r.status_code == 503)
    assert_error(shed, 503, "overloaded", "the explainer is at capacity")
    assert int(shed.headers["Retry-After"]) >= 1
