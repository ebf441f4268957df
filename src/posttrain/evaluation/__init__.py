"""Evaluating models on tasks."""
