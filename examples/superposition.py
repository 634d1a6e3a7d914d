"""Toy Models of Superposition, reproduced: writes docs/toys/{pentagon,phase_diagram,dimensionality}.png.

Run: python examples/superposition.py [OUT]   (about 4 minutes on 2 CPU cores)
"""

from __future__ import annotations

import json
import sys

from rama.toys.zoo import build_superposition

out = build_superposition(sys.argv[1] if len(sys.argv) > 1 else "docs/toys")
summary = json.loads((out / "superposition.json").read_text())
for sparsity, norms in zip(
    summary["geometry"]["sparsity"], summary["geometry"]["feature_norms"], strict=True
):
    print(f"sparsity {sparsity:.2f}: ‖W_i‖ = {[round(n, 2) for n in norms]}")
names = summary["phase_diagram"]["label_names"]
for density, row in zip(
    summary["phase_diagram"]["densities"], summary["phase_diagram"]["labels"], strict=True
):
    print(f"density {density:5.3f}: " + " ".join(names[label][:5] for label in row))
sweep = summary["dimensionality"]
for sparsity, dims, norms in zip(sweep["sparsity"], sweep["D"], sweep["feature_norms"], strict=True):
    kept = sorted(d for d, norm in zip(dims, norms, strict=True) if norm > 0.5)  # represented features
    print(
        f"1/(1-S) = {1 / (1 - sparsity):6.2f}: {len(kept):3d} features represented, median D = {kept[len(kept) // 2]:.3f}"
    )
print(f"figures in {out}")
