"""Circuits: head roles and (later) circuit discovery, built on hooks."""

from rama.circuits.head_scores import (
    attention_between,
    induction_score,
    induction_scores,
    previous_token_score,
    previous_token_scores,
)

__all__ = [
    "attention_between",
    "induction_score",
    "induction_scores",
    "previous_token_score",
    "previous_token_scores",
]
