"""Circuits: head roles and (later) circuit discovery, built on hooks."""

from rama.circuits.head_scores import induction_scores, previous_token_scores

__all__ = ["induction_scores", "previous_token_scores"]
