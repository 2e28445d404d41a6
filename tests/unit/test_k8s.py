"""The k8s manifests: KubeRay schema validation, one source of truth, and what the schema cannot see."""
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from app.serve_configs import GPU_CONFIG, RAY_SERVICE, main as serve_configs, serve_env
from train.__main__ import parser as train_parser

ROOT = Path(__file__).parents[2]
VALIDATOR = ROOT.parent / "shared" / "kuberay" / "validate.py"
MANIFESTS = sorted((ROOT / "k8s").glob("*.yaml"))


def docs():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())]


def by_kind(kind):
    (doc,) = [d for d in docs() if d["kind"] == kind]
    return doc


def cluster_spec(doc):
    return doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_kuberay_crds(path):
    if not VALIDATOR.exists():
        pytest.skip(f"{VALIDATOR} is not here (it ships beside the project's checkout, not in it)")
    result = subprocess.run([sys.executable, str(VALIDATOR), "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK ")


def test_derived_serve_configs_are_up_to_date():
    assert serve_configs(["--check"]) == 0


def test_images_and_dockerfile_match_ray_version():
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text()
    docker_ray = re.search(r"ARG RAY_VERSION=(\S+)", dockerfile).group(1)
    assert docker_ray == ray.__version__
    for doc in docs():
        spec = cluster_spec(doc)
        assert spec["rayVersion"] == ray.__version__
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            for container in group["template"]["spec"]["containers"]:
                tag = container["image"].rsplit(":", 1)[1]
                assert tag.startswith(f"{spec['rayVersion']}-"), container["image"]


def test_service_graph_imports_and_asks_for_gpus():
    service = by_kind("RayService")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    module, attr = app["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    deployments = {d["name"]: d for d in app["deployments"]}
    assert deployments["Classifier"]["ray_actor_options"]["num_gpus"] == 1
    assert app["args"]["model"].startswith("s3://")
    # Auth is on in the cluster: the keys file is mounted from a Secret where the ingress runs.
    keys_dir = app["args"]["api_keys_file"].rsplit("/", 1)[0]
    mounts = [m["mountPath"] for g in cluster_spec(service)["workerGroupSpecs"]
              for c in g["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])]
    assert keys_dir in mounts
    assert yaml.safe_load(GPU_CONFIG.read_text())["applications"][0]["deployments"] == app["deployments"]
    spec = cluster_spec(service)
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert len(gpu_groups) == 1 and gpu_groups[0]["maxReplicas"] >= 2


def test_every_serving_pod_runs_with_app_serve_env():
    # HAProxy mode must be on in every Ray process of the cluster, head and workers alike.
    wanted = serve_env()
    assert wanted["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    spec = cluster_spec(by_kind("RayService"))
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert {k: env.get(k) for k in wanted} == wanted, container["name"]


def test_serve_env_refuses_lines_that_are_not_assignments(tmp_path):
    bad = tmp_path / "serve.env"
    bad.write_text("# fine\nRAY_SERVE_ENABLE_HA_PROXY=1\nexport RAY_X=1\n")
    with pytest.raises(ValueError, match=r"serve.env:3: expected RAY_"):
        serve_env(bad)


def test_job_entrypoint_is_accepted_by_the_training_cli():
    job = by_kind("RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "train"]
    args = train_parser().parse_args(argv[3:])
    assert args.use_gpu and args.output.startswith("s3://")
    (group,) = cluster_spec(job)["workerGroupSpecs"]
    assert group["replicas"] == args.num_workers
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["backoffLimit"] >= 1


def test_generated_block_replaces_only_serve_config(tmp_path):
    from app.serve_configs import render_ray_service

    manifest = "spec:\n  serveConfigV2: |\n    old: 1\n    more: 2\n  rayClusterConfig:\n    x: 1\n"
    assert render_ray_service(manifest, {"applications": []}) == (
        "spec:\n  serveConfigV2: |\n    applications: []\n  rayClusterConfig:\n    x: 1\n")
    assert RAY_SERVICE.exists()
