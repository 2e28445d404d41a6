"""Batch scoring (`python -m train.predict`) on a real local Ray cluster: Ray Data reads, an actor
pool scores, Ray Data writes; the labels are the deploy gate's (train.evaluate), text for text."""
import shutil

import pandas as pd
import pytest
import ray

from tests.conftest import TINY, make_artifact, moto_s3
from train import signing
from train.artifact import read_info
from train.evaluate import predict as gate_labels
from train.predict import IO_CPUS, main

pytestmark = pytest.mark.slow
BUCKET = "batch"
LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module", autouse=True)
def s3(tmp_path_factory):
    # The server's settings are in the environment before ray.init: the actors inherit them.
    with moto_s3(BUCKET, MODEL_CACHE_DIR=str(tmp_path_factory.mktemp("cache"))) as client:
        # 2 cores plus the logical CPU train.predict's own local cluster adds for Ray Data's tasks.
        ray.init(num_cpus=2 + IO_CPUS, include_dashboard=False, _node_ip_address="127.0.0.1",
                 configure_logging=False, log_to_driver=False)
        try:
            yield client
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def opinionated(tmp_path_factory):
    # Large initial weights make the answer depend on the text (the tiny artifact's small ones
    # answer one label for everything), so a wrong row-to-label pairing would show.
    return make_artifact(tmp_path_factory.mktemp("opinionated") / "model", labels=LABELS, max_length=16,
                         random_init={**TINY, "initializer_range": 0.5})


def scored_agrees_with_the_gate(frame: pd.DataFrame, artifact, prefix: str) -> None:
    texts = frame["text"].astype(str).tolist()
    assert frame[f"{prefix}label"].tolist() == gate_labels(read_info(artifact), texts)
    per_label = frame[[f"{prefix}score_{label}" for label in LABELS]]
    assert (per_label.sum(axis=1) - 1).abs().max() < 1e-5  # softmax over the artifact's labels
    assert (frame[f"{prefix}score"] == per_label.max(axis=1)).all()


def test_labels_equal_the_evaluate_gate_on_the_same_file(opinionated, sentiment_csv, tmp_path):
    # Several batches per actor, two actors; a blank text keeps its row with no label.
    data = pd.read_csv(sentiment_csv)
    data = pd.concat([data, pd.DataFrame({"text": ["   "], "label": ["positive"]})], ignore_index=True)
    data.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "scored.parquet"
    assert main(["--model", str(opinionated), "--data", str(tmp_path / "in.csv"), "--output", str(out),
                 "--prefix", "pred_", "--num-workers", "2", "--batch-size", "32"]) == 0
    scored = pd.read_parquet(out)
    assert sorted(scored["text"]) == sorted(data["text"]) and set(scored.columns) >= {"text", "label"}
    blank = scored["text"].str.strip() == ""
    assert scored.loc[blank, "pred_label"].isna().all() and scored.loc[blank, "pred_score"].isna().all()
    scored = scored.loc[~blank]
    scored_agrees_with_the_gate(scored, opinionated, "pred_")
    assert scored["pred_label"].nunique() == 3


def test_s3_in_and_out(s3, opinionated, sentiment_csv, tmp_path):
    # Model, a directory of JSONL files and the CSV output all behind s3:// URIs.
    for path in opinionated.iterdir():
        s3.upload_file(str(path), BUCKET, f"model/{path.name}")
    data = pd.read_csv(sentiment_csv).drop(columns="label")
    for i, part in enumerate((data[:120], data[120:])):
        s3.put_object(Bucket=BUCKET, Key=f"in/part-{i}.jsonl", Body=part.to_json(orient="records", lines=True).encode())
    assert main(["--model", f"s3://{BUCKET}/model", "--data", f"s3://{BUCKET}/in/",
                 "--output", f"s3://{BUCKET}/out.csv"]) == 0
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out.csv/")["Contents"]]
    keys = [k for k in listed if not k.endswith("/")]  # the writer's directory marker
    assert keys and all(k.endswith(".csv") for k in keys)
    for key in keys:
        s3.download_file(BUCKET, key, str(tmp_path / key.replace("/", "_")))
    scored = pd.concat([pd.read_csv(tmp_path / k.replace("/", "_")) for k in keys], ignore_index=True)
    assert sorted(scored["text"]) == sorted(data["text"])
    scored_agrees_with_the_gate(scored, opinionated, "")


def test_refuses_a_changed_or_unsigned_artifact_before_reading(opinionated, sentiment_csv, tmp_path, caplog):
    changed = shutil.copytree(opinionated, tmp_path / "changed")
    (changed / "config.json").write_text((changed / "config.json").read_text().replace("neutral", "neutrl"))
    out = tmp_path / "out.parquet"
    args = ["--data", str(sentiment_csv), "--output", str(out), "--prefix", "p_"]
    assert main(["--model", str(changed), *args]) == 2
    assert "config.json" in caplog.text and not out.exists()
    signing.generate(tmp_path / "signing.pem", tmp_path / "verify.pem")
    assert main(["--model", str(opinionated), "--verify-key", str(tmp_path / "verify.pem"), *args]) == 2
    assert "unsigned artifact refused" in caplog.text and not out.exists()


def test_refuses_to_overwrite_input_columns_or_output(opinionated, sentiment_csv, tmp_path, caplog):
    out = tmp_path / "out.parquet"
    assert main(["--model", str(opinionated), "--data", str(sentiment_csv), "--output", str(out)]) == 2
    assert "already has column(s) label; pass --prefix" in caplog.text and not out.exists()
    out.mkdir()
    assert main(["--model", str(opinionated), "--data", str(sentiment_csv), "--output", str(out), "--prefix", "p_"]) == 2
    assert "already exists" in caplog.text
    assert main(["--model", str(opinionated), "--data", str(sentiment_csv), "--output", str(tmp_path / "x.txt")]) == 2
    assert "use one of .parquet, .csv" in caplog.text
    # A pool that would hold every CPU would starve Ray Data's own tasks (it hung): refused.
    assert main(["--model", str(opinionated), "--data", str(sentiment_csv), "--output", str(tmp_path / "y.csv"),
                 "--prefix", "p_", "--num-workers", "3"]) == 2
    assert "leave no CPU of the cluster's 3 for Ray Data's read and write tasks" in caplog.text
