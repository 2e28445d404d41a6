"""The same rows through both data paths: a local file (pandas) and a directory or URI (Ray Data)
must give the same labels, row counts and errors."""
import shutil
from collections import Counter

import pandas as pd
import pytest
import ray

from tests.conftest import moto_s3
from train.config import TrainConfig
from train.data import LABEL, TEXT, DataError, load_data

pytestmark = pytest.mark.slow
BUCKET = "data"


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server (moto) on loopback; its settings are in the environment before
    ray.init, so Ray Data's readers inherit them."""
    with moto_s3(BUCKET) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(s3):
    from ray.data import DataContext

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False,
             log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def write(path, frame):
    if path.name.endswith(".parquet"):
        frame.to_parquet(path)
    elif path.name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    elif isinstance(frame, str):
        path.write_text(frame)
    else:
        frame.to_csv(path, sep="\t" if ".tsv" in path.name else ",", index=False)
    return path


def summary(data) -> dict:
    train, val = data.train.take_all(), data.val.take_all()
    # The distributed path derives its counts from class counts; they must be the rows delivered.
    assert (len(train), len(val)) == (data.n_train, data.n_val)
    return {
        "labels": data.labels, "n_train": data.n_train, "n_val": data.n_val, "dropped": data.dropped_blank,
        "rows": sorted((r[TEXT], data.labels[r[LABEL]]) for r in train + val),
        "val_per_class": Counter(data.labels[r[LABEL]] for r in val),
    }


def both(tmp_path, name, content, val=None, **settings):
    """(local, distributed) summaries of one file: read as a file, then as the directory holding it.
    Tests that do not test the split pass val (validation data), which skips it."""
    local, folder = tmp_path / "local", tmp_path / "folder"
    local.mkdir()
    folder.mkdir()
    path = write(local / name, content)
    shutil.copy(path, folder / name)
    extra = {}
    if val is not None:
        extra["val_data"] = str(write(local / f"val-{name}", val))
    out = []
    for data in (str(path), str(folder)):
        out.append(summary(load_data(TrainConfig(data=data, **extra, **settings))))
    return out


def both_fail(tmp_path, name, content, match, val=None, **settings):
    local, folder = tmp_path / "local", tmp_path / "folder"
    local.mkdir()
    folder.mkdir()
    path = write(local / name, content)
    shutil.copy(path, folder / name)
    extra = {"val_data": str(write(local / f"val-{name}", val))} if val is not None else {}
    for data in (str(path), str(folder)):
        with pytest.raises(DataError, match=match):
            load_data(TrainConfig(data=data, **extra, **settings))


TEXTS = [f"text number {i}" for i in range(40)]


def test_string_labels_blank_texts_and_na_spellings(tmp_path):
    csv = "text,label\n" + "".join(f"{t},{' pos' if i % 3 else 'neg '}\n" for i, t in enumerate(TEXTS))
    csv += " ,pos\n,neg\nNA,pos\nnull,neg\n"  # four blank texts, as pandas reads them
    local, distributed = both(tmp_path, "d.csv", csv)
    assert local["labels"] == ["neg", "pos"] and local["dropped"] == 4
    assert local["n_val"] == 4 and local["n_train"] == 36
    assert distributed == local


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.jsonl", "d.parquet", "d.csv.gz"])
def test_each_format_gives_the_same_rows(tmp_path, name):
    frame = pd.DataFrame({"text": TEXTS, "label": [i % 3 * 5 for i in range(40)]})  # 0, 5, 10
    local, distributed = both(tmp_path, name, frame, val=frame)
    assert local["labels"] == ["0", "5", "10"]
    assert distributed == local


@pytest.mark.parametrize("name", ["d.csv", "d.parquet"])
def test_whole_float_labels_are_named_as_integers(tmp_path, name):
    frame = pd.DataFrame({"text": TEXTS, "label": [float(i % 2) for i in range(40)]})
    local, distributed = both(tmp_path, name, frame, val=frame)
    assert local["labels"] == ["0", "1"]
    assert distributed == local


