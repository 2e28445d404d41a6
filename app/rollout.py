"""One request, one artifact: how a model rollout keeps versions apart.

A new `model` in the application's args gives every deployment a new code version, and Serve
replaces each deployment's replicas on its own schedule (serve_config.yaml: new replicas start
before old ones stop). Meanwhile a handle routes to any running replica of a deployment, old or
new, so without a check one request could be tokenized by the new tokenizer, scored by an old
classifier and labelled by the new postprocessor: wrong labels (or an index error) when the label
sets differ, a wrong version in the answer.

So the tokenizer stamps its encoding with its artifact's version, and the classifier and the
postprocessor refuse work stamped with another version than their own (VersionMismatch). The
ingress then runs the whole batch again from the tokenizer (app/ingress.py), until one version
serves it end to end or `version_wait_s` passes; the answer reports that version.
"""
from __future__ import annotations


class VersionMismatch(Exception):
    """A stage was handed work of another artifact version than the one it serves."""

    def __init__(self, stage: str, wanted: str, serving: str):
        super().__init__(stage, wanted, serving)
        self.stage, self.wanted, self.serving = stage, wanted, serving

    def __str__(self) -> str:
        return f"{self.stage} serves version {self.serving[:16]}, the batch was made by {self.wanted[:16]}"


def check(stage: str, wanted: str, serving: str) -> None:
    if wanted != serving:
        raise VersionMismatch(stage, wanted, serving)
