"""`TrainConfig`: the one vocabulary of SAE training, shared by `fit`, `train` and `rama sae train`.

Every setting is checked when the config is made (a `ConfigError` naming the setting and its valid
range), so a bad one is refused before a model loads or an activation is harvested. The
architecture's own settings (k, l1_coefficient, …) live in its config (`arch`); `TrainConfig.create`
takes both kinds as one set of keywords. `rama sae train` makes its options from these fields (their
defaults, and their help from each field's metadata) and from the architecture configs' fields.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rama.errors import ConfigError
from rama.sae.base import DEFAULT_ARCHITECTURE, REGISTRY, ArchConfig, arch_config, sae_class, setting

PARALLEL_MODES = ("data", "latents")
AUTOCAST_DTYPES = ("float32", "bfloat16")
DEFAULT_D_SAE = 4608  # 8 x SmolLM2-135M's 576-wide residual stream, the CLI's width since its first release


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are each architecture's published recipe where one exists."""

    architecture: str = setting(
        DEFAULT_ARCHITECTURE, "SAE architecture (one of the registered ones)", aliases=("arch",)
    )
    d_sae: int = setting(DEFAULT_D_SAE, "number of latents", aliases=("width",))
    arch: ArchConfig = field(
        default_factory=ArchConfig,
        metadata={"help": "the architecture's own settings (left out: its defaults)"},
    )
    target_l0: float | None = setting(
        None, "steer the L1/L0 coefficient while training until this many latents fire per token"
    )
    target_l0_rate: float = setting(
        0.02, "how fast target_l0 steers: log-coefficient change per step at a 2.7x miss"
    )
    lr: float | None = setting(None, "learning rate (default: 2e-4 / sqrt(d_sae / 16384), Gao et al. 2024)")
    batch_size: int = setting(4096, "activations per training step")
    total_tokens: int = setting(2_000_000, "training tokens (at least one batch)", aliases=("tokens",))
    lr_warmup_fraction: float = setting(0.01, "share of the steps over which the learning rate warms up")
    lr_decay_fraction: float = setting(0.2, "share of the steps, at the end, over which it decays to 0")
    sparsity_warmup_fraction: float = setting(
        0.05, "share of the steps over which a sparsity penalty warms up"
    )
    dead_after_tokens: int | None = setting(
        None, "a latent silent this long is dead (default: min(1M, tokens / 4))"
    )
    b_dec_init: str = setting("geometric_median", "decoder bias at init: geometric_median, mean or zeros")
    normalize: bool = setting(True, "train on inputs scaled to E|x|^2 = d_in (folded back into the weights)")
    skip_connection: bool = setting(False, "add a skip connection (skip-transcoder)", aliases=("skip",))
    seed: int = setting(0, "seed for data order and initialisation")
    device: str = setting("cpu", "where the SAE trains: cpu, cuda or cuda:N")
    autocast: str = setting(
        "float32",
        "dtype of the SAE's forward matmuls: float32, or bfloat16 (torch.autocast; weights, gradients, Adam "
        "and the loss stay fp32; TopK then picks its latents in bf16 and values them in fp32): for GPUs "
        "and CPUs with native bf16",
    )
    parallel: str = setting(
        "data",
        "how ranks share the work under torchrun: data (each rank its own slice of the tokens, gradients "
        "averaged) or latents (each rank a slice of the dictionary, every rank the same tokens)",
    )
    checkpoint_dir: str | None = setting(None, "folder of the resumable checkpoint (None: none)")
    checkpoint_every: int = setting(100, "steps between checkpoints")
    log_every: int = setting(10, "steps between metrics.jsonl lines")
    progress: bool = setting(True, "show a progress bar")
    sae_extra: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "extra SAEConfig fields (metadata) for the saved SAE"}
    )

    def __post_init__(self) -> None:
        wanted = sae_class(self.architecture).config_class  # an unknown name: ConfigError listing the known
        if type(self.arch) is ArchConfig and wanted is not ArchConfig:
            self.arch = wanted()
        self.validate()

    def validate(self) -> None:
        """Refuse any setting out of range, naming it and what it may be."""
        cls = sae_class(self.architecture)
        if not isinstance(self.arch, cls.config_class):
            raise ConfigError(f"a {self.architecture!r} SAE takes a {cls.config_class.__name__} as arch")
        _positive_int("d_sae", self.d_sae)
        _positive_int("batch_size", self.batch_size)
        if not isinstance(self.total_tokens, int) or self.total_tokens < self.batch_size:
            raise ConfigError(
                f"total_tokens must be at least one batch (batch_size {self.batch_size:,}); got {self.total_tokens:,}"
            )
        self.arch.check(self.d_sae)
        coefficient = cls.training_coefficient
        if coefficient is not None and not getattr(self.arch, coefficient) > 0:
            raise ConfigError(
                f"training a {self.architecture!r} SAE needs {coefficient} > 0 (its penalty's weight)"
            )
        if self.target_l0 is not None and (coefficient is None or not self.target_l0 > 0):
            raise ConfigError(
                f"target_l0 steers an L1 or L0 penalty and must be > 0; a {self.architecture!r} SAE "
                + ("has none (set its k instead)" if coefficient is None else f"got {self.target_l0}")
            )
        self._validate_schedule()

    def _validate_schedule(self) -> None:
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be > 0 (or None for 2e-4 / sqrt(d_sae / 16384)); got {self.lr}")
        for name in ("lr_warmup_fraction", "lr_decay_fraction", "sparsity_warmup_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1; got {getattr(self, name)}")
        if self.target_l0_rate <= 0:
            raise ConfigError(f"target_l0_rate must be > 0; got {self.target_l0_rate}")
        if self.dead_after_tokens is not None:
            _positive_int("dead_after_tokens", self.dead_after_tokens)
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ConfigError(
                f"b_dec_init must be 'geometric_median', 'mean' or 'zeros'; got {self.b_dec_init!r}"
            )
        if self.parallel not in PARALLEL_MODES:
            raise ConfigError(f"parallel must be one of {', '.join(PARALLEL_MODES)}; got {self.parallel!r}")
        select_dtype = getattr(self.arch, "select_dtype", "float32")
        if self.parallel == "latents" and select_dtype != "float32":
            raise ConfigError(
                "parallel='latents' selects each rank's candidates in float32; select_dtype="
                f"{select_dtype!r} is not sharded yet: drop --select-dtype, or "
                "train it with --parallel data"
            )
        if self.autocast not in AUTOCAST_DTYPES:
            raise ConfigError(f"autocast must be one of {', '.join(AUTOCAST_DTYPES)}; got {self.autocast!r}")
        if self.parallel == "latents" and self.autocast != "float32":
            raise ConfigError(
                "parallel='latents' runs its sharded encoder in float32; autocast='bfloat16' is not sharded "
                "yet: drop --autocast, or train it with --parallel data"
            )
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_int("log_every", self.log_every)

    @classmethod
    def create(cls, **settings: Any) -> TrainConfig:
        """From one set of keywords: TrainConfig's fields and the architecture's settings (k,
        l1_coefficient, …), e.g. `TrainConfig.create(architecture="standard", l1_coefficient=5.0)`."""
        return TrainConfig().with_settings(**settings)

    def with_settings(self, **settings: Any) -> TrainConfig:
        """A copy with these settings changed (fields and architecture settings alike). Changing the
        architecture starts from the new one's defaults; a setting that no one has is refused, except
        an architecture setting given as None (old code passed `k=None` to mean "no k")."""
        architecture = settings.pop("architecture", self.architecture)
        names = {f.name for f in fields(sae_class(architecture).config_class)}
        kept = self.arch.to_dict() if architecture == self.architecture else {}
        own = {f.name for f in fields(TrainConfig)} - {"architecture"}
        arch_settings = {**kept, **{k: v for k, v in settings.items() if k in names}}
        rest = {k: v for k, v in settings.items() if k not in names}
        anyones = {f.name for other in REGISTRY.values() for f in fields(other.config_class)}
        unknown = sorted(k for k, v in rest.items() if k not in own and not (v is None and k in anyones))
        if unknown:
            raise ConfigError(
                f"{', '.join(unknown)}: not a training setting, nor one of the {architecture!r} architecture "
                f"(its settings: {', '.join(sorted(names)) or 'none'})"
            )
        rest = {k: v for k, v in rest.items() if k in own}
        if "arch" not in rest:
            rest["arch"] = arch_config(architecture, **arch_settings)
        return replace(self, architecture=architecture, **rest)

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.d_sae / 16384)

    def total_steps(self) -> int:
        return max(1, self.total_tokens // self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Flat: the fields with the architecture's settings in place of `arch` (train_config.json)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "arch"}
        if values["autocast"] == "float32":  # as before the setting existed: older checkpoints resume
            del values["autocast"]
        return copy.deepcopy({**values, **self.arch.to_dict()})


# what may change when a run resumes: where it runs and how often it reports, not what it learns
RESUMABLE_CHANGES = {"device", "checkpoint_dir", "checkpoint_every", "log_every", "progress"}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def resume_differences(saved: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """`name=saved -> asked` for each setting that differs between a checkpoint's run and this one,
    leaving out those a resumed run may change (`RESUMABLE_CHANGES`)."""
    if "parallel" in asked:  # checkpoints from before latent sharding trained data-parallel
        saved = {"parallel": "data", **saved}
    names = [n for n in {**saved, **asked} if n not in RESUMABLE_CHANGES]
    return [
        f"{n}={saved.get(n)!r}, this run asks {n}={asked.get(n)!r}"
        for n in names
        if _plain(saved.get(n)) != _plain(asked.get(n))
    ]


def _plain(value: Any) -> Any:
    """Lists and tuples alike (a config read back from JSON has lists)."""
    return list(value) if isinstance(value, tuple) else value
