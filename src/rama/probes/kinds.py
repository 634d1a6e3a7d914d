"""Probe kinds. Every kind ends as one linear read-out of normalised features,
p = sigmoid(w · (x − mean) / scale + b), so every probe scores, saves and loads the same way.

- `logistic`: L2 logistic regression on standardised features (scale = training std); C chosen by
  grouped k-fold cross-validation on the training split only (log-loss), scikit-learn's LogisticRegressionCV.
- `diffmean`: difference of means (mass-mean probe), w ∝ mean(true) − mean(false).
- `lda`: covariance-adjusted mass-mean, w ∝ Σ⁻¹ (mean(true) − mean(false)) with Ledoit-Wolf shrinkage
  (scikit-learn's LinearDiscriminantAnalysis).
- `lat`: RepE's linear artificial tomography, the first principal component of contrast-pair differences
  (true − false of each group, each difference's sign flipped at random, seeded).
- `ccs`: contrast-consistent search (Burns et al.) on contrast pairs given in a seeded random order, so
  labels are not used to fit; each side is centred separately; best of several seeded restarts.
- `ksparse`: on SAE latents; keeps the k latents with the largest |mean(true) − mean(false)| over the
  training split (SAEBench's rule), then a logistic probe on those k.

Kinds that give a direction only (diffmean, lda, lat, ccs) are oriented so that true statements score
higher (CCS and LAT are sign-blind) and calibrated with a one-dimensional logistic fit of the projection
on the training labels (Platt scaling, L2 with C = 1 on the projection scaled to unit spread, so a
separable training set keeps a finite slope): the direction is what the kind found, the scale and bias
are fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from rama.errors import InputError

KINDS = ("logistic", "diffmean", "lda", "lat", "ccs", "ksparse")
CV_CS = np.logspace(-3, 2, 6)  # candidate values of C (inverse L2 strength on standardised features)
CV_FOLDS = 4
CCS_RESTARTS = 5
CCS_STEPS = 400


@dataclass
class LinearProbe:
    """p = sigmoid(direction · (x[..., latents] − mean) / scale + bias); `x` `[n, d]`."""

    kind: str
    direction: torch.Tensor  # [d'] (d' = k for ksparse, else d)
    bias: float
    mean: torch.Tensor  # [d']
    scale: torch.Tensor  # [d']
    latents: torch.Tensor | None = None  # [k] indices into the SAE's latents (ksparse only)
    info: dict[str, float] = field(default_factory=dict)  # e.g. the C chosen by cross-validation

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """`[n]` logits of rows `[n, d]`."""
        if self.latents is not None:
            x = x[:, self.latents]
        if x.shape[-1] != self.direction.shape[0]:
            raise InputError(
                f"the probe reads {self.direction.shape[0]} features, the rows have {x.shape[-1]}"
            )
        return ((x.float() - self.mean) / self.scale) @ self.direction + self.bias

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """`[n]` p in float64: float32 rounds p to exactly 1 beyond a logit of ~17, which would tie
        confident items and flatten an AUROC."""
        return torch.sigmoid(self.logits(x).double())


def check_training_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputError(
            f"probe training needs rows [n, d] and labels [n]; got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise InputError("the training activations hold NaN or infinite values; a probe cannot be fitted")
    classes = set(y.tolist())
    if classes != {0, 1}:
        raise InputError(
            f"a probe needs both labels 0 and 1 in its training data; got only {sorted(classes)}"
        )


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def _cv_folds(groups: list[str], folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped k-fold on the training split: a group's statements share a fold."""
    from sklearn.model_selection import GroupKFold

    n_groups = len(set(groups))
    if n_groups < 2:
        raise InputError("cross-validation needs at least 2 groups in the training split")
    splitter = GroupKFold(n_splits=min(folds, n_groups))
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, groups: list[str], folds: int = CV_FOLDS, seed: int = 0
) -> LinearProbe:
    from sklearn.linear_model import LogisticRegressionCV

    check_training_data(x, y)
    mean, scale = x.float().mean(0), x.float().std(0).clamp_min(1e-6)
    z = _numpy((x.float() - mean) / scale)
    model = LogisticRegressionCV(Cs=CV_CS, cv=_cv_folds(groups, folds), scoring="neg_log_loss", max_iter=2000,
                                 l1_ratios=(0.0,), use_legacy_attributes=False, random_state=seed)  # fmt: skip
    model.fit(z, _numpy(y).astype(int))
    direction = torch.tensor(model.coef_[0], dtype=torch.float32)
    return LinearProbe(
        "logistic",
        direction,
        float(model.intercept_[0]),
        mean,
        scale,
        info={"C": float(np.ravel(model.C_)[0])},
    )


def platt(
    kind: str, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor, mean: torch.Tensor
) -> LinearProbe:
    """Orient `direction` so label 1 projects higher, then fit p = sigmoid(a · projection + b)."""
    from sklearn.linear_model import LogisticRegression

    centred = x.float() - mean
    projection = centred @ direction
    if projection[y == 1].mean() < projection[y == 0].mean():
        direction, projection = -direction, -projection
    spread = float(projection.std().clamp_min(1e-12))  # fit on a unit-spread projection: C=1 then keeps a
    fit = LogisticRegression(C=1.0, max_iter=1000)  # separable training set from an unbounded slope
    fit.fit(_numpy(projection / spread)[:, None], _numpy(y).astype(int))
    slope = float(fit.coef_[0, 0]) / spread
    return LinearProbe(kind, direction * slope, float(fit.intercept_[0]), mean, torch.ones_like(mean))


