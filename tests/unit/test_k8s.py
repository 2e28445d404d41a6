"""The k8s manifests: KubeRay and Kubernetes schema validation, one source of truth, and what the
schemas cannot see (placement, the network policy, pod security, key wiring)."""
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec
from ray.serve.schema import DeploymentSchema, HTTPOptionsSchema

from app.serve_configs import OVERLAY, RAY_SERVICE, SOURCE, Overlay, main as serve_configs, read_overlay, serve_env
from train.__main__ import parser as train_parser

ROOT = Path(__file__).parents[2]
# shared/ sits beside the checkout (CI, /work/main) or beside the folder of worktrees.
VALIDATOR = next((p / "shared/kuberay/validate.py" for p in ROOT.parents if (p / "shared/kuberay").is_dir()),
                 ROOT.parent / "shared/kuberay/validate.py")
MANIFESTS = sorted(p for p in (ROOT / "k8s").glob("*.yaml") if p != OVERLAY)
K8S_VERSION = "1.33"  # the oldest Kubernetes release the manifests are checked against
CPU_STAGE = "cpu_stage"
SERVE_PORT, DASHBOARD_PORT = 8000, 8265
MONITORING_ONLY_PORTS = {9101, 8404, 8080}  # HAProxy metrics and stats, Ray metrics
SECURE = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}


def docs():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())]


def by_kind(kind, name=None):
    (doc,) = [d for d in docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


FINETUNE, PREDICT = ("RayJob", "finetune-classifier"), ("RayJob", "predict-classifier")
RAY_OBJECTS = [("RayService", None), FINETUNE, PREDICT]


def cluster_spec(doc):
    return doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]


def groups(doc):
    spec = cluster_spec(doc)
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def ray_containers(doc):
    return [c for g in groups(doc) for c in g["template"]["spec"]["containers"]]


def serve_app(service):
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    return app


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_kuberay_crds(path):
    assert VALIDATOR.exists(), f"{VALIDATOR}: the KubeRay validator ships in shared/ beside the checkout"
    result = subprocess.run([sys.executable, str(VALIDATOR), "--strict", str(path)], capture_output=True, text=True)
    output = (result.stdout + result.stderr).splitlines()
    problems = [line for line in output if line.startswith("ERROR")]
    # The validator's list of Serve deployment keys is kept by hand and predates
    # `max_surge_percent` (Ray 2.60, zero-drop rollouts); Ray's own schema is the authority on
    # keys, and app.serve_configs checks serveConfigV2 against it (test_derived_serve_configs_...).
    known = set(DeploymentSchema.model_fields)
    lagging = [line for line in problems
               if (m := re.search(r"deployments\[\d+\]\.(\w+): unknown deployment key$", line)) and m.group(1) in known]
    assert problems == lagging, result.stdout + result.stderr
    assert all(line.startswith(("OK ", "ERROR ", "FAIL ")) for line in output if line.strip()), output
    if not problems:
        assert result.returncode == 0 and result.stdout.startswith("OK ")


def test_other_objects_validate_against_the_kubernetes_schema():
    others = [d for d in docs() if not d["apiVersion"].startswith("ray.io/")]
    assert {d["kind"] for d in others} == {"NetworkPolicy"}
    for doc in others:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_derived_serve_configs_are_up_to_date():
    assert serve_configs(["--check"]) == 0


def test_check_prints_a_diff_when_the_overlay_changed(tmp_path, capsys):
    edited = tmp_path / "serve-overrides.yaml"
    edited.write_text(OVERLAY.read_text().replace("reviews/model", "reviews-v2/model"))
    assert serve_configs(["--check"], overlay_path=edited) == 1
    err = capsys.readouterr().err
    assert "-        model: s3://ray-text-classifier-models/reviews/model" in err
    assert "+        model: s3://ray-text-classifier-models/reviews-v2/model" in err
    assert "out of date: run `python -m app.serve_configs`" in err


