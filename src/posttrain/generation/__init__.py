"""Generating completions: batched sampling now, rollouts and judges later."""
