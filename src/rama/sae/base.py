"""The SAE every architecture shares: SAELens's weight names and shapes, one registry.

`W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_out]`, `b_dec [d_out]`, optional
`W_skip [d_out, d_in]`. An SAE has `d_out == d_in` and subtracts `b_dec` from its input; a
transcoder reads one site and predicts another (`d_out` may differ, no `b_dec` subtraction).
Architectures differ only in `activate` (pre-activations -> sparse codes) and `loss`.
"""

from __future__ import annotations

import copy
import math
import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from rama import __version__
from rama.errors import ConfigError, RamaError
from rama.metrics import unexplained_fraction
from rama.sae.io import SAEFiles, SAEFormatError, expect_shapes, read_sae_files, write_saelens

REGISTRY: dict[str, type[SAE]] = {}
DEFAULT_ARCHITECTURE = "topk"


class LatentRangeError(RamaError, IndexError):
    """Latent ids outside an SAE's range: a user's mistake, and still an IndexError for old callers."""


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A config field with its help text (what `rama sae train --help` prints for the option made
    from it); `aliases=("old_name",)` keeps older option names working."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class ArchConfig:
    """An architecture's own settings. Each architecture subclasses it with its fields (named as
    SAELens's cfg.json names them), so a new architecture adds its settings without touching
    `SAEConfig`, the trainer or the CLI; the base class is the config of an architecture with none."""

    def check(self, d_sae: int) -> None:
        """Raise a ConfigError naming a setting outside its range (for an SAE of `d_sae` latents)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SAEConfig:
    """What every architecture shares, plus `arch`: the architecture's own settings (its
    `config_class`; left out, the architecture's defaults)."""

    d_in: int
    d_sae: int
    architecture: str = DEFAULT_ARCHITECTURE
    d_out: int | None = None  # None: an SAE (d_out = d_in); else a transcoder
    arch: ArchConfig = field(default_factory=ArchConfig)
    skip_connection: bool = False
    apply_b_dec_to_input: bool = True  # SAEs only; Gemma Scope's JumpReLU SAEs do not
    dtype: str = "float32"
    model_name: str = ""
    hook_name: str = ""  # the site it reads
    hook_name_out: str = ""  # transcoders: the site it predicts
    context_size: int = 128
    prepend_bos: bool = True
    exclude_special_tokens: bool = True
    input_scale: float = 1.0  # the normalisation factor folded into the weights at save time
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        wanted = sae_class(self.architecture).config_class
        if type(self.arch) is ArchConfig and wanted is not ArchConfig:
            self.arch = wanted()
        if not isinstance(self.arch, wanted):
            raise ConfigError(
                f"a {self.architecture!r} SAE takes a {wanted.__name__}, not a {type(self.arch).__name__}"
            )

    @property
    def is_transcoder(self) -> bool:
        return self.d_out is not None and (self.d_out != self.d_in or bool(self.hook_name_out))

    @property
    def output_dim(self) -> int:
        return self.d_out if self.d_out is not None else self.d_in

    def to_dict(self) -> dict[str, Any]:
        """One flat dict: the shared fields with the architecture's settings after `d_out` (the
        layout of rama's block in cfg.json, which `from_dict` reads back, old files included)."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "arch"}
        head = {name: shared.pop(name) for name in ("d_in", "d_sae", "architecture", "d_out")}
        return {**head, **self.arch.to_dict(), **copy.deepcopy(shared)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], architecture: str | None = None) -> SAEConfig:
        """From `to_dict`'s layout (or an older one holding every architecture's settings, of which
        only this architecture's are kept); `architecture` overrides the recorded one."""
        name = architecture or str(raw.get("architecture", DEFAULT_ARCHITECTURE))
        shared = {f.name for f in fields(cls)} - {"arch", "architecture"}
        settings = {f.name for f in fields(sae_class(name).config_class)}
        return cls(
            **{key: value for key, value in raw.items() if key in shared},
            architecture=name,
            arch=sae_class(name).config_class(**{k: v for k, v in raw.items() if k in settings}),
        )


