"""Typed readers for every serving tunable. Values live in serve_config.yaml; unknown keys and bad
values fail at start-up with a sentence that names them."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def read(cls, values: dict | None, where: str):
        try:
            return cls(**(values or {}))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()
            )
            raise ValueError(f"{where}: {problems}") from None


class AppArgs(_Strict):
    """The application's `args` in serve_config.yaml."""

    model: str = Field("models/demo/model", description="Artifact directory (relative paths: from the working directory)")
    name: str = Field("text-classifier", min_length=1, description="Model name reported in responses")
    max_items: int = Field(256, ge=1, le=100_000, description="Texts per request")
    max_text_chars: int = Field(20_000, ge=1, description="Characters per text")
    max_body_bytes: int = Field(1 << 20, ge=64, description="Request body size")
    # Reachable by design: a full request (max_items 256) at the default recipe's max_length (64)
    # holds up to 16,384 tokens, so 256 texts averaging over 32 tokens are refused while short
    # reviews (~12-30 tokens) pass. About 1 s of model time on 2 CPU cores (bench/README.md's
    # in-process limit: 61 texts/s of ~128 tokens), so one request cannot hold a model replica much
    # longer. The ingress warns at start-up when max_items x the artifact's max_length cannot exceed it.
    max_request_tokens: int = Field(8192, ge=1, description="Tokens per request after truncation, summed over its texts")
    max_in_flight: int = Field(192, ge=1, description="Requests an ingress replica holds before answering 503")
    api_keys_file: str | None = Field(None, description="Keys file (python -m app.keys); absent: no auth")
    verify_key_file: str | None = Field(None, description="Ed25519 public key PEM the artifact must be signed for "
                                        "(default: $MODEL_VERIFY_KEY; neither: unsigned artifacts load)")
    model_key_file: str | None = Field(None, description="Model key-encryption key file, or a directory of them, "
                                       "for encrypted artifacts (default: $MODEL_KEY_FILE; with either set, "
                                       "plaintext artifacts are refused)")
    rate_limit_per_s: float = Field(50.0, gt=0, description="Per-key requests/s unless the key sets its own")
    rate_limit_burst: int = Field(100, ge=1)
    request_log_sample_rate: float = Field(0.0, ge=0, le=1, description="Share of requests logged, PII masked")
    # POST /v1/explain: checked at the ingress before anything is queued (app/explainer.py).
    explain_default_steps: int = Field(32, ge=1, description="Integrated-gradients steps when a request sets none")
    explain_max_steps: int = Field(64, ge=1, description="Steps a request may ask for")
    # One step costs about 1 CPU-ms per token for MiniLM-L6 (bench/README.md): 4096 is ~4 CPU-s,
    # 64 steps of a 64-token text, the longest the default recipe keeps.
    explain_max_step_tokens: int = Field(4096, ge=1, description="Steps x tokens of one explanation")
    explain_timeout_s: float = Field(20.0, gt=0, description="Deadline of one explanation, queueing included")
    explain_rate_limit_per_s: float = Field(1.0, gt=0, description="Per-key explanations/s (a bucket of its own)")
    explain_rate_limit_burst: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _explain_default_within_max(self) -> "AppArgs":
        if self.explain_default_steps > self.explain_max_steps:
            raise ValueError(f"explain_default_steps ({self.explain_default_steps}) exceeds explain_max_steps "
                             f"({self.explain_max_steps})")
        return self


class IngressConfig(_Strict):
    """user_config of the Ingress: how concurrent HTTP requests are coalesced into one graph call."""

    max_batch_texts: int = Field(64, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)
    max_concurrent_batches: int = Field(2, ge=1, le=64,
                                        description="Batches at the tokenizer or model per ingress replica")
    version_wait_s: float = Field(20.0, ge=0, le=300, description="During a rollout, how long a batch may be run "
                                  "again until one model version serves it end to end (app/rollout.py)")


class ModelConfig(_Strict):
    """user_config of the Classifier replica: its own batching, applied live in reconfigure()."""

    max_batch_size: int = Field(64, ge=1, le=4096, description="Texts per forward pass")
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=1)
    max_batch_tokens: int = Field(8192, ge=8, description="Padded tokens per forward pass")
    torch_threads: int | None = Field(None, ge=1, le=256, description="Default: the replica's CPU share "
                                      "(ONNX Runtime's intra-op threads under the onnx runtimes)")
    # app/runtimes.py: torch (the only one on GPU), or ONNX Runtime on CPU, fp32 or dynamic int8.
    runtime: Literal["torch", "onnx", "onnx-int8"] = Field("torch", description="What runs the forward passes")


class ExplainerConfig(_Strict):
    """user_config of the Explainer replica: how one explanation runs (the request limits are args)."""

    batch_tokens: int = Field(2048, ge=8, description="Rows x tokens per forward+backward pass; the deadline "
                              "is checked between passes")
    torch_threads: int | None = Field(None, ge=1, le=256, description="Default: the replica's CPU share")
    # Ray's num_cpus is a scheduling share, not a limit: an explanation takes a whole core from
    # the other stages. A higher nice value lets them win a contended core; on 2 cores it did not
    # stop W1 c=16 losing about a third beside back-to-back explanations (bench/README.md).
    nice: int = Field(10, ge=0, le=19, description="OS scheduling niceness of the explaining threads")
