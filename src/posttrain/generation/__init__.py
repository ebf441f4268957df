"""Generating completions: batched sampling and base-model few-shot prompts."""
