"""The four interop protocols (app/protocols) called by their own clients, exactly as a user
would, against one real `serve run serve_config.yaml` (with app/serve.env, so HAProxy fronts the
graph) on the tiny artifact with API keys on: huggingface_hub's InferenceClient, tritonclient.http
(binary and JSON tensors), TEI's /predict over HTTP, and the kserve SDK from its own virtualenv."""
import gzip
import json
import os
import signal
import struct
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from app.keys import create
from tests.conftest import wait_ready
from tests.e2e.kserve_client import kserve_python
from tests.e2e.launch import serve_run

pytestmark = pytest.mark.slow
NAME = "tiny"
LIMITS = {"max_items": 8, "max_text_chars": 500, "max_body_bytes": 4096}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_artifact):
    tmp = tmp_path_factory.mktemp("interop")
    keys = tmp / "keys.json"
    key, admin = create(keys, "user", ["classify"]), create(keys, "ops", ["admin"])
    proc, url, port, _ = serve_run(tmp, tiny_artifact, {"name": NAME, "api_keys_file": str(keys), **LIMITS})
    try:
        wait_ready(url, proc)
        yield url, key, admin
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def reference(url, key, texts):
    """/v1/classify's scores for texts, every label: what every protocol must agree with."""
    body = requests.post(f"{url}/v1/classify", json={"texts": texts, "top_k": None}, headers=bearer(key), timeout=30)
    return [{s["label"]: s["score"] for s in p["scores"]} for p in body.json()["predictions"]]


# ----- Hugging Face Inference API -----
@pytest.fixture(scope="module")
def hf(server, tmp_path_factory):
    # Set before huggingface_hub is imported: no telemetry call to huggingface.co, no offline mode
    # (it blocks loopback calls too), and no token of this machine's user sent to our server.
    os.environ.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path_factory.mktemp("hf_home")))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN"):
        os.environ.pop(name, None)
    from huggingface_hub import InferenceClient

    url, key, _ = server
    return lambda **kw: InferenceClient(model=f"{url}/models/{NAME}", timeout=30, **({"token": key} | kw))


def test_hf_text_classification(server, hf):
    url, key, _ = server
    (ref,) = reference(url, key, ["I loved it"])
    out = hf().text_classification("I loved it", top_k=2, function_to_apply="softmax")
    assert isinstance(out, list) and len(out) == 2 and out[0].score >= out[1].score
    assert {o.label: o.score for o in out} == pytest.approx(ref, abs=1e-5)
    (top,) = hf().text_classification("I loved it", top_k=1)
    assert top.label == max(ref, key=ref.get)
    sig = hf().text_classification("I loved it", function_to_apply="sigmoid")
    raw = hf().text_classification("I loved it", function_to_apply="none")
    logits = {o.label: o.score for o in raw}
    assert {o.label: o.score for o in sig} == pytest.approx({k: 1 / (1 + np.exp(-v)) for k, v in logits.items()}, abs=1e-5)
    shifted = {k: np.exp(v - max(logits.values())) for k, v in logits.items()}
    assert ref == pytest.approx({k: v / sum(shifted.values()) for k, v in shifted.items()}, abs=1e-5)


def test_hf_errors_surface_the_server_message(hf):
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as err:
        hf().text_classification("   ")
    assert err.value.response.status_code == 422 and err.value.server_message == "inputs is empty"
    assert err.value.response.json() == {"error": "inputs is empty", "error_type": "validation_error"}
    with pytest.raises(HfHubHTTPError) as err:
        hf(token=None).text_classification("fine")
    assert err.value.response.status_code == 401 and "API key is required" in err.value.server_message


def test_hf_health_and_info(hf):
    client = hf(provider="hf-inference")
    assert client.health_check()
    info = client.get_endpoint_info()
    assert info["model_type"]["classifier"]["id2label"] == {"0": "negative", "1": "positive"}


# ----- Open Inference Protocol v2: tritonclient -----
@pytest.fixture(scope="module")
def triton(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server[0].removeprefix("http://"))
    yield client
    client.close()


def test_triton_readiness_and_metadata(server, triton):
    _, key, _ = server
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(NAME) and not triton.is_model_ready("other")
    meta = triton.get_model_metadata(NAME, headers=bearer(key))
    assert meta["parameters"]["labels"] == ["negative", "positive"] and meta["inputs"][0]["datatype"] == "BYTES"
    assert triton.get_server_metadata(headers=bearer(key))["extensions"] == ["binary_tensor_data", "classification", "parameters"]
    assert triton.is_model_ready(NAME, meta["versions"][0])


