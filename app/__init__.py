"""Serving: a Ray Serve graph ingress -> tokenizer -> batched model replica -> postprocessor."""
