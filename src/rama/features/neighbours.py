"""Which latents are related: nearest by decoder direction, and the ones that fire together.

Nearest latents: cosine similarity of decoder rows, `chunk` rows against all at a time, so memory is
`chunk × d_sae`, never `d_sae²`.

Co-firing: the Jaccard index of two latents' firing sets over the analysed tokens,
`|A ∩ B| / |A ∪ B|` = both / (count_a + count_b - both). The pair counts are a dense
`[d_sae, d_sae]` int32 matrix (4 bytes per pair: 16 MiB at 2,048 latents, 85 MiB at 4,608,
1 GiB at 16,384), accumulated per batch by a sparse product of the batch's firing matrix (cost
grows with the number of firing pairs, small for a sparse SAE). Above `MAX_COFIRING_UNITS` latents
the matrix is not built and co-firing is left out (the store says so in its meta table). Counts
add, so summaries of two halves merge exactly; int32 counts hold up to 2^31 tokens.
"""

from __future__ import annotations

import torch

MAX_COFIRING_UNITS = 8192  # 256 MiB of pair counts


def nearest_by_cosine(
    W_dec: torch.Tensor, n: int = 10, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(`[d_sae, n]` cosines, `[d_sae, n]` latent ids): each latent's `n` nearest other latents by
    decoder direction, most similar first (a zero decoder row has cosine 0 with everything)."""
    directions = torch.nn.functional.normalize(W_dec.detach().float(), dim=1)
    n = min(n, len(directions) - 1)
    values, ids = [], []
    for start in range(0, len(directions), chunk):
        cosine = directions[start : start + chunk] @ directions.T  # [chunk, d_sae]
        own = torch.arange(start, start + len(cosine), device=cosine.device)
        cosine[torch.arange(len(cosine), device=cosine.device), own] = -torch.inf
        top = cosine.topk(n, dim=1)
        values.append(top.values.cpu())
        ids.append(top.indices.cpu())
    return torch.cat(values), torch.cat(ids)


def firing_pairs(token: torch.Tensor, per_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b): every ordered pair of firing entries on the same token (self-pairs included), as
    indices into the token-major entries whose tokens are `token`; `per_token` counts them per token."""
    reps = per_token[token]  # each entry pairs with every entry of its token
    a = torch.repeat_interleave(torch.arange(len(token), device=token.device), reps)
    start = per_token.cumsum(0) - per_token  # each token's first entry
    offset = torch.arange(len(a), device=token.device) - torch.repeat_interleave(reps.cumsum(0) - reps, reps)
    return a, start[token[a]] + offset


class CoFiring:
    """Pair counts of latents firing on the same token; `update` per batch, `absorb` another pass."""

    def __init__(self, n_units: int, device: torch.device | str = "cpu") -> None:
        self.pairs = torch.zeros(n_units, n_units, dtype=torch.int32, device=device)

    def update(self, fires: torch.Tensor) -> None:
        """`fires [tokens, n_units]` bool: which latents fired on each kept token. Sparse batches
        (fewer firing pairs than a quarter of the matrix) add each pair's count directly; dense
        ones through a sparse product."""
        token, unit = fires.nonzero(as_tuple=True)  # token-major
        per_token = torch.bincount(token, minlength=len(fires))
        if int(per_token.pow(2).sum()) > self.pairs.numel() // 4:
            dense = fires.float()
            both = torch.sparse.mm(dense.T.to_sparse(), dense)  # exact integers below 2^24 tokens
            self.pairs += both.round().to(torch.int32)
            return
        first, left = firing_pairs(token, per_token)
        index = unit[first] * len(self.pairs) + unit[left]
        ones = torch.ones_like(index, dtype=torch.int32)
        self.pairs.view(-1).index_put_((index,), ones, accumulate=True)

    def absorb(self, other: CoFiring) -> None:
        self.pairs += other.pairs

    def top(self, n: int = 10, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """(`[d_sae, n]` Jaccard indices, `[d_sae, n]` latent ids): each latent's most co-firing
        others, highest first (0 for latents that never fire together); `chunk` rows at a time."""
        counts = self.pairs.diagonal().double()
        n = min(n, len(counts) - 1)
        values, ids = [], []
        for start in range(0, len(counts), chunk):
            both = self.pairs[start : start + chunk].double()
            union = counts[start : start + chunk, None] + counts[None, :] - both
            jaccard = torch.where(union > 0, both / union.clamp(min=1), 0.0)
            rows = torch.arange(len(both), device=both.device)
            jaccard[rows, rows + start] = -1.0
            top = jaccard.topk(n, dim=1)
            values.append(top.values.float().cpu())
            ids.append(top.indices.cpu())
        return torch.cat(values), torch.cat(ids)