def test_triton_binary_and_json(server, triton):
    import tritonclient.http as httpclient

    url, key, _ = server
    texts = ["I loved it", "awful é"]
    ref = reference(url, key, texts)
    array = np.array(texts, dtype=object)
    binary = httpclient.InferInput("text", [2], "BYTES")
    binary.set_data_from_numpy(array)  # binary in, and binary_data_output: binary out
    res = triton.infer(NAME, [binary], headers=bearer(key))
    assert [x.decode() for x in res.as_numpy("label")] == [max(r, key=r.get) for r in ref]
    scores = res.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (2, 2)
    assert scores.ravel().tolist() == pytest.approx([r[label] for r in ref for label in ("negative", "positive")], abs=1e-5)
    v1 = requests.post(f"{url}/v1/classify", json={"texts": texts}, headers=bearer(key), timeout=30).json()["predictions"]
    assert res.as_numpy("tokens").tolist() == [p["tokens"] for p in v1] and res.as_numpy("truncated").tolist() == [False, False]

    plain = httpclient.InferInput("text", [2], "BYTES")
    plain.set_data_from_numpy(array, binary_data=False)
    outs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("label", "score")]
    res2 = triton.infer(NAME, [plain], outputs=outs, request_id="r1", parameters={"truncate": True}, headers=bearer(key))
    assert res2.get_response()["id"] == "r1" and res2.get_response()["model_name"] == NAME
    assert list(res2.as_numpy("label")) == [x.decode() for x in res.as_numpy("label")]
    assert res2.as_numpy("score").tolist() == pytest.approx(scores.max(axis=1).tolist(), abs=1e-5)

    top = triton.infer(NAME, [binary], headers=bearer(key),
                       outputs=[httpclient.InferRequestedOutput("scores", class_count=1)]).as_numpy("scores")
    value, index, label = top[0][0].decode().split(":")
    assert top.shape == (2, 1) and label == ["negative", "positive"][int(index)] == max(ref[0], key=ref[0].get)
    assert float(value) == pytest.approx(ref[0][label], abs=1e-5)


def test_triton_errors(server, triton):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    _, key, admin = server
    inp = httpclient.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(np.array(["fine"], dtype=object))
    cases = [("other", bearer(key), "404", "no route"), (NAME, {}, "401", "API key is required"),
             (NAME, bearer(admin), "403", "lacks the 'classify' scope")]
    for model, headers, status, message in cases:
        with pytest.raises(InferenceServerException) as err:
            triton.infer(model, [inp], headers=headers)
        assert err.value.status() == status and message in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        triton.infer(NAME, [inp], headers=bearer(key), outputs=[httpclient.InferRequestedOutput("logits")])
    assert err.value.status() == "400" and err.value.message() == f"unexpected inference output 'logits' for model '{NAME}'"


def v2(url, key, head: dict, tail: bytes = b"", declared=None, **headers):
    body = json.dumps(head).encode()
    length = str(len(body) if declared is None else declared)
    return requests.post(f"{url}/v2/models/{NAME}/infer", data=body + tail, timeout=30,
                         headers=bearer(key) | {"Inference-Header-Content-Length": length} | headers)


def element(text: bytes, declared=None) -> bytes:
    return struct.pack("<I", len(text) if declared is None else declared) + text


def binary_head(size: int, shape=(1,)) -> dict:
    return {"inputs": [{"name": "text", "shape": list(shape), "datatype": "BYTES", "parameters": {"binary_data_size": size}}]}


def test_v2_binary_request_by_hand(server):
    url, key, _ = server
    response = v2(url, key, binary_head(8), element(b"fine"))  # no Content-Type, as tritonclient sends
    assert response.status_code == 200 and response.json()["outputs"][0]["data"][0] in {"negative", "positive"}


