"""Multi-label thresholds and temperature scaling: fitting, storing in the artifact, applying."""
import json
import shutil

import numpy as np
import pytest

from app.compute import predictions, softmax
from tests.conftest import TINY, make_artifact
from train.artifact import CALIBRATION, MANIFEST, ArtifactError, read_info, verify
from train.calibration import TEMPERATURE_BOUNDS, best_threshold, ece, fit_temperature, tune_thresholds
from train.metrics import multilabel_scores, validation


# ----- fitting -----
def test_threshold_maximises_f1_on_known_scores():
    scores = [0.9, 0.8, 0.7, 0.4, 0.3, 0.2]
    truth = [1, 1, 0, 1, 0, 0]
    # Cutting below 0.4 predicts 4 rows with 3 hits: F1 = 6/7, the best of the six cuts (0.8 next).
    threshold, f1 = best_threshold(scores, truth)
    assert f1 == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.35)  # the middle of the gap between 0.4 and 0.3
    assert [s >= threshold for s in scores] == [True, True, True, True, False, False]


def test_threshold_never_splits_tied_scores_and_falls_back_without_positives():
    # Cutting between the tied 0.6s would claim F1 1.0, but no threshold can tell equal scores apart.
    threshold, f1 = best_threshold([0.9, 0.6, 0.6, 0.1], [1, 1, 0, 0])
    assert threshold == pytest.approx(0.35) and f1 == pytest.approx(0.8)
    assert best_threshold([0.9, 0.2], [0, 0]) == (0.5, 0.0)
    # Every row positive: the cut sits at the lowest score, so all are predicted.
    assert best_threshold([0.3, 0.2], [1, 1])[0] == pytest.approx(0.2)


def test_thresholds_per_label_column():
    probs = np.array([[0.9, 0.1], [0.2, 0.7], [0.6, 0.65]])
    truth = np.array([[1, 0], [0, 1], [1, 0]])
    thresholds = tune_thresholds(probs, truth)
    assert thresholds == pytest.approx([0.4, 0.675])
    assert (probs >= thresholds).astype(int).tolist() == truth.tolist()


@pytest.mark.parametrize("true_t", [2.5, 0.5])
def test_temperature_fit_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    base = rng.normal(0, 2, size=(20000, 4))  # calibrated logits: labels are drawn from their softmax
    targets = np.array([rng.choice(4, p=p) for p in softmax(base)])
    # Logits scaled by T are over- (T > 1) or under-confident (T < 1) by exactly that temperature.
    logits = (base * true_t).astype(np.float32)
    fitted = fit_temperature(logits, targets)
    assert fitted == pytest.approx(true_t, rel=0.05)
    before, after = ece(softmax(logits), targets), ece(softmax(logits / fitted), targets)
    assert after < before / 3 and after < 0.02


def test_temperature_fits_inside_inference_mode():
    # The training loop's validation pass runs under torch.inference_mode(), where autograd is off.
    import torch

    logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]], dtype=np.float32)
    with torch.inference_mode():
        fitted = fit_temperature(logits, np.array([0, 1, 1]))
    assert fitted == pytest.approx(fit_temperature(logits, np.array([0, 1, 1]))) and fitted > 1


def test_temperature_stays_within_bounds_where_the_nll_has_no_minimum(caplog):
    # Every validation row right: the NLL keeps falling as T goes to 0 (unbounded, L-BFGS gave
    # T = 0.056 and every served score 1.000); every row wrong: it falls as T grows.
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    right, wrong = np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])
    assert fit_temperature(logits, right) == TEMPERATURE_BOUNDS[0]
    assert fit_temperature(logits, wrong) == TEMPERATURE_BOUNDS[1]
    assert caplog.text.count("temperature stopped at its bound") == 2


