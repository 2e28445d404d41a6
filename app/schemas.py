"""The v1 HTTP API's request and response shapes (also the OpenAPI document at /docs)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

Text = Annotated[StrictStr, Field(min_length=1)]


class ClassifyRequest(BaseModel):
    # The one-of rule is in the schema too, so generated clients and fuzzers see it.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]})

    text: Text | None = Field(None, description="One text; give `text` or `texts`")
    texts: list[Text] | None = Field(None, min_length=1, description="Several texts, answered in input order")
    top_k: StrictInt | None = Field(1, ge=1, description="Scores to return per text; null for every label")
    truncate: StrictBool = Field(True, description="Truncate over-long texts (flagged) instead of answering 422")

    @model_validator(mode="after")
    def _one_of(self) -> "ClassifyRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` or `texts`")
        if self.texts is not None and not self.texts:
            raise ValueError("`texts` must hold at least one text")
        return self

    @property
    def items(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts)


class Score(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str | None = Field(description="Single-label: the top label. Multi-label: the top label of `labels`; "
                                          "null when no label reaches its threshold")
    score: float | None = Field(description="The score of `label` (null with it); calibrated when the model is")
    labels: list[Score] | None = Field(None, description="Multi-label models only: every label whose score reaches "
                                                         "its threshold, by score (empty when none does)")
    scores: list[Score] = Field(description="The top_k labels by score (all for top_k null), thresholds aside")
    truncated: bool
    tokens: int


class ModelRef(BaseModel):
    name: str
    version: str


class Usage(BaseModel):
    tokens: int


class ClassifyResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]
    usage: Usage


class ModelInfo(BaseModel):
    name: str
    version: str
    labels: list[str]
    multi_label: bool
    max_length: int
    base_model: str
    metrics: dict
    temperature: float | None = Field(description="Single-label: scores are softmax(logits / temperature)")
    thresholds: dict[str, float] | None = Field(description="Multi-label: the score at which each label is given")


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description="The text to explain (truncated as /v1/classify truncates it; flagged)")
    target: StrictStr | None = Field(None, description="The label to explain; null: the predicted one. Multi-label "
                                     "models explain one label at a time")
    method: Literal["integrated_gradients", "occlusion"] = Field(
        "integrated_gradients", description="integrated_gradients: exact up to `completeness.delta`; occlusion: "
        "the score lost when a word is replaced by [PAD], one forward pass per word")
    steps: StrictInt | None = Field(None, ge=1, description="Integrated-gradients steps (default and maximum: "
                                    "the server's explain_default_steps and explain_max_steps)")


class WordAttribution(BaseModel):
    text: str = Field(description="The word as written: text[start:end]")
    start: int
    end: int
    attribution: float = Field(description="Raw, in probability units: positive pushed towards the target")


class Baseline(BaseModel):
    kind: Literal["pad"]
    score: float | None = Field(description="The target's probability for the baseline (integrated gradients)")


class Completeness(BaseModel):
    sum: float = Field(description="Sum of the attributions")
    expected: float = Field(description="score(text) - score(baseline)")
    delta: float = Field(description="sum - expected: the integration error")


class ExplainUsage(BaseModel):
    tokens: int
    forward_rows: int
    cpu_ms: float


class ExplainResponse(BaseModel):
    model: ModelRef
    prediction: Score = Field(description="The predicted label and its probability")
    target: str
    score: float = Field(description="The target's probability for the text")
    method: str
    steps: int | None
    baseline: Baseline
    attributions: list[WordAttribution] = Field(description="One per word, in text order")
    completeness: Completeness | None = Field(description="Integrated gradients only")
    truncated: bool
    usage: ExplainUsage


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