@pytest.mark.parametrize("tail,size,declared,fragment", [
    (element(b"fine"), 99, None, "binary_data_size is 99 but 8 bytes follow"),
    (element(b"fine", 50), 8, None, "an element declares 50 bytes but 4 remain"),
    (element(b"fine") + b"\x01\x00", 10, None, "2 bytes left where a 4-byte length prefix was expected"),
    (element(b"\xff\xfe"), 6, None, "not valid UTF-8"),
    (element(b"fine"), 8, 10_000, "Inference-Header-Content-Length is 10000 but the body holds"),
    (element(b"fine"), 8, "12x", "must be a byte count"),
    (element(b"fine") * 2, 16, None, "shape [1] holds 1 elements; got 2"),
])
def test_v2_binary_lengths_are_checked_against_the_body(server, tail, size, declared, fragment):
    url, key, _ = server
    response = v2(url, key, binary_head(size), tail, declared)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and fragment in response.json()["error"]


def test_v2_gzip_and_body_limit(server):
    url, key, _ = server
    body = json.dumps({"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]}).encode()
    response = requests.post(f"{url}/v2/models/{NAME}/infer", data=gzip.compress(body), timeout=30,
                             headers=bearer(key) | {"Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.json()["outputs"][0]["shape"] == [1]
    bomb = json.dumps({"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["x" * 10_000]}]}).encode()
    response = requests.post(f"{url}/v2/models/{NAME}/infer", data=gzip.compress(bomb), timeout=30,
                             headers=bearer(key) | {"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "at most 4096 bytes" in response.json()["error"]


# ----- TEI -----
def predict(url, key, body):
    return requests.post(f"{url}/predict", json=body, headers=bearer(key), timeout=30)


def test_tei_predict_shapes(server):
    url, key, _ = server
    ref = reference(url, key, ["I loved it", "awful"])
    single = predict(url, key, {"inputs": "I loved it"}).json()
    assert [s["label"] for s in single] == sorted(ref[0], key=ref[0].get, reverse=True)
    assert predict(url, key, {"inputs": ["I loved it"]}).json() == single
    batch = predict(url, key, {"inputs": [["I loved it"], ["awful"]], "truncate": None}).json()
    assert [{s["label"]: s["score"] for s in row} for row in batch] == [pytest.approx(r, abs=1e-5) for r in ref]
    raw = predict(url, key, {"inputs": "I loved it", "raw_scores": True}).json()
    assert {s["label"]: s["score"] for s in raw} != pytest.approx(ref[0], abs=1e-3)  # logits, not probabilities
    info = requests.get(f"{url}/info", headers=bearer(key), timeout=30).json()
    assert info["model_type"]["classifier"]["label2id"] == {"negative": 0, "positive": 1}


@pytest.mark.parametrize("body,status,kind,fragment", [
    ({"inputs": ["a", "b"]}, 422, "Validation", "sentence pairs are not supported by this model"),
    ({"inputs": [["a"], ["b", "c"]]}, 422, "Validation", "sentence pairs are not supported"),
    ({"inputs": ["a", "b", "c"]}, 422, "Validation", "invalid length 3"),
    ({"inputs": " "}, 400, "Empty", "inputs is empty"),
    ({"inputs": [["a"]] * 9}, 422, "Validation", "`inputs` may hold at most 8 items; got 9"),
    ({"inputs": "a " * 100, "truncate": False}, 422, "Validation", "the model takes at most 32"),
    ({"inputs": "a", "truncation_direction": "Left"}, 422, "Validation", "Left is not supported"),
    ({"inputs": "x" * 5000}, 413, "Validation", "at most 4096 bytes"),
])
def test_tei_errors(server, body, status, kind, fragment):
    url, key, _ = server
    response = predict(url, key, body)
    assert response.status_code == status, response.text
    assert response.json()["error_type"] == kind and fragment in response.json()["error"]


# ----- KServe v1 (and v2) -----
def test_kserve_v1_over_http(server):
    url, key, admin = server
    assert requests.get(url, timeout=30).json() == {"status": "alive"}
    assert requests.get(f"{url}/v1/models/{NAME}", timeout=30).json() == {"name": NAME, "ready": True}
    body = requests.post(f"{url}/v1/models/{NAME}:predict", headers=bearer(key), timeout=30,
                         json={"instances": ["I loved it", {"text": "awful"}], "parameters": {"top_k": None}}).json()
    assert [{s["label"]: s["score"] for s in p["scores"]} for p in body["predictions"]] == \
        [pytest.approx(r, abs=1e-5) for r in reference(url, key, ["I loved it", "awful"])]
    for payload, status in [({"instances": []}, 400), ({"instances": [""]}, 400), ({"instances": ["x"] * 9}, 413)]:
        response = requests.post(f"{url}/v1/models/{NAME}:predict", json=payload, headers=bearer(key), timeout=30)
        assert response.status_code == status and set(response.json()) == {"error"}, response.text
    response = requests.post(f"{url}/v1/models/{NAME}:predict", json={"instances": ["x"]}, headers=bearer(admin), timeout=30)
    assert response.status_code == 403 and response.json() == {"error": "this key lacks the 'classify' scope"}
    assert requests.post(f"{url}/v1/models/other:predict", json={"instances": ["x"]}, timeout=30).status_code == 404


KSERVE_SCRIPT = """
import asyncio, json, sys
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
base, key, name = sys.argv[1:4]
H = lambda: {"Authorization": f"Bearer {key}"}  # the SDK writes into the dict it is given

async def run():
    out = {}
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    out["v2"] = [await v2.is_server_live(base), await v2.is_server_ready(base), await v2.is_model_ready(base, name, headers=H())]
    req = InferRequest(model_name=name, infer_inputs=[InferInput("text", [2], "BYTES", data=["I loved it", "awful"])])
    res = await v2.infer(base, req, model_name=name, headers=H())
    out["v2_infer"] = [res.model_name, list(res.get_output_by_name("label").data)]
    await v2.close()
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=30))
    out["v1"] = [await v1.is_server_live(base), await v1.is_model_ready(base, name, headers=H())]
    out["v1_infer"] = await v1.infer(base, {"instances": ["I loved it", "awful"]}, model_name=name, headers=H())
    await v1.close()
    print(json.dumps(out))
asyncio.run(run())
"""


def test_kserve_sdk(server):
    url, key, _ = server
    python = kserve_python()  # skips, saying why, only when the package index cannot be reached
    run = subprocess.run([str(python), "-c", KSERVE_SCRIPT, url, key, NAME], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    labels = [max(r, key=r.get) for r in reference(url, key, ["I loved it", "awful"])]
    assert out["v2"] == [True, True, True] and out["v2_infer"] == [NAME, labels]
    assert out["v1"] == [True, True] and [p["label"] for p in out["v1_infer"]["predictions"]] == labels


# ----- shared -----
def test_every_inference_route_needs_the_classify_scope(server):
    url, _, admin = server
    routes = {f"/models/{NAME}": (401, "error"), "/predict": (401, "error"), f"/v1/models/{NAME}:predict": (401, "error"),
              f"/v2/models/{NAME}/infer": (401, "error"), f"/v2/models/{NAME}": (401, "error"), "/info": (401, "error")}
    for path, (status, field) in routes.items():
        method = requests.get if path in (f"/v2/models/{NAME}", "/info") else requests.post
        response = method(f"{url}{path}", json={"inputs": "x"}, timeout=30)
        assert response.status_code == status and isinstance(response.json()[field], str), (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        response = method(f"{url}{path}", json={"inputs": "x"}, headers=bearer(admin), timeout=30)
        assert response.status_code == 403, (path, response.text)


def test_openapi_lists_the_json_routes(server):
    url, key, _ = server
    paths = requests.get(f"{url}/openapi.json", headers=bearer(key), timeout=30).json()["paths"]
    assert {f"/models/{NAME}", "/predict", "/info", f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer",
            "/v2/health/ready", "/v1/classify"} <= set(paths)


def test_requests_of_every_protocol_share_graph_calls(server):
    """24 requests at once, 6 per protocol: if each protocol (or request) had its own path to the
    graph there would be one graph call per request; the one coalescer gathers them."""
    url, key, admin = server
    calls = [(f"/models/{NAME}", {"inputs": "fine"}), ("/predict", {"inputs": "fine"}),
             (f"/v1/models/{NAME}:predict", {"instances": ["fine"]}),
             (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]})]
    before = requests.get(f"{url}/v1/stats", headers=bearer(admin), timeout=30).json()["ingress"]
    barrier = threading.Barrier(24)

    def call(path, body):
        barrier.wait()
        return requests.post(f"{url}{path}", json=body, headers=bearer(key), timeout=30).status_code

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda c: call(*c), calls * 6))
    after = requests.get(f"{url}/v1/stats", headers=bearer(admin), timeout=30).json()["ingress"]
    assert statuses == [200] * 24
    assert after["requests"] - before["requests"] == 24 and after["texts"] - before["texts"] == 24
    assert after["batches"] - before["batches"] < 24
