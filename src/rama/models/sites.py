"""Site names built in one place: TransformerLens's `blocks.{layer}.{hook}` spelling."""

from __future__ import annotations


def block_site(layer: int, hook: str) -> str:
    """`block_site(9, "hook_resid_post")` -> `"blocks.9.hook_resid_post"`;
    `block_site(3, "attn.hook_z")` -> `"blocks.3.attn.hook_z"`."""
    return f"blocks.{layer}.{hook}"


def block_prefix(layer: int) -> str:
    """The prefix every site of block `layer` starts with: `"blocks.{layer}."`."""
    return f"blocks.{layer}."