def fit_diffmean(x: torch.Tensor, y: torch.Tensor) -> LinearProbe:
    check_training_data(x, y)
    x = x.float()
    direction = x[y == 1].mean(0) - x[y == 0].mean(0)
    return platt("diffmean", x, y, direction / direction.norm().clamp_min(1e-12), x.mean(0))


def fit_lda(x: torch.Tensor, y: torch.Tensor) -> LinearProbe:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    check_training_data(x, y)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(_numpy(x), _numpy(y).astype(int))
    direction = torch.tensor(lda.coef_[0], dtype=torch.float32)
    return platt("lda", x, y, direction / direction.norm().clamp_min(1e-12), x.float().mean(0))


def paired_rows(x: torch.Tensor, y: torch.Tensor, positive: list[int], kind: str) -> torch.Tensor:
    """`x` as float32 once the data and its contrast pairs (`positive`: one index per pair) pass."""
    check_training_data(x, y)
    if len(positive) < 2:
        raise InputError(
            f"{kind} needs contrast pairs: groups holding one true and one false statement; the training "
            f"split has {len(positive)} (give each item a `group` shared by its true and false statement)"
        )
    return x.float()


def fit_lat(
    x: torch.Tensor, y: torch.Tensor, positive: list[int], negative: list[int], seed: int = 0
) -> LinearProbe:
    from sklearn.decomposition import PCA

    x = paired_rows(x, y, positive, "lat")
    differences = x[positive] - x[negative]  # [pairs, d]
    signs = torch.randint(0, 2, (len(positive), 1), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    pca = PCA(n_components=1).fit(_numpy(differences * signs))
    direction = torch.tensor(pca.components_[0], dtype=torch.float32)
    return platt("lat", x, y, direction, x.mean(0))


def ccs_loss(p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
    """Consistency (p(a) = 1 − p(b)) plus confidence (not both 0.5), averaged over pairs."""
    return ((p_a - (1 - p_b)) ** 2 + torch.minimum(p_a, p_b) ** 2).mean()


def fit_ccs(
    x: torch.Tensor, y: torch.Tensor, positive: list[int], negative: list[int], seed: int = 0
) -> LinearProbe:
    x = paired_rows(x, y, positive, "ccs")
    generator = torch.Generator().manual_seed(seed)
    swap = torch.rand(len(positive), generator=generator) < 0.5  # hide which side is true
    a_index = torch.where(swap, torch.tensor(negative), torch.tensor(positive))
    b_index = torch.where(swap, torch.tensor(positive), torch.tensor(negative))
    a, b = x[a_index], x[b_index]
    a, b = a - a.mean(0), b - b.mean(0)
    scale = torch.cat([a, b]).norm(dim=1).mean().clamp_min(1e-12) / a.shape[1] ** 0.5
    a, b = a / scale, b / scale
    best: tuple[float, torch.Tensor] = (float("inf"), torch.zeros(x.shape[1]))
    for _ in range(CCS_RESTARTS):
        w = (torch.randn(x.shape[1], generator=generator) / x.shape[1] ** 0.5).requires_grad_()
        bias = torch.zeros(1, requires_grad=True)
        optimiser = torch.optim.Adam([w, bias], lr=1e-2)
        for _ in range(CCS_STEPS):
            optimiser.zero_grad()
            loss = ccs_loss(torch.sigmoid(a @ w + bias), torch.sigmoid(b @ w + bias))
            loss.backward()
            optimiser.step()
        if float(loss.detach()) < best[0]:
            best = (float(loss.detach()), w.detach().clone())
    direction = best[1] / best[1].norm().clamp_min(1e-12)
    probe = platt("ccs", x, y, direction, x.mean(0))
    probe.info["ccs_loss"] = best[0]
    return probe


def top_latents(latents: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """SAEBench's selection: the k latents with the largest |mean(true) − mean(false)|, ties to the lower id."""
    if not 1 <= k <= latents.shape[1]:
        raise InputError(f"k={k} must be between 1 and the SAE's {latents.shape[1]} latents")
    gap = (latents[y == 1].float().mean(0) - latents[y == 0].float().mean(0)).abs()
    order = sorted(range(gap.numel()), key=lambda i: (-float(gap[i]), i))
    return torch.tensor(order[:k])


def fit_ksparse(
    latents: torch.Tensor, y: torch.Tensor, groups: list[str], k: int = 16, seed: int = 0
) -> LinearProbe:
    check_training_data(latents, y)
    chosen = top_latents(latents, y, k)
    probe = fit_logistic(latents[:, chosen], y, groups, seed=seed)
    probe.kind, probe.latents = "ksparse", chosen
    return probe


def fit_probe(
    kind: str, x: torch.Tensor, y: torch.Tensor, groups: list[str], pairs: tuple[list[int], list[int]],
    seed: int = 0, k: int = 16,
) -> LinearProbe:  # fmt: skip
    """One probe of `kind` on rows `x` `[n, d]` (SAE latents for ksparse) with labels `y` `[n]`;
    `pairs` index contrast pairs within x (CCS, LAT), `groups` keep cross-validation folds apart."""
    if kind == "logistic":
        return fit_logistic(x, y, groups, seed=seed)
    if kind == "diffmean":
        return fit_diffmean(x, y)
    if kind == "lda":
        return fit_lda(x, y)
    if kind == "lat":
        return fit_lat(x, y, *pairs, seed=seed)
    if kind == "ccs":
        return fit_ccs(x, y, *pairs, seed=seed)
    if kind == "ksparse":
        return fit_ksparse(x, y, groups, k=k, seed=seed)
    raise InputError(f"probe kind {kind!r} is not one of {', '.join(KINDS)}")
