"""Start `serve run serve_config.yaml` as `make serve` does (with app/serve.env, so HAProxy fronts
the graph) on free ports, for the e2e tests."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import yaml

from app.serve_configs import serve_env
from tests.conftest import ROOT, free_port

SERVE = Path(sys.executable).parent / "serve"


class Server(NamedTuple):
    proc: subprocess.Popen  # `serve run`, leader of its own process group
    url: str
    port: int
    env: dict


def serve_run(tmp: Path, artifact: Path, args: dict | None = None, **extra_env: str) -> Server:
    """Start `serve run` on artifact with app/serve.env plus extra_env (and application args over
    serve_config.yaml's); return at once.

    Its own session, so a test can SIGINT the group as a terminal's Ctrl-C does (a background
    `serve run` of a non-interactive shell ignores SIGINT). Output goes to tmp/serve.log.
    """
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    config["applications"][0]["args"] |= {"model": str(artifact), **(args or {})}
    path = tmp / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    # Loopback only: without this, Ray binds its services to the machine's interface address.
    # HAProxy's stats and metrics ports are moved off their fixed defaults so a run never collides.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **serve_env(),
               RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()), RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
               **extra_env)
    with open(tmp / "serve.log", "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([str(SERVE), "run", str(path)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return Server(proc, f"http://127.0.0.1:{port}", port, env)


def dashboard_address(log: Path) -> str:
    """The dashboard of the cluster `serve run` started, as its ray.init announced it: 8265 is only
    the first port Ray tries, and another cluster on the machine may hold it."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())  # drop the announcement's colours
    address = re.search(r"View the dashboard at (\S+)", text)
    assert address, text[-2000:]
    return address.group(1) if "://" in address.group(1) else f"http://{address.group(1)}"