def arch_config(architecture: str, **settings: Any) -> ArchConfig:
    """The architecture's config from keyword settings; a setting it does not have is refused by name."""
    config_class = sae_class(architecture).config_class
    known = [f.name for f in fields(config_class)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(
            f"the {architecture!r} architecture has no setting {', '.join(unknown)}; "
            f"its settings: {', '.join(known) or 'none'}"
        )
    return config_class(**settings)


def fired_and_l0(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From dense codes `[batch, d_sae]`: latents that fired `[d_sae]`, and the mean number active
    per token (a 0-d tensor: it stays on the device until someone logs it)."""
    active = codes > 0
    return active.any(0), active.sum(-1).float().mean()


def fired_latents(latents: torch.Tensor, active: torch.Tensor, d_sae: int) -> torch.Tensor:
    """`[d_sae]` bool: which of the selected `latents` were `active` (same shape), without the host
    sync a boolean-mask index would cost."""
    hits = torch.zeros(d_sae, device=latents.device).index_add_(
        0, latents.flatten(), active.flatten().float()
    )
    return hits > 0


@dataclass
class LossOutput:
    loss: torch.Tensor
    reconstruction: torch.Tensor  # [batch, d_out]
    fired: torch.Tensor  # [d_sae] bool: which latents fired anywhere in the batch
    terms: dict[str, torch.Tensor]  # 0-d tensors, detached; includes "l0". Moved to the host when logged


def register(name: str, cls: type[SAE]) -> type[SAE]:
    """Register an architecture under `name` (the registrations sit in `rama.sae.registry`)."""
    if name in REGISTRY:
        raise ConfigError(
            f"an SAE architecture named {name!r} is already registered ({REGISTRY[name].__name__})"
        )
    cls.architecture = name
    REGISTRY[name] = cls
    return cls


def sae_class(architecture: str) -> type[SAE]:
    if architecture not in REGISTRY:
        raise ConfigError(f"unknown SAE architecture {architecture!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[architecture]


class SAE(nn.Module):
    """Base class; `SAE.create(cfg)` builds the registered architecture, `SAE.load(path)` reads one.

    An architecture says here what it needs: its settings (`config_class`), its training penalty,
    the SAELens architecture it is saved as and the ones it reads, its weights beyond the shared
    ones (`extra_weights`, `load_weights`) and the cfg.json keys it adds (`saelens_cfg`)."""

    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[ArchConfig]] = ArchConfig
    saelens_architecture: ClassVar[str] = ""  # the SAELens architecture it is saved as
    reads_saelens: ClassVar[tuple[str, ...]] = ()  # SAELens architectures loaded as this one
    loads_as: ClassVar[str] = ""  # the architecture its saved folder loads as ("": itself)
    decoder_unit_norm: ClassVar[bool] = True  # rows of W_dec kept at unit norm during training
    training_coefficient: ClassVar[str | None] = None  # the setting training needs > 0 (a penalty's weight)
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
            raise LatentRangeError(
                f"latents {bad[:5]} are outside this SAE's {width} latents (0 … {width - 1})"
            )
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

    def saelens_cfg(self) -> dict[str, Any]:
        """cfg.json in SAELens v6's layout, rama's full config under "rama" (and `saelens_settings`)."""
        c = self.cfg
        cfg: dict[str, Any] = {
            "d_in": c.d_in,
            "d_sae": c.d_sae,
            "dtype": c.dtype,
            "device": "cpu",
            "architecture": self.saelens_architecture or self.architecture,
            "apply_b_dec_to_input": self.subtracts_b_dec,
            "normalize_activations": "none",  # rama folds its training scale into the weights
            "reshape_activations": "none",
            "metadata": {
                "model_name": c.model_name,
                "hook_name": c.hook_name,
                "hook_head_index": None,
                "context_size": c.context_size,
                "prepend_bos": c.prepend_bos,
                "exclude_special_tokens": c.exclude_special_tokens,
                # the cfg.json layout version SAELens keys its parsing on (v6), not a claim to be SAELens
                "sae_lens_version": "6.0.0",
                "sae_lens_training_version": None,
                "rama_version": __version__,
            },
            "rama": c.to_dict(),
        } | self.saelens_settings()
        if c.is_transcoder:
            cfg |= {"d_out": c.output_dim, "hook_name_out": c.hook_name_out}
        return cfg

    def saelens_settings(self) -> dict[str, Any]:
        """The cfg.json keys this architecture adds for SAELens (TopK: its k)."""
        return {}

    def extra_weights(self) -> dict[str, torch.Tensor]:
        """Saved weights beyond W_enc, W_dec, b_dec and W_skip (the encoder bias, a threshold …)."""
        threshold = self.threshold_for_export()
        return {"b_enc": self.b_enc} | ({} if threshold is None else {"threshold": threshold})

    @classmethod
    def weight_shapes(cls, cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
        """The saved weights a folder of this architecture must hold, with their shapes."""
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.output_dim
        shapes: dict[str, tuple[int, ...]] = {
            "W_enc": (d_in, d_sae),
            "W_dec": (d_sae, d_out),
            "b_dec": (d_out,),
            "b_enc": (d_sae,),
        }
        return shapes | ({"W_skip": (d_out, d_in)} if cfg.skip_connection else {})

    @torch.no_grad()
    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy saved weights (checked against `weight_shapes`) into this SAE."""
        for name in self.weight_shapes(self.cfg):
            self.load_weight(name, weights[name].float())

    def load_weight(self, name: str, value: torch.Tensor) -> None:
        """One saved weight into the parameter of the same name (an architecture may translate)."""
        getattr(self, name).copy_(value)

    def save(self, path: str | os.PathLike[str], sparsity: torch.Tensor | None = None) -> None:
        """SAELens v6 folder; `sparsity` is each latent's log10 firing density."""
        weights = {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_dec": self.b_dec} | self.extra_weights()
        if self.W_skip is not None:
            weights["W_skip"] = self.W_skip
        tensors = {name: t.detach().contiguous().cpu() for name, t in weights.items()}
        write_saelens(path, self.saelens_cfg(), tensors, sparsity)

    @staticmethod
    def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SAE:
        """A folder in any format `rama.sae.io` reads, as the architecture that reads it."""
        files = read_sae_files(path)
        cfg = config_from_files(files)
        cls = sae_class(cfg.architecture)
        expect_shapes(files.weights, cls.weight_shapes(cfg), files.source)
        sae = cls(cfg)
        sae.load_weights(files.weights)
        return sae.to(device).eval()


def config_from_files(files: SAEFiles) -> SAEConfig:
    """rama's own block when rama wrote the folder (as the architecture it loads as), else the
    SAELens cfg read by the registered architecture that `reads_saelens` its architecture."""
    raw = files.cfg
    if "rama" in raw:
        saved_as = sae_class(str(raw["rama"].get("architecture", DEFAULT_ARCHITECTURE)))
        return SAEConfig.from_dict(raw["rama"], architecture=saved_as.loads_as or saved_as.architecture)
    name = str(raw.get("architecture", "standard"))  # SAELens's default
    readers = [cls for cls in REGISTRY.values() if name in cls.reads_saelens]
    if not readers:
        known = sorted(n for cls in REGISTRY.values() for n in cls.reads_saelens)
        raise SAEFormatError(f"{str(files.source)!r}: unknown SAELens architecture {name!r}; known: {known}")
    cls = readers[0]
    meta = raw.get("metadata", {}) or {}
    d_in = int(raw["d_in"])
    d_out = raw.get("d_out") or int(files.weights["W_dec"].shape[1])
    transcoder = bool(raw.get("transcoder", "transcoder" in name))
    settings = {f.name: raw[f.name] for f in fields(cls.config_class) if raw.get(f.name) is not None}
    return SAEConfig(
        d_in=d_in,
        d_sae=int(raw["d_sae"]),
        architecture=cls.architecture,
        d_out=d_out if d_out != d_in or transcoder else None,
        arch=cls.config_class(**settings),
        skip_connection="W_skip" in files.weights,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        model_name=str(meta.get("model_name") or ""),
        hook_name=str(meta.get("hook_name") or raw.get("hook_name") or ""),
        context_size=int(meta.get("context_size") or 128),
        prepend_bos=bool(meta.get("prepend_bos", True)),
    )


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
    scratch: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # see `workspace`

    def sparsity_scale(self) -> float:
        warmup = max(1, int(self.total_steps * self.sparsity_warmup_fraction))
        return min(1.0, (self.step + 1) / warmup) * self.coefficient_multiplier

    def dead_mask(self) -> torch.Tensor | None:
        if self.tokens_since_fired is None:
            return None
        return self.tokens_since_fired >= self.dead_after_tokens

    def workspace(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of `shape` (`like`'s dtype and device) that a loss may overwrite at every step.

        Why: a fresh `[batch, d_sae]` fp32 tensor (151 MB at 4,096 x 9,216) is a new page-faulting
        allocation on the CPU each step, ~100 ms of a ~650 ms TopK step; reusing one costs nothing.
        The contents are garbage on entry and must not be kept past the step."""
        buffer = self.scratch.get(name)
        if (
            buffer is None
            or buffer.shape != shape
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = self.scratch[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buffer


def mse_fvu(reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed-over-dims squared error averaged over the batch, fraction of variance unexplained)."""
    squared_errors = (reconstruction - target).pow(2).sum(-1)
    return squared_errors.mean(), unexplained_fraction(squared_errors, target)
