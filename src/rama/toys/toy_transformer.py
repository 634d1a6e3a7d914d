"""Small GPT-2s trained on tasks whose circuit is known, saved as ordinary Hugging Face folders.

Every toy here is a `GPT2LMHeadModel` with a word-level tokenizer, so plain `transformers` loads it
and `rama.load(folder)` gives it every hook site. "Attention-only" means the MLPs hold one hidden
unit whose weights are zero and frozen: the block still has an MLP module (the architecture is
standard), but it adds exactly zero to the residual stream.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rama.atomic import staged_folder
from rama.errors import ConfigError, InputError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
GROUND_TRUTH_FILE = "ground_truth.json"
CURVE_FILE = "training_curve.json"


@dataclass(frozen=True)
class ToyTransformerConfig:
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    n_ctx: int = 64
    attention_only: bool = True
    d_mlp: int = 256  # used only when attention_only is False

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.n_layers < 1:
            raise ConfigError(f"a transformer needs at least one layer; got n_layers={self.n_layers}")


@dataclass(frozen=True)
class TrainSchedule:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    log_every: int = 25
    progress: bool = True


def word_tokenizer(words: Sequence[str]) -> Any:
    """A whitespace word-level fast tokenizer: ids 0..3 are pad/bos/eos/unk, then `words` in order.
    Like the toys' training data, every encoded text starts with `<bos>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    if len(vocab) != len(SPECIAL_TOKENS) + len(words):
        raise InputError("vocabulary words must be unique and must not repeat the special tokens")
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def build_model(config: ToyTransformerConfig, d_vocab: int, seed: int) -> Any:
    """A freshly initialised GPT-2 (seeded); attention-only models get zero, frozen one-unit MLPs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(
        vocab_size=d_vocab,
        n_positions=config.n_ctx,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=1 if config.attention_only else config.d_mlp,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model: Any = GPT2LMHeadModel(hf_config)
    if config.attention_only:
        for block in model.transformer.h:
            for parameter in block.mlp.parameters():
                parameter.data.zero_()
                parameter.requires_grad_(False)
    return model


Batch = tuple[torch.Tensor, torch.Tensor]  # (tokens [batch, pos], loss mask [batch, pos] over targets)
BatchMaker = Callable[[int, torch.Generator], Batch]


def masked_next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting `tokens[:, t+1]` where `mask[:, t+1]` is set."""
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none"
    ).view(tokens.shape[0], -1)
    weights = mask[:, 1:].float()
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)


def _learning_rate(schedule: TrainSchedule, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < schedule.warmup:
        return schedule.lr * (step + 1) / schedule.warmup
    progress = (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup)
    return schedule.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_toy_transformer(
    model: Any,
    make_batch: BatchMaker,
    schedule: TrainSchedule,
    description: str = "train",
    evaluate: Callable[[Any], dict[str, float]] | None = None,
) -> list[dict[str, float]]:
    """AdamW on the masked next-token loss; returns the logged curve `[{step, loss, …evaluate}, …]`."""
    generator = torch.Generator().manual_seed(schedule.seed + 1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=schedule.lr, weight_decay=schedule.weight_decay)
    curve: list[dict[str, float]] = []
    model.train()
    bar = tqdm(range(schedule.steps), desc=description, disable=not schedule.progress, unit="step")
    for step in bar:
        tokens, mask = make_batch(schedule.batch_size, generator)
        loss = masked_next_token_loss(model(input_ids=tokens).logits, tokens, mask)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(schedule, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        if step % schedule.log_every == 0 or step == schedule.steps - 1:
            point = {"step": step, "loss": loss.item(), **(evaluate(model) if evaluate else {})}
            curve.append(point)
            bar.set_postfix({k: f"{v:.3f}" for k, v in point.items() if k != "step"})
    model.eval()
    return curve


def save_toy(
    out: str | os.PathLike[str],
    model: Any,
    tokenizer: Any,
    ground_truth: dict[str, Any],
    curve: list[dict[str, float]] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the HF folder plus `ground_truth.json` (and the training curve) to a temporary folder,
    then rename it into place, so a reader never sees half a model."""
    with staged_folder(out, overwrite) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / GROUND_TRUTH_FILE).write_text(json.dumps(ground_truth, indent=2) + "\n")
        if curve is not None:
            (staging / CURVE_FILE).write_text(json.dumps(curve) + "\n")
    return Path(out)


def load_ground_truth(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise InputError(f"{str(folder)!r} has no {GROUND_TRUTH_FILE}: it is not a rama toy model")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def config_record(config: ToyTransformerConfig, schedule: TrainSchedule) -> dict[str, Any]:
    schedule_record = {k: v for k, v in asdict(schedule).items() if k != "progress"}
    return {"model": asdict(config), "schedule": schedule_record}
