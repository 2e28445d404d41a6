"""The Serve graph on a real local Ray cluster (loopback), called over real HTTP."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import requests
from ray import serve

from app.config import AppArgs
from app.errors import STATUS_TABLE
from tests.conftest import free_port, shipped_graph

pytestmark = pytest.mark.slow
# The tiny artifact keeps at most 32 tokens per text: 64 tokens are 2 full-length texts, so three
# long texts break the token cap.
LIMITS = {"max_items": 8, "max_text_chars": 500, "max_body_bytes": 4096, "max_request_tokens": 64}


@pytest.fixture(scope="module")
def url(tiny_artifact):
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = AppArgs(model=str(tiny_artifact), name="tiny", **LIMITS)
    serve.run(shipped_graph(args), name="classifier", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def post(url, body, raw=False):
    data = body if raw else json.dumps(body)
    return requests.post(f"{url}/v1/classify", data=data, headers={"content-type": "application/json"}, timeout=30)


def assert_error(response, status, kind, fragment=""):
    assert response.status_code == status, response.text
    assert STATUS_TABLE[kind] == status
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind
    assert fragment in body["error"]["message"]


def test_single_text(url):
    body = post(url, {"text": "the film was lovely"}).json()
    assert body["model"]["name"] == "tiny" and len(body["model"]["version"]) == 16
    (pred,) = body["predictions"]
    assert pred["label"] in {"negative", "positive"} and 0.5 <= pred["score"] <= 1
    assert len(pred["scores"]) == 1 and pred["scores"][0]["label"] == pred["label"]
    assert pred["truncated"] is False and pred["tokens"] == 6 and body["usage"] == {"tokens": 6}


def test_batch_keeps_input_order_and_top_k(url):
    texts = ["a", "a b c d e", "a b", "a b c d e f g h", "a b c"]
    body = post(url, {"texts": texts, "top_k": None}).json()
    assert [p["tokens"] for p in body["predictions"]] == [len(t.split()) + 2 for t in texts]
    for pred in body["predictions"]:
        scores = [s["score"] for s in pred["scores"]]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert len(post(url, {"text": "x", "top_k": 5}).json()["predictions"][0]["scores"]) == 2


def test_long_text_is_truncated_and_flagged_or_refused(url):
    long = "word " * 100
    pred = post(url, {"texts": ["short", long]}).json()["predictions"][1]
    assert pred["truncated"] is True and pred["tokens"] == 32
    assert_error(post(url, {"texts": ["short", long], "truncate": False}), 422, "validation_error",
                 "texts[1] has 102 tokens; the model takes at most 32")


@pytest.mark.parametrize("body,status,kind,fragment", [
    ("{not json", 400, "invalid_json", "not valid JSON"),
    (b"\xff\xfe{}", 400, "invalid_json", "not valid JSON"),
    ({"texts": ["x"] * 9}, 413, "payload_too_large", "`texts` may hold at most 8 items; got 9"),
    ({"text": "x" * 501}, 413, "payload_too_large", "text may hold at most 500 characters; got 501"),
    ('{"text": "x"' + " " * 5000 + "}", 413, "payload_too_large", "at most 4096 bytes"),
    ({"text": ""}, 422, "validation_error", "text: String should have at least 1 character"),
    ({"text": "  "}, 422, "validation_error", "text is empty"),
    ({"texts": ["ok", "   "]}, 422, "validation_error", "texts[1] is empty"),
    ({"text": 5}, 422, "validation_error", "text: Input should be a valid string"),
    ({"texts": "abc"}, 422, "validation_error", "texts: Input should be a valid list"),
    ({"text": "x", "top_k": 0}, 422, "validation_error", "top_k"),
    ({"text": "x", "colour": "red"}, 422, "validation_error", "colour: Extra inputs are not permitted"),
    ({"text": "x", "texts": ["y"]}, 422, "validation_error", "exactly one of"),
    ({}, 422, "validation_error", "exactly one of"),
    ([1, 2], 422, "validation_error", "valid dictionary"),
])
def test_bad_input_gets_its_status_and_body(url, body, status, kind, fragment):
    raw = isinstance(body, (str, bytes))
    assert_error(post(url, body, raw=raw), status, kind, fragment)


def test_unknown_route_and_method(url):
    assert_error(requests.get(f"{url}/v3/nothing", timeout=10), 404, "not_found")  # /v2/ is the OIP's (app/protocols)
    not_allowed = requests.get(f"{url}/v1/classify", timeout=10)
    assert_error(not_allowed, 405, "method_not_allowed")
    assert not_allowed.headers["Allow"] == "POST"


def test_health_readiness_model_info_and_docs(url, tiny_artifact):
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    info = requests.get(f"{url}/v1/model", timeout=10).json()
    assert info["labels"] == ["negative", "positive"] and info["max_length"] == 32
    spec = requests.get(f"{url}/openapi.json", timeout=10).json()
    assert "/v1/classify" in spec["paths"] and requests.get(f"{url}/docs", timeout=10).status_code == 200
    # The server is still serving after every bad request above.
    assert post(url, {"text": "still here"}).status_code == 200


def _stats(url):
    return requests.get(f"{url}/v1/stats", timeout=10).json()


def test_concurrent_requests_are_coalesced(url):
    before = _stats(url)
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda i: post(url, {"text": f"review number {i}"}), range(64)))
    assert all(r.status_code == 200 for r in responses)
    after = _stats(url)
    requests_made = after["ingress"]["requests"] - before["ingress"]["requests"]
    graph_calls = after["ingress"]["batches"] - before["ingress"]["batches"]
    assert requests_made == 64 and after["ingress"]["texts"] - before["ingress"]["texts"] == 64
    assert graph_calls < 64 / 2, f"{graph_calls} graph calls for 64 requests: not coalesced"


def test_refused_requests_never_reach_the_model(url):
    over_cap = {"texts": ["word " * 40] * 3}  # 3 x 32 kept tokens
    untruncatable = {"texts": ["fine", "word " * 40], "truncate": False}
    before = _stats(url)
    assert_error(post(url, over_cap), 413, "payload_too_large", "hold 96 tokens; a request may hold at most 64")
    assert_error(post(url, untruncatable), 422, "validation_error", "texts[1] has 42 tokens; the model takes at most 32")
    after = _stats(url)
    assert after["classifier"]["texts"] == before["classifier"]["texts"]
    # Mixed with accepted requests in coalesced batches, only the refused requests' rows are dropped.
    good = {"texts": ["a fine film", "a dull one"]}
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda body: post(url, body).status_code, [over_cap, untruncatable, good, good] * 8))
    assert statuses == [413, 422, 200, 200] * 8
    final = _stats(url)
    assert final["classifier"]["texts"] - after["classifier"]["texts"] == 16 * 2
    assert final["ingress"]["texts"] - after["ingress"]["texts"] == 16 * 2
    assert final["ingress"]["batches"] - after["ingress"]["batches"] < 32, "not coalesced"


def test_live_user_config_change_drops_no_request(url, tiny_artifact):
    args = AppArgs(model=str(tiny_artifact), name="tiny", **LIMITS)
    # Ingress parts of 2 texts: the 8-text request below could break the token cap, so it still
    # travels whole and is decided at once.
    new = {"Classifier": {"user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.002, "max_batch_tokens": 512}},
           "Ingress": {"user_config": {"max_batch_texts": 2, "batch_wait_timeout_s": 0.0, "max_concurrent_batches": 2}}}
    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(post, url, {"texts": [f"text {i}", "another one"]}) for i in range(40)]
        serve.run(shipped_graph(args, **new), name="classifier", route_prefix="/")
        pending += [pool.submit(post, url, {"texts": [f"text {i}", "again"]}) for i in range(40)]
        statuses = [f.result().status_code for f in pending]
    assert statuses == [200] * 80
    assert _stats(url)["classifier"]["max_batch_size"] == 4
    big = post(url, {"texts": [f"t {i}" for i in range(8)]}).json()
    assert [p["tokens"] for p in big["predictions"]] == [4] * 8 and big["usage"] == {"tokens": 32}
    before = _stats(url)["classifier"]["texts"]
    assert_error(post(url, {"texts": ["word " * 40] * 8}), 413, "payload_too_large", "hold 256 tokens")
    assert _stats(url)["classifier"]["texts"] == before


def test_runtime_switch_under_load_answers_every_request(url, tiny_artifact):
    from app.builder import config_options

    args = AppArgs(model=str(tiny_artifact), name="tiny", **LIMITS)
    texts = ["a fine film", "word " * 40, "dull", "an ending nobody asked for"]
    reference = post(url, {"texts": texts, "top_k": None}).json()["predictions"]
    shipped = config_options()["Classifier"]["user_config"]
    onnx = {"Classifier": {"user_config": {**shipped, "runtime": "onnx"}}}
    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(post, url, {"texts": [f"text {i}", "another one"]}) for i in range(40)]
        # Each replica builds the ONNX graph from the verified artifact (or its cache), warms it,
        # then swaps it in; requests keep flowing to the torch runtime meanwhile.
        serve.run(shipped_graph(args, **onnx), name="classifier", route_prefix="/")
        pending += [pool.submit(post, url, {"texts": [f"text {i}", "again"]}) for i in range(40)]
        statuses = [f.result().status_code for f in pending]
    assert statuses == [200] * 80
    stats = _stats(url)["classifier"]
    assert stats["runtime_onnx"] == stats["replicas"] == 2 and stats["runtime_torch"] == 0
    got = post(url, {"texts": texts, "top_k": None}).json()["predictions"]
    for ref, new in zip(reference, got):
        assert ref["label"] == new["label"]
        assert {s["label"]: s["score"] for s in ref["scores"]} == pytest.approx(
            {s["label"]: s["score"] for s in new["scores"]}, abs=1e-4)


def test_stats_sum_every_classifier_replica(url, tiny_artifact):
    args = AppArgs(model=str(tiny_artifact), name="tiny", **LIMITS)
    serve.run(shipped_graph(args), name="classifier", route_prefix="/")  # two classifier replicas, as shipped
    before = _stats(url)
    assert before["classifier"]["replicas"] == 2
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: post(url, {"texts": [f"review {i}", "and another"]}).status_code, range(48)))
    assert statuses == [200] * 48
    after = _stats(url)
    # Both replicas' counters are in the sum: the model saw every text the ingress sent, and both
    # replicas took a share of them.
    assert after["classifier"]["texts"] - before["classifier"]["texts"] == 96
    assert min(after["classifier"]["texts_by_replica"]) > 0
    assert after["ingress"]["texts"] - before["ingress"]["texts"] == 96
