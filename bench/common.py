"""Shared by the bench scripts: the graph on a local Ray cluster bound to loopback."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on loopback

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def start_graph(model: str, keys_file: Path | None = None, **args) -> str:
    """serve.run the graph with serve_config.yaml's deployment options in this process (num_cpus=2,
    like the laptop); return its base URL."""
    import ray
    from ray import serve

    from app.builder import compose, config_options
    from app.config import AppArgs
    from tests.conftest import free_port

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app_args = AppArgs(model=model, api_keys_file=str(keys_file) if keys_file else None, **args)
    serve.run(compose(app_args, **config_options()), name="classifier", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def stop_graph() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