@pytest.mark.parametrize("old, new, message", [
    ("    Tokenizer:\n      ray_actor_options", "    Tokeniser:\n      ray_actor_options",
     "kubernetes.deployments: no deployment Tokeniser in serve_config.yaml"),
    ("{resources: {cpu_stage: 1}}", "{resourcs: {cpu_stage: 1}}",
     "resourcs: Extra inputs are not permitted"),
    ("{max_replicas: 8}", "{max_replicas: 0}",
     "max_replicas: Input should be greater than or equal to 1"),
    ("max_batch_size: 256", "max_batch_sise: 256", "Classifier.user_config: max_batch_sise: Extra inputs"),
    ("  api_keys_file:", "  api_key_file:", "kubernetes: args: api_key_file: Extra inputs"),
    ("{min_replicas: 1, max_replicas: 4", "{min_replicas: 5, max_replicas: 4",
     "gpu: Classifier.autoscaling_config: 1 validation error"),
    ("gpu:\n", "gpu: [\n", "serve-overrides.yaml: not YAML"),
])
def test_overlay_reader_refuses_unknown_keys_and_bad_values(tmp_path, capsys, old, new, message):
    bad = tmp_path / "serve-overrides.yaml"
    assert old in OVERLAY.read_text()
    bad.write_text(OVERLAY.read_text().replace(old, new, 1))
    assert serve_configs(["--check"], overlay_path=bad) == 2
    assert message in capsys.readouterr().err


def test_overlay_needs_both_sections():
    with pytest.raises(ValueError, match=r"^overlay: kubernetes: Field required .*k8s: Extra inputs are not permitted"):
        Overlay.read({"gpu": {}, "k8s": {}}, "overlay")


def test_images_and_dockerfile_match_ray_version():
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text()
    docker_ray = re.search(r"ARG RAY_VERSION=(\S+)", dockerfile).group(1)
    assert docker_ray == ray.__version__
    for doc in (d for d in docs() if d["apiVersion"].startswith("ray.io/")):
        spec = cluster_spec(doc)
        assert spec["rayVersion"] == ray.__version__
        submitter = doc["spec"].get("submitterPodTemplate", {"spec": {"containers": []}})
        for container in ray_containers(doc) + submitter["spec"]["containers"]:
            tag = container["image"].rsplit(":", 1)[1]
            assert tag.startswith(f"{spec['rayVersion']}-"), container["image"]


