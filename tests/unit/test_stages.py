import numpy as np
import pytest

from app.compute import encode, plan_chunks, predictions, sigmoid, softmax
from train.artifact import load_tokenizer, read_info
from train.metrics import confusion, scores


@pytest.fixture(scope="module")
def tokenizer(tiny_artifact):
    return load_tokenizer(read_info(tiny_artifact))


def test_encode_truncates_keeps_sep_and_counts_exactly(tokenizer):
    long = "word " * 50
    enc = encode(tokenizer, ["short text", long], max_length=16)
    assert enc["lengths"].tolist()[1] == 16 and enc["full_lengths"][1] == 52
    assert enc["truncated"].tolist() == [False, True]
    rows = np.split(enc["ids"], np.cumsum(enc["lengths"])[:-1])
    assert rows[1][0] == tokenizer.cls_token_id and rows[1][-1] == tokenizer.sep_token_id
    assert rows[0].tolist() == tokenizer("short text")["input_ids"]
    assert enc["ids"].dtype == np.int32


def test_plan_chunks_sorts_by_length_and_caps_rows_and_tokens():
    lengths = np.array([50, 3, 40, 4, 5, 60])
    chunks = plan_chunks(lengths, max_rows=2, max_tokens=100)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(6))
    for chunk in chunks:
        assert len(chunk) <= 2 and len(chunk) * lengths[chunk].max() <= 100
    assert [lengths[c].tolist() for c in chunks] == [[3, 4], [5, 40], [50], [60]]


def test_plan_chunks_keeps_padding_under_half():
    lengths = np.array([12, 128, 10, 120, 11, 125, 9])
    chunks = plan_chunks(lengths, max_rows=64, max_tokens=100_000)
    assert [sorted(lengths[c].tolist()) for c in chunks] == [[9, 10, 11, 12], [120, 125, 128]]


def test_single_row_over_the_token_cap_still_runs():
    assert [c.tolist() for c in plan_chunks(np.array([500]), 8, 100)] == [[0]]


def test_softmax_and_sigmoid_are_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0], [-1e4, 1e4]], dtype=np.float32)
    assert np.allclose(softmax(logits), [[1, 0], [0, 1]])
    assert np.all(np.isfinite(sigmoid(logits))) and np.allclose(sigmoid(logits), [[1, 0], [0, 1]])


def test_predictions_top_k_sorted_and_all_labels_for_none():
    logits = np.array([[0.1, 2.0, 1.0], [3.0, 0.0, 1.0]], dtype=np.float32)
    out = predictions(logits, ["a", "b", "c"], [2, None], multi_label=False)
    assert [s["label"] for s in out[0]["scores"]] == ["b", "c"]
    assert [s["label"] for s in out[1]["scores"]] == ["a", "c", "b"]
    assert out[0]["label"] == "b" and out[1]["label"] == "a"
    assert out[1]["score"] == pytest.approx(np.exp(3.0) / np.exp([3.0, 0.0, 1.0]).sum(), rel=1e-5)  # 0.844
    assert sum(s["score"] for s in out[1]["scores"]) == pytest.approx(1.0)


def test_multi_label_scores_are_independent():
    out = predictions(np.array([[5.0, 5.0]]), ["a", "b"], [None], multi_label=True)
    assert [s["score"] for s in out[0]["scores"]] == pytest.approx([0.9933, 0.9933], abs=1e-4)


def test_scores_from_confusion_matrix():
    result = scores(confusion([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 2), ["n", "p"])
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["per_class"]["p"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["n"]["recall"] == pytest.approx(0.5)
    assert result["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
