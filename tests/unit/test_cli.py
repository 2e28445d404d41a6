"""`python -m train` flags that are refused before any training starts (no Ray here)."""
import pytest

from train.__main__ import main
from train.config import load_config


def test_resume_refuses_the_flags_it_would_ignore(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--output", str(tmp_path), "--resume", "--epochs", "5", "--data", "x.csv", "--config", "tiny"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--resume continues a run with the settings saved when it started" in err
    assert "train_config.json" in err and "takes no --config, --data, --epochs" in err


def test_resume_refuses_use_gpu_too(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path), "--resume", "--use-gpu"])
    assert "takes no --use-gpu" in capsys.readouterr().err


def test_resume_without_a_run_says_so(tmp_path, caplog):
    assert main(["--output", str(tmp_path), "--resume"]) == 2
    assert "no run to resume" in caplog.text


def test_resume_of_an_unknown_name_lists_the_runs(tmp_path, caplog):
    (tmp_path / "ray_train" / "run-20250101-000000").mkdir(parents=True)
    assert main(["--output", str(tmp_path), "--resume", "--run-name", "nightly"]) == 2
    assert "no run 'nightly' to resume; runs: run-20250101-000000" in caplog.text


@pytest.mark.parametrize("name", ["a/b", "../up", "-dash", "", "x" * 101, "sp ace"])
def test_run_names_are_single_safe_path_parts(tmp_path, capsys, name):
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path), "--run-name", name])
    assert "argument --run-name" in capsys.readouterr().err


def test_a_named_run_started_again_with_other_settings_is_refused(tmp_path, sentiment_csv, caplog):
    saved = load_config("tiny", {"data": str(sentiment_csv), "epochs": 2})
    run = tmp_path / "ray_train" / "nightly"
    run.mkdir(parents=True)
    (run / "train_config.json").write_text(saved.model_dump_json())
    args = ["--config", "tiny", "--data", str(sentiment_csv), "--output", str(tmp_path), "--run-name", "nightly"]
    assert main([*args, "--epochs", "3", "--max-length", "16"]) == 2
    assert "run 'nightly'" in caplog.text and "max_length: 32 -> 16; epochs: 2 -> 3" in caplog.text
    assert "give the same ones, or another --run-name" in caplog.text