def test_service_graph_imports_and_asks_for_gpus():
    service = by_kind("RayService")
    app = serve_app(service)
    module, attr = app["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    deployments = {d["name"]: d for d in app["deployments"]}
    assert deployments["Classifier"]["ray_actor_options"]["num_gpus"] == 1
    assert app["args"]["model"].startswith("s3://")
    assert app["args"]["model"] == read_overlay().kubernetes.args["model"]
    spec = cluster_spec(service)
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert len(gpu_groups) == 1 and gpu_groups[0]["maxReplicas"] >= 2


def test_cpu_stages_land_on_the_cpu_group_by_rule():
    # What the Ray autoscaler believes each group's pods offer, read by its own parser.
    service = by_kind("RayService")
    spec = cluster_spec(service)
    offers = {"head": _get_ray_resources_from_group_spec(spec["headGroupSpec"], True)}
    offers |= {g["groupName"]: _get_ray_resources_from_group_spec(g, False) for g in spec["workerGroupSpecs"]}
    assert [name for name, offer in offers.items() if offer.get(CPU_STAGE)] == ["cpu-stages"]
    for deployment in serve_app(service)["deployments"]:
        options = deployment["ray_actor_options"]
        asks = {"CPU": options.get("num_cpus", 1), "GPU": options.get("num_gpus", 0), **options.get("resources", {})}
        hosts = [name for name, offer in offers.items()
                 if all(offer.get(res, 0) >= amount for res, amount in asks.items() if amount)]
        if asks["GPU"] or asks.get("model_weights"):  # the stages that load weights
            assert hosts == ["gpu-classifier"], deployment["name"]
        else:  # a CPU stage: it must ask for the resource, and only the CPU group can host it
            assert asks.get(CPU_STAGE, 0) > 0, f"{deployment['name']} does not ask for {CPU_STAGE}"
            assert hosts == ["cpu-stages"], deployment["name"]


def test_laptop_and_gpu_configs_do_not_ask_for_the_cluster_resource():
    for path in (SOURCE, ROOT / "serve_config.gpu.yaml"):
        assert CPU_STAGE not in path.read_text(), path.name


def test_request_timeout_reaches_serve_config_v2_and_the_address_stays_kuberays():
    laptop = yaml.safe_load(SOURCE.read_text())["http_options"]
    service = by_kind("RayService")
    http = yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]
    assert http == {"request_timeout_s": laptop["request_timeout_s"]}
    # Serve then listens on its defaults: all interfaces, the port the pods declare as `serve`.
    defaults = HTTPOptionsSchema()
    assert defaults.host == "0.0.0.0"
    head = cluster_spec(service)["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["serve"] == defaults.port == SERVE_PORT


@pytest.mark.parametrize("kind, name", RAY_OBJECTS)
def test_ray_token_auth_is_on(kind, name):
    spec = cluster_spec(by_kind(kind, name))
    assert spec["authOptions"] == {"mode": "token"}
    assert tuple(map(int, spec["rayVersion"].split(".")[:2])) >= (2, 52)  # Ray's token auth


def _pod_labels(doc):
    labels = [g["template"].get("metadata", {}).get("labels", {}) for g in groups(doc)]
    return labels


def _policy_for(doc):
    (policy,) = [p for p in docs() if p["kind"] == "NetworkPolicy"
                 and all(set(p["spec"]["podSelector"]["matchLabels"].items()) <= set(labels.items())
                         for labels in _pod_labels(doc))]
    return policy


def _rule_ports(rule):
    return {p["port"] for p in rule.get("ports", [])}


@pytest.mark.parametrize("kind, name, open_ports", [("RayService", None, {SERVE_PORT}), (*FINETUNE, set()),
                                                  (*PREDICT, set())])
def test_network_policy_admits_only_the_serve_port_from_anywhere(kind, name, open_ports):
    doc = by_kind(kind, name)
    policy = _policy_for(doc)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    # Rules without `from` admit any source: they may name the serve port and nothing else.
    anywhere = [r for r in rules if "from" not in r]
    assert all(r.get("ports") for r in anywhere)
    assert set().union(*map(_rule_ports, anywhere)) == open_ports
    for rule in (r for r in rules if "from" in r):
        for peer in rule["from"]:
            if "ipBlock" in peer:
                pytest.fail(f"{kind}: an ipBlock peer admits traffic from outside the cluster")
            if not rule.get("ports"):  # every port: only the cluster's own pods
                assert peer == {"podSelector": {"matchLabels": selector}}, peer
        ports = _rule_ports(rule)
        if ports & MONITORING_ONLY_PORTS:
            assert ports <= MONITORING_ONLY_PORTS
            assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        if DASHBOARD_PORT in ports:
            assert all(peer.get("podSelector") for peer in rule["from"]), "the dashboard is open to whole namespaces"


def test_haproxy_stats_and_metrics_ports_are_the_ones_ray_uses():
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_METRICS_PORT, RAY_SERVE_HAPROXY_STATS_PORT

    assert {RAY_SERVE_HAPROXY_METRICS_PORT, RAY_SERVE_HAPROXY_STATS_PORT} <= MONITORING_ONLY_PORTS


@pytest.mark.parametrize("kind, name", RAY_OBJECTS)
def test_every_container_runs_locked_down(kind, name):
    doc = by_kind(kind, name)
    pods = [g["template"]["spec"] for g in groups(doc)]
    if "submitterPodTemplate" in doc["spec"]:
        pods.append(doc["spec"]["submitterPodTemplate"]["spec"])
    autoscaler = cluster_spec(doc).get("autoscalerOptions")
    checked = 0
    for pod in pods:
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        containers = [(c, pod) for c in pod["containers"]]
        if autoscaler and pod is pods[0] and cluster_spec(doc).get("enableInTreeAutoscaling"):
            containers.append((autoscaler, pod))  # KubeRay's sidecar in the head pod
        for container, _ in containers:
            context = container["securityContext"]
            assert {k: context.get(k) for k in SECURE} == SECURE, container.get("name", "autoscaler")
            assert context["runAsUser"] > 0 and context["capabilities"]["drop"] == ["ALL"]
            # A read-only root needs writable scratch space, and Ray its /tmp/ray.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            wanted = ["/tmp"] + (["/tmp/ray"] if container.get("name") != "ray-job-submitter" else [])
            for path in wanted:
                assert "emptyDir" in volumes[mounts[path]], (container.get("name"), path)
            checked += 1
    assert checked >= 3


def _mounted_secret_file(container, pod, env_name):
    """(secret name, key) behind the file that env var `env_name` names, via a read-only mount."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    directory, _, key = env[env_name].rpartition("/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume["secret"]["secretName"], key


def test_serving_pods_verify_with_the_public_key_and_never_hold_the_signing_key():
    service = by_kind("RayService")
    for group in groups(service):
        pod = group["template"]["spec"]
        for container in pod["containers"]:
            assert _mounted_secret_file(container, pod, "MODEL_VERIFY_KEY") == ("model-verify-key", "verify.pem")
    text = RAY_SERVICE.read_text()
    assert "model-signing-key" not in text and "MODEL_SIGNING_KEY" not in text


def test_training_driver_signs_with_the_private_key():
    job = by_kind(*FINETUNE)
    head = cluster_spec(job)["headGroupSpec"]["template"]["spec"]
    (container,) = head["containers"]
    assert _mounted_secret_file(container, head, "MODEL_SIGNING_KEY_FILE") == ("model-signing-key", "signing.pem")
    # The old HMAC wiring is gone: a raw MODEL_SIGNING_KEY secret in the environment.
    assert all("MODEL_SIGNING_KEY" not in {e["name"] for e in c.get("env", [])} for c in ray_containers(job))


def _secret_volumes(pod, secret):
    return {v["name"] for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == secret}


def test_model_encryption_keys_reach_only_the_pods_that_load_weights():
    service = by_kind("RayService")
    # The Classifier asks for a GPU, so only the gpu-classifier group runs it (and loads weights).
    holders = []
    for group in groups(service):
        pod = group["template"]["spec"]
        names = _secret_volumes(pod, "model-encryption-keys")
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if names:
            holders.append(group.get("groupName", "head"))
            (mount,) = [m for m in container["volumeMounts"] if m["name"] in names]
            assert mount["readOnly"] is True and "subPath" not in mount  # a rotated-in key appears
            assert env["MODEL_KEY_FILE"] == mount["mountPath"]
        else:
            assert "MODEL_KEY_FILE" not in env
    assert holders == ["gpu-classifier"]
    # The stages that load weights can land nowhere else: the Classifier by its GPU, the Explainer
    # by `model_weights`, which only the key-holding group offers.
    deployments = {d["name"]: d for d in serve_app(service)["deployments"]}
    assert deployments["Classifier"]["ray_actor_options"]["num_gpus"] >= 1
    assert "model_weights" in deployments["Explainer"]["ray_actor_options"]["resources"]
    offering = [g.get("groupName", "head") for g in groups(service)
                if "model_weights" in g.get("rayStartParams", {}).get("resources", "")]
    assert offering == ["gpu-classifier"]
    assert "model_key_file" not in serve_app(service)["args"] and "runtime_env" not in serve_app(service)
    job = by_kind(*FINETUNE)
    head = cluster_spec(job)["headGroupSpec"]["template"]["spec"]
    (container,) = head["containers"]
    args = train_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[3:])
    directory, _, name = args.encrypt_key_file.rpartition("/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "model-encryption-keys" and mount["readOnly"] is True
    assert [item["path"] for item in volume["secret"]["items"]] == [name]  # one KEK: the one to wrap under
    for worker in cluster_spec(job)["workerGroupSpecs"]:
        assert not _secret_volumes(worker["template"]["spec"], "model-encryption-keys")


def test_api_keys_are_mounted_where_the_ingress_lands():
    service = by_kind("RayService")
    keys_dir = serve_app(service)["args"]["api_keys_file"].rsplit("/", 1)[0]
    (cpu_group,) = [g for g in cluster_spec(service)["workerGroupSpecs"] if g["groupName"] == "cpu-stages"]
    pod = cpu_group["template"]["spec"]
    (mount,) = [m for c in pod["containers"] for m in c["volumeMounts"] if m["mountPath"] == keys_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "classifier-api-keys" and mount["readOnly"] is True


def test_every_serving_pod_runs_with_app_serve_env():
    # HAProxy mode must be on in every Ray process of the cluster, head and workers alike.
    wanted = serve_env()
    assert wanted["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    for container in ray_containers(by_kind("RayService")):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert {k: env.get(k) for k in wanted} == wanted, container["name"]


def test_serve_env_refuses_lines_that_are_not_assignments(tmp_path):
    bad = tmp_path / "serve.env"
    bad.write_text("# fine\nRAY_SERVE_ENABLE_HA_PROXY=1\nexport RAY_X=1\n")
    with pytest.raises(ValueError, match=r"serve.env:3: expected RAY_"):
        serve_env(bad)


def test_job_entrypoint_is_accepted_by_the_training_cli():
    job = by_kind(*FINETUNE)
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "train"]
    args = train_parser().parse_args(argv[3:])
    assert args.use_gpu and args.output.startswith("s3://")
    (group,) = cluster_spec(job)["workerGroupSpecs"]
    assert group["replicas"] == args.num_workers
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["backoffLimit"] >= 1
    # A resubmission (backoffLimit) must find the first attempt's checkpoints: a fixed run name.
    assert args.run_name and not args.resume


def test_run_name_is_checked_by_the_training_cli(capsys):
    # The RayJob's --run-name becomes a directory in shared storage: no path may escape it.
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--output", "out", "--run-name", "../elsewhere"])
    assert "starting with a letter or digit" in capsys.readouterr().err
    assert train_parser().parse_args(["--output", "out", "--run-name", "run-reviews-1"]).run_name == "run-reviews-1"


def test_generated_block_replaces_only_serve_config():
    from app.serve_configs import render_ray_service

    manifest = "spec:\n  serveConfigV2: |\n    old: 1\n    more: 2\n  rayClusterConfig:\n    x: 1\n"
    assert render_ray_service(manifest, {"applications": []}) == (
        "spec:\n  serveConfigV2: |\n    applications: []\n  rayClusterConfig:\n    x: 1\n")


def test_batch_scoring_job_runs_the_predict_cli_and_verifies_the_artifact():
    from train.predict import parser as predict_parser

    job = by_kind(*PREDICT)
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "train.predict"]
    args = predict_parser().parse_args(argv[3:])
    assert args.use_gpu and all(v.startswith("s3://") for v in (args.model, args.data, args.output))
    assert args.model == read_overlay().kubernetes.args["model"]  # the model the RayService serves
    (group,) = cluster_spec(job)["workerGroupSpecs"]
    assert group["replicas"] == args.num_workers
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # The driver (head) and every actor (workers) verify with the public key; no signing key here.
    for g in groups(job):
        pod = g["template"]["spec"]
        for container in pod["containers"]:
            assert _mounted_secret_file(container, pod, "MODEL_VERIFY_KEY") == ("model-verify-key", "verify.pem")
    text = (ROOT / "k8s" / "ray-job.predict.yaml").read_text()
    assert "model-signing-key" not in text and "MODEL_SIGNING_KEY" not in text
