"""The SAE every architecture shares: SAELens's weight names and shapes, one registry.

`W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_out]`, `b_dec [d_out]`, optional
`W_skip [d_out, d_in]`. An SAE has `d_out == d_in` and subtracts `b_dec` from its input; a
transcoder reads one site and predicts another (`d_out` may differ, no `b_dec` subtraction).
Architectures differ only in `activate` (pre-activations -> sparse codes) and `loss`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

REGISTRY: dict[str, type[SAE]] = {}


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int
    architecture: str = "topk"
    d_out: int | None = None  # None: an SAE (d_out = d_in); else a transcoder
    k: int | None = None  # topk / batchtopk / matryoshka
    l1_coefficient: float = 0.0  # relu ("standard") and gated
    l0_coefficient: float = 0.0  # jumprelu
    jumprelu_bandwidth: float = 0.1  # in the training scale, where E‖x‖² = d_in
    initial_threshold: float = 0.3
    skip_connection: bool = False
    apply_b_dec_to_input: bool = True  # SAEs only; Gemma Scope's JumpReLU SAEs do not
    aux_k_coefficient: float = 1 / 32
    dtype: str = "float32"
    model_name: str = ""
    hook_name: str = ""  # the site it reads
    hook_name_out: str = ""  # transcoders: the site it predicts
    context_size: int = 128
    prepend_bos: bool = True
    exclude_special_tokens: bool = True
    input_scale: float = 1.0  # the normalisation factor folded into the weights at save time
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_transcoder(self) -> bool:
        return self.d_out is not None and (self.d_out != self.d_in or bool(self.hook_name_out))

    @property
    def output_dim(self) -> int:
        return self.d_out if self.d_out is not None else self.d_in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fired_and_l0(codes: torch.Tensor) -> tuple[torch.Tensor, float]:
    """From dense codes `[batch, d_sae]`: latents that fired, and the mean number active per token."""
    active = codes > 0
    return active.any(0), float(active.sum(-1).float().mean())


@dataclass
class LossOutput:
    loss: torch.Tensor
    reconstruction: torch.Tensor  # [batch, d_out]
    fired: torch.Tensor  # [d_sae] bool: which latents fired anywhere in the batch
    terms: dict[str, float]  # includes "l0"


def register(name: str) -> Any:
    def decorate(cls: type[SAE]) -> type[SAE]:
        cls.architecture = name
        REGISTRY[name] = cls
        return cls

    return decorate


def sae_class(architecture: str) -> type[SAE]:
    if architecture not in REGISTRY:
        raise ValueError(f"unknown SAE architecture {architecture!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[architecture]


class SAE(nn.Module):
    """Base class; `SAE.create(cfg)` builds the registered architecture, `SAE.load(path)` reads one."""

    architecture: ClassVar[str] = ""
    decoder_unit_norm: ClassVar[bool] = True  # rows of W_dec kept at unit norm during training
    training_coefficient: ClassVar[str | None] = None  # the sparsity coefficient training needs > 0
    takes_k: ClassVar[bool] = False  # sparsity set by k active latents per token, not by a penalty
    # An architecture where most latents fire at initialisation (no top-k cut) starts its tied
    # encoder at d_in / d_sae of W_dec.T, so the first reconstruction is near x and not d_sae / d_in
    # times it; at full scale the first hundred steps only undo the blow-up.
    dense_at_init: ClassVar[bool] = False

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.output_dim
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.W_skip = nn.Parameter(torch.zeros(d_out, d_in)) if cfg.skip_connection else None
        self.reset_parameters()

    @staticmethod
    def create(cfg: SAEConfig) -> SAE:
        return sae_class(cfg.architecture)(cfg)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Decoder rows random unit vectors; encoder their transpose (tied init, Gao et al. 2024)."""
        with torch.no_grad():
            direction = torch.randn(self.W_dec.shape, generator=generator)
            self.W_dec.copy_(direction / direction.norm(dim=1, keepdim=True))
            if self.cfg.d_in == self.cfg.output_dim:
                scale = self.cfg.d_in / self.cfg.d_sae if self.dense_at_init else 1.0
                self.W_enc.copy_(self.W_dec.T * scale)
            else:
                bound = 1 / math.sqrt(self.cfg.d_in)
                self.W_enc.copy_(torch.empty(self.W_enc.shape).uniform_(-bound, bound, generator=generator))

    @property
    def subtracts_b_dec(self) -> bool:
        return self.cfg.apply_b_dec_to_input and not self.cfg.is_transcoder

    def check_latents(self, latents: Sequence[int]) -> list[int]:
        """The ids as ints, or an IndexError naming the ones this SAE does not have and its range."""
        width = self.cfg.d_sae
        bad = [int(i) for i in latents if not 0 <= int(i) < width]
        if bad:
            raise IndexError(f"latents {bad[:5]} are outside this SAE's {width} latents (0 … {width - 1})")
        return [int(i) for i in latents]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., d_in]` -> `[..., d_sae]`."""
        if self.subtracts_b_dec:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    @abstractmethod
    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Inference-time sparse codes from pre-activations (dense tensor, zeros where inactive)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations `[..., d_sae]`."""
        return self.activate(self.pre_activations(x))

    def decode(self, codes: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """`[..., d_sae]` -> `[..., d_out]`; a skip transcoder also needs its input `x`."""
        out = codes @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("a skip transcoder's decode needs the input x for its skip connection")
            out = out + x @ self.W_skip.T
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    @abstractmethod
    def loss(self, x: torch.Tensor, target: torch.Tensor, state: TrainState) -> LossOutput:
        """Training loss on a batch `[batch, d_in]` -> target `[batch, d_out]`."""

    def skip(self, x: torch.Tensor) -> torch.Tensor | float:
        return 0.0 if self.W_skip is None else x @ self.W_skip.T

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        if self.decoder_unit_norm:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Keep unit-norm decoder rows on their sphere: drop the gradient along each row."""
        if self.decoder_unit_norm and self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad.sub_(parallel * self.W_dec)

    def optimizer_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """Parameters with their learning-rate multipliers."""
        return [(list(self.parameters()), 1.0)]

    def threshold_for_export(self) -> torch.Tensor | None:
        """A JumpReLU threshold this SAE is equivalent to at inference, if any."""
        return None

    def calibrate(self, inputs: torch.Tensor) -> None:
        """After training, fix what inference needs from the data (inputs in the training scale)."""

    def save(self, path: Any, sparsity: torch.Tensor | None = None) -> None:
        """SAELens v6 folder; `sparsity` is each latent's log10 firing density."""
        from rama.sae.io import save_sae

        save_sae(self, path, sparsity)

    @staticmethod
    def load(path: Any, device: str | torch.device = "cpu") -> SAE:
        from rama.sae.io import load_sae

        return load_sae(path, device=device)


@dataclass
class TrainState:
    """What a loss needs to know about training progress."""

    step: int = 0
    total_steps: int = 1
    tokens_since_fired: torch.Tensor | None = None  # [d_sae]
    dead_after_tokens: int = 1_000_000
    sparsity_warmup_fraction: float = 0.05
    coefficient_multiplier: float = 1.0  # moved by training's target-L0 controller, if any
    target_l0: float | None = None  # training's target L0, for losses that penalise the miss itself

    def sparsity_scale(self) -> float:
        warmup = max(1, int(self.total_steps * self.sparsity_warmup_fraction))
        return min(1.0, (self.step + 1) / warmup) * self.coefficient_multiplier

    def dead_mask(self) -> torch.Tensor | None:
        if self.tokens_since_fired is None:
            return None
        return self.tokens_since_fired >= self.dead_after_tokens


def mse_fvu(reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed-over-dims squared error averaged over the batch, fraction of variance unexplained)."""
    error = (reconstruction - target).pow(2).sum(-1)
    variance = (target - target.mean(0)).pow(2).sum(-1)
    return error.mean(), error.sum() / variance.sum().clamp_min(1e-12)
