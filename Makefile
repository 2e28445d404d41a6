# Two entry points for a fresh machine: `make demo` (install, train the demo model, serve it) and
# `make test` (install, run the test suite). Both use the active virtualenv, else create .venv.
VENV ?= $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
# torch goes first so that the package's bare `torch` requirement is already met. From PyPI,
# torch==2.13.0 on Linux is the multi-GB CUDA build: where no local CPU wheel is found, pass
# TORCH_INDEX=https://download.pytorch.org/whl/cpu (its own variable: the spec stays quoted).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
# Serve's high-throughput mode (HAProxy in front, direct ingress); the one home is app/serve.env.
SERVE_ENV := $(shell grep -E '^RAY_[A-Z0-9_]+=' app/serve.env)

.PHONY: install demo train serve test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

data/rotten_tomatoes.csv: | install
	$(PY) -m train.demo_data --output data

models/demo/model/manifest.json: data/rotten_tomatoes.csv
	$(PY) -m train --config default --data data/rotten_tomatoes.csv \
		--text-column text --label-column category --output models/demo

train: models/demo/model/manifest.json

# Stop with Ctrl-C: serve run then shuts the graph, HAProxy and its local Ray down, in under 10 s
# (tests/e2e/test_stop.py; app/serve.env says why it once took 33 s). An HAProxy that a SIGTERM
# or a failed shutdown left would keep the port, so orphans are stopped first (app/haproxy.py).
serve: train
	$(PY) -m app.haproxy reap
	env $(SERVE_ENV) $(VENV)/bin/serve run serve_config.yaml

demo: serve

test: install
	$(PY) -m pytest $(PYTEST_ARGS)