def test_fractional_float_labels_keep_their_decimals(tmp_path):
    frame = pd.DataFrame({"text": TEXTS, "label": [[0.5, 1.0][i % 2] for i in range(40)]})
    local, distributed = both(tmp_path, "d.parquet", frame, val=frame)
    assert local["labels"] == ["0.5", "1.0"]
    assert distributed == local


def test_max_train_rows_samples_the_same_number_of_rows(tmp_path):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(300)], "label": [i % 2 for i in range(300)]})
    local, distributed = both(tmp_path, "d.parquet", frame, max_train_rows=50, val_fraction=0.2)
    assert local["n_train"] + local["n_val"] == 50
    assert distributed["n_train"] + distributed["n_val"] == 50
    assert distributed["labels"] == local["labels"] == ["0", "1"]
    assert set(distributed["rows"]) <= {(t, str(i % 2)) for i, t in enumerate(frame["text"])}
    # Seeded: a resumed run reloads the same sample and the same validation rows.
    again = summary(load_data(TrainConfig(data=str(tmp_path / "folder"), max_train_rows=50, val_fraction=0.2)))
    assert again == distributed


def test_validation_data_is_cleaned_like_training_data(tmp_path):
    frame = pd.DataFrame({"text": TEXTS, "label": [["a", "b"][i % 2] for i in range(40)]})
    val = pd.DataFrame({"text": ["x", " ", "y"], "label": ["a", "b", "b"]})
    local, distributed = both(tmp_path, "d.csv", frame, val=val)
    assert local["n_train"] == 40 and local["n_val"] == 2 and local["dropped"] == 1
    assert distributed == local


@pytest.mark.parametrize("name, content, match", [
    ("d.csv", "text,label\ngood,pos\nbad,\nfine,neg\n", r"column 'label' is empty in"),
    ("d.csv", "text,label\ngood,pos\nbad,NA\nfine,neg\n", r"column 'label' is empty in"),
    ("d.parquet", pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", None, "y"]}), r"column 'label' is empty in"),
    ("d.parquet", pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, float("nan"), 0.0]}),
     r"column 'label' is empty in"),
    ("d.csv", "text,label\na,pos\nb,pos\n", r"single class \['pos'\]"),
    ("d.csv", "review,label\nx,1\ny,2\n", r"no text column 'text'; columns are: review, label"),
    ("d.csv", "text,label\n ,a\n,b\n", r"every text in column 'text' is blank"),
    ("d.csv", 'text,label\n"a,1\nb,2,3\n', r"cannot be read as csv"),
])
def test_bad_data_fails_the_same_way(tmp_path, name, content, match):
    both_fail(tmp_path, name, content, match)


def test_blank_texts_fail_when_asked_to(tmp_path):
    both_fail(tmp_path, "d.csv", "text,label\ngood,pos\n  ,neg\nbad,neg\n", r"column 'text' is blank in",
              drop_blank=False)


def test_an_unseen_validation_label_fails(tmp_path):
    both_fail(tmp_path, "d.csv", "text,label\na,pos\nb,neg\n", r"'meh'.* never occurs? in the training data",
              val=pd.DataFrame({"text": ["c", "d"], "label": ["pos", "meh"]}))


def test_a_missing_validation_label_fails(tmp_path):
    both_fail(tmp_path, "d.csv", "text,label\na,pos\nb,neg\n", r"column 'label' is empty in",
              val=pd.DataFrame({"text": ["c", "d"], "label": ["pos", None]}))


def test_a_file_uri_reads_like_the_file(tmp_path):
    frame = pd.DataFrame({"text": TEXTS, "label": [["a", "b"][i % 2] for i in range(40)]})
    path = write(tmp_path / "d.csv", frame)
    local = summary(load_data(TrainConfig(data=str(path))))
    assert summary(load_data(TrainConfig(data=path.as_uri()))) == local