def test_ece_of_known_bins():
    # Ten rows at confidence 0.9, nine right: calibrated. Ten at 0.8, five right: off by 0.3.
    probs = np.array([[0.9, 0.1]] * 10 + [[0.2, 0.8]] * 10)
    targets = np.array([0] * 9 + [1] + [1] * 5 + [0] * 5)
    assert ece(probs[:10], targets[:10]) == pytest.approx(0.0, abs=1e-12)
    assert ece(probs, targets) == pytest.approx(0.15)


def test_validation_metrics_name_what_was_fitted():
    multi = validation(np.array([[3.0, -3.0], [-3.0, 3.0], [2.0, 2.0]]), np.array([[1, 0], [0, 1], [1, 1]]),
                       ["a", "b"], multi_label=True)
    assert set(multi["thresholds"]) == {"a", "b"} and multi["micro_f1"] == 1.0 and multi["accuracy"] == 1.0
    assert {"micro_precision", "macro_recall", "at_0.5"} <= set(multi) and multi["per_class"]["a"]["support"] == 2
    single = validation(np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]), np.array([0, 1, 1]), ["n", "p"], False)
    assert single["temperature"] > 1  # one confident mistake: the scores must soften
    assert single["ece_calibrated"] < single["ece"] and single["accuracy"] == pytest.approx(2 / 3)
    assert "temperature" not in validation(np.zeros((2, 2)), np.array([0, 1]), ["n", "p"], False, calibrate=False)


