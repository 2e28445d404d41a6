import pandas as pd
import pytest

from train.config import TrainConfig
from train.data import DataError, clean, label_list, prepare_local, read_table, stratified_split, val_rows

# prepare_local is load_local before its rows become Ray datasets: these tests start no Ray.
# tests/integration/test_data_paths.py runs the same inputs through both data paths.


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
        prepare_local(cfg(tmp_path, data=path))


def test_blank_texts_are_dropped_and_counted(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ngood,pos\n  ,neg\n,neg\nbad,neg\nfine,pos\nawful,neg\n")
    train, val, _, dropped = prepare_local(cfg(tmp_path, data=path, val_fraction=0.4))
    assert dropped == 2 and len(train) + len(val) == 4


def test_blank_texts_are_an_error_when_asked(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ngood,pos\n  ,neg\nbad,neg\n")
    with pytest.raises(DataError, match=r"column 'text' is blank in data row\(s\) \[2\]"):
        prepare_local(cfg(tmp_path, data=path, drop_blank=False))


def test_missing_label_names_the_row(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ngood,pos\nbad,\n")
    with pytest.raises(DataError, match=r"column 'label' is empty in data row\(s\) \[2\]"):
        prepare_local(cfg(tmp_path, data=path))


def test_single_class(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\na,pos\nb,pos\n")
    with pytest.raises(DataError, match="single class \\['pos'\\]"):
        prepare_local(cfg(tmp_path, data=path))


def test_validation_label_never_seen(tmp_path):
    train = write(tmp_path, "t.csv", "text,label\na,pos\nb,neg\n")
    val = write(tmp_path, "v.csv", "text,label\nc,pos\nd,meh\n")
    with pytest.raises(DataError, match="label 'meh' .*data row 2.*never occurs"):
        prepare_local(cfg(tmp_path, data=train, val_data=val))


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


def test_fractional_float_labels_keep_their_decimals():
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 0.5, 0.0]})
    out, _ = clean(frame, "f", "text", "label", drop_blank=True)
    assert out["label"].tolist() == ["1.0", "0.5", "0.0"]


def test_max_train_rows_samples_before_the_split(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(100)))
    train, val, labels, _ = prepare_local(cfg(tmp_path, data=path, max_train_rows=30))
    assert len(train) + len(val) == 30 and labels == ["0", "1"]
    again, _, _, _ = prepare_local(cfg(tmp_path, data=path, max_train_rows=30))
    assert train.equals(again)


def test_validation_share_per_class():
    assert [val_rows(n, 0.1) for n in (1, 2, 5, 10, 14, 26, 1000)] == [0, 1, 1, 1, 1, 3, 100]


def test_multi_label_rows_become_label_sets_and_multi_hot(tmp_path):
    from train.data import LABEL, encode_labels

    path = write(tmp_path, "t.csv", "text,tags\n"
                 + "".join(f"goal {i},sports| tech\nbank {i},business\nnews {i},\nchip {i},tech|\n" for i in range(5)))
    train, val, labels, _ = prepare_local(TrainConfig(data=path, label_column="tags", multi_label=True))
    assert labels == ["business", "sports", "tech"] and len(train) + len(val) == 20
    rows = encode_labels(pd.concat([train, val]), labels, multi=True).set_index("text")[LABEL]
    assert rows["goal 0"].tolist() == [0, 1, 1] and rows["news 0"].tolist() == [0, 0, 0]
    assert rows["chip 0"].tolist() == [0, 0, 1] and rows["bank 0"].dtype == "float32"
    # Stratified by label set: every set with 2+ rows has one in validation.
    assert sorted(val["label"].str.replace("\x1f", "|")) == ["", "business", "sports|tech", "tech"]


def test_zero_one_label_columns_in_their_given_order(tmp_path):
    path = write(tmp_path, "t.csv", "text,tech,sports\n" + "".join(f"a {i},1,0\nb {i},0,0\nc {i},1,1\n" for i in range(4)))
    train, val, labels, _ = prepare_local(cfg(tmp_path, data=path, label_columns=["tech", "sports"]))
    assert labels == ["tech", "sports"]
    assert set(pd.concat([train, val])["label"].str.replace("\x1f", "|")) == {"tech", "", "sports|tech"}
    bad = write(tmp_path, "bad.csv", "text,tech,sports\na,1,0\nb,2,0\n")
    with pytest.raises(DataError, match=r"label column 'tech' must hold 0 or 1; data row 2 holds 2"):
        prepare_local(cfg(tmp_path, data=bad, label_columns=["tech", "sports"]))


def test_multi_label_validation_labels_must_be_known(tmp_path):
    data = write(tmp_path, "t.csv", "text,label\na,x|y\nb,y\nc,x\n")
    val = write(tmp_path, "v.csv", "text,label\nd,x\ne,y|z\n")
    with pytest.raises(DataError, match=r"label\(s\) \['z'\] in column 'label' \(data row 2\) never occur"):
        prepare_local(cfg(tmp_path, data=data, val_data=val, multi_label=True))
