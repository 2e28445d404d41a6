"""The v1 HTTP API's request and response shapes (also the OpenAPI document at /docs)."""
from __future__ import annotations

from typing import Annotated

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


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
