"""Attributions (app/attribution.py) against their axioms, Captum, and a model whose answer is known."""
import random

import numpy as np
import pytest
import torch

from app import attribution, compute
from tests.conftest import make_artifact
from train.artifact import load_model, load_tokenizer, read_info

# Integration error allowed at the default steps (32), in probability units. A pretrained encoder's
# output is smooth along the path (the probe in the design brief: 1e-4 at 20 steps, MiniLM-L6).
TOLERANCE = 1e-3
DEFAULT_STEPS = 32
TEXT = "The  café's striker scored twice, winning — unbelievably — the final!"
# Vocabulary of the known-driver task: a text is positive iff it holds DRIVER.
DRIVER = "zebra"
WORDS = ("river stone table garden window paper music quiet yellow market bridge letter winter coffee mountain "
         "pencil silver orange candle forest ladder planet basket rocket thunder violin harbor meadow lantern").split()


@pytest.fixture(scope="module")
def tiny(tiny_artifact):
    info = read_info(tiny_artifact)
    return info, load_model(info), load_tokenizer(info)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The packaged pretrained MiniLM-L6 with a fresh head, scaled up so that texts move the
    scores as a fine-tuned head would (an untrained one keeps every score near 1/3)."""
    info = read_info(make_artifact(tmp_path_factory.mktemp("minilm") / "model", labels=("a", "b", "c")))
    model = load_model(info)
    with torch.no_grad():
        model.classifier.weight.mul_(40)
    return info, model, load_tokenizer(info)


def _ig(model, tokenizer, text, target=1, steps=DEFAULT_STEPS, batch_tokens=2048, max_length=32):
    tokens = attribution.tokenize(tokenizer, text, max_length)
    base = attribution.baseline_ids(tokens.ids, set(tokenizer.all_special_ids), tokenizer.pad_token_id)
    return tokens, base, attribution.integrated_gradients(model, tokens.ids, base, target, False, steps, batch_tokens)


def test_matches_captum_layer_integrated_gradients(tiny):
    from captum.attr import LayerIntegratedGradients

    info, model, tokenizer = tiny
    tokens, base, ours = _ig(model, tokenizer, TEXT)

    def probability(ids):
        return torch.softmax(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, -1)[:, 1]

    lig = LayerIntegratedGradients(probability, model.get_input_embeddings())
    theirs = lig.attribute(torch.tensor([tokens.ids]), baselines=torch.tensor([base]), n_steps=DEFAULT_STEPS,
                           method="gausslegendre").sum(-1)[0].detach().numpy()
    assert np.abs(ours["tokens"]).max() > 0
    np.testing.assert_allclose(ours["tokens"], theirs, rtol=0, atol=1e-6 * np.abs(theirs).max())


@pytest.mark.parametrize("target", [0, 2])
def test_completeness_at_default_steps(minilm, target):
    info, model, tokenizer = minilm
    out = attribution.explain(model, tokenizer, TEXT, info.max_length, target, False, "integrated_gradients",
                              DEFAULT_STEPS)
    c = out["completeness"]
    assert c["sum"] == pytest.approx(sum(w["attribution"] for w in out["attributions"]), abs=1e-9)
    assert c["expected"] == pytest.approx(out["score"] - out["baseline_score"], abs=1e-9)
    assert abs(c["expected"]) > 0.05  # the check is not vacuous: the text moves the score
    assert abs(c["delta"]) < TOLERANCE, c


def test_special_tokens_get_zero_and_chunking_changes_nothing(tiny):
    _, model, tokenizer = tiny
    tokens, _, whole = _ig(model, tokenizer, TEXT, batch_tokens=4096)
    _, _, chunked = _ig(model, tokenizer, TEXT, batch_tokens=len(tokens.ids))  # one step per pass
    specials = [i for i, w in enumerate(tokens.words) if w is None]
    assert specials == [0, len(tokens.ids) - 1] and (whole["tokens"][specials] == 0).all()
    np.testing.assert_allclose(chunked["tokens"], whole["tokens"], rtol=0, atol=1e-6 * np.abs(whole["tokens"]).max())
    _, _, again = _ig(model, tokenizer, TEXT, batch_tokens=4096)
    assert again["tokens"].tobytes() == whole["tokens"].tobytes()


def test_words_carry_offsets_into_the_original_text(tiny):
    info, model, tokenizer = tiny
    out = attribution.explain(model, tokenizer, TEXT, 32, None, False, "integrated_gradients", 8)
    words = out["attributions"]
    assert [w["text"] for w in words][:6] == ["The", "café", "'", "s", "striker", "scored"]
    assert all(TEXT[w["start"]: w["end"]] == w["text"] for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert out["completeness"]["sum"] == pytest.approx(sum(w["attribution"] for w in words), abs=1e-12)
    assert out["target"] == int(np.argmax(out["probabilities"])) and out["truncated"] is False


def test_truncation_is_the_classify_paths(tiny):
    _, _, tokenizer = tiny
    long = " ".join(f"word{i}" for i in range(40))
    tokens = attribution.tokenize(tokenizer, long, 16)
    assert tokens.ids == compute.encode(tokenizer, [long], 16)["ids"].tolist()
    assert tokens.truncated and tokens.words[-1] is None and len(tokens.ids) == 16
    words = attribution.group_words(long, tokens, per_token=np.ones(16))
    assert long.startswith(" ".join(w["text"] for w in words))  # only the kept words, in order


def _rows(n, seed):
    rng, out = random.Random(seed), []
    for _ in range(n):
        words, positive = rng.sample(WORDS, rng.randint(4, 9)), rng.random() < 0.5
        if positive:
            words.insert(rng.randrange(len(words) + 1), DRIVER)
        out.append((" ".join(words), int(positive)))
    return out


@pytest.fixture(scope="module")
def driver_model(tiny):
    """A tiny BERT trained for seconds on texts that are positive iff they hold DRIVER."""
    from transformers import AutoModelForSequenceClassification

    info, _, tokenizer = tiny
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(load_model(info).config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data, rng = _rows(2048, 0), random.Random(0)
    model.train()
    for _ in range(60):
        batch = rng.sample(data, 32)
        enc = tokenizer([t for t, _ in batch], padding=True, return_tensors="pt")
        model(**enc, labels=torch.tensor([y for _, y in batch])).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _top_words(model, tokenizer, texts, method="integrated_gradients"):
    tops = []
    for text in texts:
        out = attribution.explain(model, tokenizer, text, 32, 1, False, method, DEFAULT_STEPS)
        tops.append(max(out["attributions"], key=lambda w: w["attribution"])["text"])
    return tops


def test_known_driver_gets_the_top_attribution_and_random_weights_lose_it(tiny, driver_model):
    _, _, tokenizer = tiny
    held_out = [t for t, y in _rows(100, 1) if y][:10]
    with torch.no_grad():
        enc = tokenizer(held_out, padding=True, return_tensors="pt")
        assert (driver_model(**enc).logits.argmax(-1) == 1).all()  # the model did learn the rule
    for method in attribution.METHODS:
        assert _top_words(driver_model, tokenizer, held_out, method).count(DRIVER) >= 9, method
    # Adebayo et al. 2018's sanity check: the same architecture with fresh random weights must not
    # rank the same way, or the attributions would be reading the input, not the model.
    torch.manual_seed(1)
    randomised = type(driver_model)(driver_model.config).eval()
    assert _top_words(randomised, tokenizer, held_out).count(DRIVER) <= 5


def test_occlusion_scores_each_word_by_what_its_removal_costs(tiny):
    info, model, tokenizer = tiny
    out = attribution.explain(model, tokenizer, "a fine film", 32, 0, False, "occlusion", 0)
    assert [w["text"] for w in out["attributions"]] == ["a", "fine", "film"]
    assert out["rows"] == 4 and out["completeness"] is None
    tokens = attribution.tokenize(tokenizer, "a fine film", 32)
    occluded = list(tokens.ids)
    occluded[2] = tokenizer.pad_token_id  # "fine"
    probs = attribution.probabilities(model, occluded, False)
    assert out["attributions"][1]["attribution"] == pytest.approx(out["score"] - probs[0], abs=1e-6)


def test_deadline_is_checked_between_chunks(tiny):
    _, model, tokenizer = tiny
    with pytest.raises(attribution.DeadlineExceeded):
        attribution.explain(model, tokenizer, TEXT, 32, 1, False, "integrated_gradients", 8, deadline=0.0)


def test_step_tokens_counts_the_work():
    assert attribution.step_tokens("integrated_gradients", 32, 20) == 640
    assert attribution.step_tokens("occlusion", 32, 20) == 400
