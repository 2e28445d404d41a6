import pandas as pd
import pytest

from train.config import TrainConfig
from train.data import DataError, clean, label_list, load_local, read_table, stratified_split


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_running():
    # load_local hands back ray.data datasets, which start a local Ray on first use; a later
    # module's ray.init must not find it running.
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cfg(tmp_path, **kw):
    return TrainConfig(text_column="text", label_column="label", **kw)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reads_each_format(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    frame.to_csv(tmp_path / "d.csv.gz", index=False)
    for name in ("d.parquet", "d.jsonl", "d.tsv", "d.csv.gz"):
        assert read_table(tmp_path / name)["text"].tolist() == ["a", "b"], name


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file does not exist"):
        read_table(tmp_path / "nope.csv")


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown format '.xlsx'"):
        read_table(write(tmp_path, "d.xlsx", "x"))


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="file is empty"):
        read_table(write(tmp_path, "d.csv", ""))
    with pytest.raises(DataError, match="no data rows"):
        read_table(write(tmp_path, "h.csv", "text,label\n"))


def test_missing_column_lists_the_columns(tmp_path):
    path = write(tmp_path, "d.csv", "review,label\nx,1\n")
    with pytest.raises(DataError, match=r"d.csv: no text column 'text'; columns are: review, label"):
        load_local(cfg(tmp_path, data=path))


def test_blank_texts_are_dropped_and_counted(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ngood,pos\n  ,neg\n,neg\nbad,neg\nfine,pos\nawful,neg\n")
    data = load_local(cfg(tmp_path, data=path, val_fraction=0.4))
    assert data.dropped_blank == 2 and data.n_train + data.n_val == 4


def test_blank_texts_are_an_error_when_asked(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ngood,pos\n  ,neg\nbad,neg\n")
    with pytest.raises(DataError, match=r"column 'text' is blank in data row\(s\) \[2\]"):
        load_local(cfg(tmp_path, data=path, drop_blank=False))


def test_missing_label_names_the_row(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ngood,pos\nbad,\n")
    with pytest.raises(DataError, match=r"column 'label' is empty in data row\(s\) \[2\]"):
        load_local(cfg(tmp_path, data=path))


def test_single_class(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\na,pos\nb,pos\n")
    with pytest.raises(DataError, match="single class \\['pos'\\]"):
        load_local(cfg(tmp_path, data=path))


def test_validation_label_never_seen(tmp_path):
    train = write(tmp_path, "t.csv", "text,label\na,pos\nb,neg\n")
    val = write(tmp_path, "v.csv", "text,label\nc,pos\nd,meh\n")
    with pytest.raises(DataError, match="label 'meh' .*data row 2.*never occurs"):
        load_local(cfg(tmp_path, data=train, val_data=val))


def test_integer_labels_sort_numerically():
    assert label_list(["10", "2", "1"]) == ["1", "2", "10"]
    assert label_list(["rotten", "fresh"]) == ["fresh", "rotten"]


def test_float_read_integer_labels_stay_integers():
    frame = pd.DataFrame({"text": ["a", "b"], "label": [1.0, 0.0]})
    out, _ = clean(frame, "f", "text", "label", drop_blank=True)
    assert out["label"].tolist() == ["1", "0"]


def test_stratified_split_is_seeded_and_keeps_classes():
    frame = pd.DataFrame({"text": list("abcdefghijklmnopqrst"), "label": ["x"] * 15 + ["y"] * 5})
    train, val = stratified_split(frame, 0.2, seed=1)
    again, _ = stratified_split(frame, 0.2, seed=1)
    assert sorted(val["label"]) == ["x", "x", "x", "y"]
    assert len(train) == 16 and train.equals(again)
