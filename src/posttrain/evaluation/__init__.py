"""Measures of a model's completions: pass@k and format compliance (``posttrain eval`` itself is
:mod:`posttrain.commands.eval`)."""
