"""bench/gpu_check.py runs where Ray is absent (the GPU machine); its smoke mode runs here on CPU."""
import json
import subprocess
import sys

from tests.conftest import ROOT

# Importing ray raises ImportError in this child: the check must not need it.
NO_RAY = "import sys, runpy; sys.modules['ray'] = None; sys.argv = ['gpu_check', *sys.argv[1:]]; " \
         "runpy.run_module('bench.gpu_check', run_name='__main__')"


def run(*args):
    return subprocess.run([sys.executable, "-c", NO_RAY, "--device", "cpu", "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_gpu_check_runs_without_ray_and_writes_its_figures(tmp_path):
    result = run("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["outputs"]["ok"] and figures["outputs"]["max_prob_diff"] == 0.0  # CPU against itself
    assert figures["outputs"]["forward_passes"] >= 2  # mixed lengths: length-aware passes
    assert set(figures["throughput_short"]) == {"1", "8"} and figures["train"]["steps"] == 8
    assert "| 8 |" in result.stdout


def test_gpu_check_fails_when_outputs_differ_beyond_tolerance(tmp_path):
    assert run("--out", str(tmp_path), "--tolerance", "-1").returncode == 1
