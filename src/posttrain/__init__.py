"""posttrain: one toolkit for post-training language models.

SFT, the DPO family with dynamic beta, preference-data generation, SDPO, trigger-conditioned
fine-tuning and LLM-guided topic models, behind one CLI (``posttrain``), one config style
(dataclasses loadable from YAML plus ``--key value`` overrides) and one artifact layout.
"""

__version__ = "0.1.0"
