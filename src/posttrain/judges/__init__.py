"""Judges: verifier, reward model, log-prob A/B, OpenAI-compatible API — one interface."""

from posttrain.judges.base import Comparison, Judge

__all__ = ["Comparison", "Judge"]