def test_multilabel_scores_micro_and_macro():
    truth = np.array([[1, 0], [1, 1], [0, 0]])
    pred = np.array([[1, 1], [1, 0], [0, 0]])
    result = multilabel_scores(truth, pred, ["a", "b"])
    # a: P 1, R 1, F1 1; b: P 0, R 0. Micro: 2 hits, 3 predicted, 3 true.
    assert result["macro_f1"] == pytest.approx(0.5) and result["micro_f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(1 / 3)


# ----- applying -----
def test_postprocessing_applies_the_temperature():
    logits = np.array([[2.0, 0.0, -1.0]], dtype=np.float32)
    (plain,) = predictions(logits, ["a", "b", "c"], [None], multi_label=False)
    (cooled,) = predictions(logits, ["a", "b", "c"], [None], multi_label=False, temperature=2.0)
    assert [s["score"] for s in cooled["scores"]] == pytest.approx(softmax(logits / 2.0)[0].tolist(), rel=1e-5)
    assert cooled["label"] == plain["label"] == "a" and cooled["score"] < plain["score"]
    assert "labels" not in cooled  # the single-label shape is unchanged


def test_postprocessing_applies_per_label_thresholds():
    logits = np.log(np.array([[0.7, 0.4, 0.9], [0.2, 0.1, 0.3]]) / (1 - np.array([[0.7, 0.4, 0.9], [0.2, 0.1, 0.3]])))
    out = predictions(logits, ["a", "b", "c"], [1, None], multi_label=True, thresholds=(0.8, 0.35, 0.5))
    # Row 0: a (0.7) is under its 0.8; b (0.4) is over its 0.35; c (0.9) is over.
    assert [(s["label"], round(s["score"], 4)) for s in out[0]["labels"]] == [("c", 0.9), ("b", 0.4)]
    assert out[0]["label"] == "c" and out[0]["score"] == pytest.approx(0.9)
    assert [s["label"] for s in out[0]["scores"]] == ["c"]  # top_k 1
    # Row 1: nothing reaches its threshold; every score is still there for top_k null.
    assert out[1]["labels"] == [] and out[1]["label"] is None and out[1]["score"] is None
    assert [s["label"] for s in out[1]["scores"]] == ["c", "a", "b"]
    # Without tuned thresholds, 0.5 for each label.
    (flat,) = predictions(logits[:1], ["a", "b", "c"], [1], multi_label=True)
    assert [s["label"] for s in flat["labels"]] == ["c", "a"]


# ----- storing -----
@pytest.fixture(scope="module")
def multi_artifact(tmp_path_factory):
    thresholds = {"sports": 0.3, "business": 0.6, "tech": 0.45}
    return make_artifact(tmp_path_factory.mktemp("multi") / "model", random_init=TINY, multi_label=True,
                         labels=("business", "sports", "tech"), calibration={"thresholds": thresholds})


def test_artifact_carries_thresholds_under_its_manifest(multi_artifact, tmp_path):
    info = read_info(multi_artifact)
    assert info.multi_label and info.thresholds == (0.6, 0.3, 0.45) and info.temperature == 1.0
    assert CALIBRATION in json.loads((multi_artifact / MANIFEST).read_text())["files"]
    changed = shutil.copytree(multi_artifact, tmp_path / "changed")
    (changed / CALIBRATION).write_text(json.dumps({"thresholds": {"sports": 0.0, "business": 0.0, "tech": 0.0}}))
    with pytest.raises(ArtifactError, match="calibration.json: sha256 does not match"):
        verify(changed)


def test_postprocessor_stage_reads_the_temperature(tmp_path):
    from app.postprocess import Postprocessor

    path = make_artifact(tmp_path / "model", random_init=TINY, calibration={"temperature": 2.0})
    assert read_info(path).temperature == 2.0
    stage = Postprocessor.func_or_class(str(path))  # the class the deployment wraps, without Ray
    import asyncio

    (pred,) = asyncio.run(stage.run(np.array([[3.0, 1.0]], dtype=np.float32), [None], read_info(path).version))
    assert pred["score"] == pytest.approx(float(softmax(np.array([[1.5, 0.5]]))[0, 0]), rel=1e-5)


@pytest.mark.parametrize("calibration,multi,message", [
    ({"temperature": 0.0}, False, "temperature: Input should be greater than 0"),
    ({"temperature": 2.0}, True, "a temperature is for single-label models"),
    ({"thresholds": {"negative": 0.5, "positive": 0.5}}, False, "thresholds are for multi-label models"),
    ({"thresholds": {"negative": 0.5}}, True, "thresholds name \\['negative'\\]; the labels are"),
    ({"thresholds": {"negative": 1.5, "positive": 0.5}}, True, "less than or equal to 1"),
])
def test_bad_calibration_is_refused(tmp_path, calibration, multi, message):
    path = make_artifact(tmp_path / "model", random_init=TINY, multi_label=multi)
    from train.artifact import write_manifest

    (path / CALIBRATION).write_text(json.dumps(calibration))
    write_manifest(path)  # hashes that match: the content itself must be refused
    with pytest.raises(ArtifactError, match=message):
        read_info(path)


def test_calibrate_cli_writes_a_verified_copy_and_keeps_the_source(tmp_path, sentiment_csv, capsys):
    from train.calibrate import main

    source = make_artifact(tmp_path / "model", random_init={**TINY, "initializer_range": 0.5})
    before = verify(source)
    assert main(["--model", str(source), "--data", str(sentiment_csv), "--output", str(tmp_path / "cal")]) == 0
    report = json.loads(capsys.readouterr().out)
    info = read_info(tmp_path / "cal")
    assert info.temperature == pytest.approx(report["temperature"]) and report["temperature"] > 0
    assert report["rows"] == 200 and info.version == report["version"] != before
    assert verify(source) == before and not (source / CALIBRATION).exists()
    # The fit minimises NLL on these rows: softer or sharper, the NLL there cannot rise.
    from app.compute import softmax as sm
    from train.evaluate import logits_of
    from train.metrics import nll
    import pandas as pd

    frame = pd.read_csv(sentiment_csv)
    logits, truth = logits_of(info, frame["text"].tolist()), (frame["label"] == "positive").astype(int).to_numpy()
    assert nll(sm(logits / info.temperature), truth) <= nll(sm(logits), truth) + 1e-9
    assert main(["--model", str(source), "--data", str(sentiment_csv), "--output", str(source)]) == 2
