"""Every SAE architecture rama knows, registered in one place: adding one is its file and a line here.

`register` refuses a name that is taken, so two architectures cannot silently share one.
"""

from __future__ import annotations

from rama.sae.base import register
from rama.sae.batchtopk import BatchTopKSAE
from rama.sae.gated import GatedSAE
from rama.sae.jumprelu import JumpReLUSAE
from rama.sae.matryoshka import MatryoshkaSAE
from rama.sae.relu import ReLUSAE
from rama.sae.topk import TopKSAE

register("topk", TopKSAE)
register("batchtopk", BatchTopKSAE)
register("matryoshka", MatryoshkaSAE)
register("standard", ReLUSAE)  # ReLU with an L1 penalty: SAELens's "standard"
register("jumprelu", JumpReLUSAE)
register("gated", GatedSAE)