def test_an_s3_prefix_reads_like_the_file(tmp_path, s3):
    frame = pd.DataFrame({"text": TEXTS, "label": [float(i % 2) for i in range(40)]})
    path = write(tmp_path / "d.csv", frame)
    for part in range(2):  # a prefix of parts, as a pipeline exports them
        s3.put_object(Bucket=BUCKET, Key=f"reviews/part-{part}.csv", Body=frame[part::2].to_csv(index=False))
    s3.put_object(Bucket=BUCKET, Key="reviews/_SUCCESS", Body=b"")
    local = summary(load_data(TrainConfig(data=str(path))))
    assert local["labels"] == ["0", "1"]
    assert summary(load_data(TrainConfig(data=f"s3://{BUCKET}/reviews"))) == local
    s3.put_object(Bucket=BUCKET, Key="bad/part-0.csv", Body="text,label\ngood,pos\nbad,\nfine,neg\n")
    with pytest.raises(DataError, match=r"s3://data/bad: column 'label' is empty in 1 row\(s\)"):
        load_data(TrainConfig(data=f"s3://{BUCKET}/bad"))
    with pytest.raises(DataError, match="does not exist"):
        load_data(TrainConfig(data=f"s3://{BUCKET}/nothing-here"))


def test_a_directory_of_parts_with_bookkeeping_files(tmp_path):
    # As Spark or Ray Data export a dataset: parts, a _SUCCESS marker, hidden checksum files.
    rows = [(f"text {i}", ["b", "a", "c"][i % 3]) for i in range(60)] + [("   ", "a")]
    for part in range(3):
        pd.DataFrame(rows[part::3], columns=["review", "stars"]).to_csv(tmp_path / f"part-{part}.csv", index=False)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-0.csv.crc").write_bytes(b"\x00\x01")
    data = load_data(TrainConfig(data=str(tmp_path), text_column="review", label_column="stars"))
    assert data.labels == ["a", "b", "c"] and data.dropped_blank == 1
    assert data.n_train + data.n_val == 60 and data.n_val == 6
    seen = data.train.take_all() + data.val.take_all()
    assert sorted((r[TEXT], data.labels[r[LABEL]]) for r in seen) == sorted(rows[:60])


def test_a_directory_of_mixed_formats_is_refused(tmp_path):
    pd.DataFrame({"text": ["a"], "label": [1]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"text": ["b"], "label": [0]}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"files of several formats \(\.csv, \.parquet\)"):
        load_data(TrainConfig(data=str(tmp_path)))


def test_a_directory_without_data_files_is_refused(tmp_path):
    (tmp_path / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match="holds no data files"):
        load_data(TrainConfig(data=str(tmp_path)))
    with pytest.raises(DataError, match="does not exist"):
        load_data(TrainConfig(data=(tmp_path / "missing").as_uri()))


def test_a_run_name_is_looked_up_on_s3(s3, sentiment_csv):
    # --run-name and --resume read OUTPUT/ray_train/NAME/train_config.json; a missing one on S3
    # must read as "no such run", as a missing local file does.
    from train.config import load_config
    from train.run import check_rerun, saved_config

    assert saved_config(f"s3://{BUCKET}/out", "nightly") is None
    cfg = load_config("tiny", {"data": str(sentiment_csv)})
    s3.put_object(Bucket=BUCKET, Key="out/ray_train/nightly/train_config.json", Body=cfg.model_dump_json())
    assert saved_config(f"s3://{BUCKET}/out", "nightly") == cfg
    check_rerun(cfg, f"s3://{BUCKET}/out", "nightly")
    with pytest.raises(ValueError, match="epochs: 6 -> 7"):
        check_rerun(cfg.model_copy(update={"epochs": 7}), f"s3://{BUCKET}/out", "nightly")
