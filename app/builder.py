"""The typed application builder: `import_path: app.builder:build_app` in serve_config.yaml."""
# No `from __future__ import annotations`: Serve reads the AppArgs annotation to validate `args`.
from pathlib import Path

import yaml
from ray.serve import Application

from app.config import AppArgs
from app.explainer import Explainer
from app.ingress import Ingress
from app.model import Classifier
from app.postprocess import Postprocessor
from app.serve_configs import SOURCE
from app.tokenizer import Tokenizer


def compose(args: AppArgs, **options: dict) -> Application:
    """The graph; `options` maps a deployment name to `.options(...)` overrides (tests, tools)."""

    def stage(deployment):
        return deployment.options(**options.get(deployment.name, {}))

    artifact = (args.model, args.verify_key_file)  # every stage loads and verifies the same artifact
    # Only the stages that load weights get the model key's path (never the key: Serve shows args).
    weights = (*artifact, args.model_key_file)
    return stage(Ingress).bind(
        stage(Tokenizer).bind(*artifact), stage(Classifier).bind(*weights), stage(Postprocessor).bind(*artifact),
        stage(Explainer).bind(*weights), args.model_dump(),
    )


def config_options(path: Path = SOURCE) -> dict[str, dict]:
    """Per deployment, the options a serve config file sets (what `serve run FILE` applies over
    build_app), as compose() takes them: a graph built in Python (tests, bench) runs as shipped."""
    (app,) = yaml.safe_load(path.read_text())["applications"]
    return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app["deployments"]}


def build_app(args: AppArgs) -> Application:
    return compose(args)
