"""vLLM sampling for ``posttrain sdpo`` and ``posttrain grpo``: :class:`VLLMArguments`, TRL's own keys.

TRL's GRPOTrainer samples through vLLM in one of two modes:

* ``colocate``: vLLM runs inside every training process, on the same GPUs, taking
  ``vllm_gpu_memory_utilization`` of each GPU's memory (``vllm_tensor_parallel_size`` GPUs per
  engine); the weights are copied into it after every optimizer step;
* ``server``: vLLM runs on GPUs of its own, started with ``trl vllm-serve --model MODEL``
  (``--tensor-parallel-size``, ``--data-parallel-size``), and the trainer sends it the prompts and,
  after every optimizer step, the new weights (``vllm_server_host``/``vllm_server_port``, or
  ``vllm_server_base_url``).

vLLM's sampling probabilities differ a little from the trainer's (other kernels, other precision),
so the samples are slightly off-policy. TRL corrects its GRPO loss by the trainer/sampler
probability ratio (``vllm_importance_sampling_correction``, truncated or masked as
``vllm_importance_sampling_mode`` says); posttrain's SDPO trainer applies the same ratio to each
distilled token (:func:`posttrain.losses.self_distillation_loss`, ``token_weights``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Literal

import torch

from posttrain.config import config_field
from posttrain.errors import ConfigError

# TRL 1.16 refuses other vLLM versions (trl.import_utils); pyproject's `gpu` extra pins the same range
VLLM_VERSIONS = ">=0.22,<=0.31.0"


@dataclass
class VLLMArguments:
    """Sampling through vLLM (names and defaults as in TRL's ``GRPOConfig``)."""

    use_vllm: bool = config_field(False, help="Sample the completions with vLLM (a CUDA GPU and the vllm package) instead of transformers' generate.")
    vllm_mode: Literal["colocate", "server"] = config_field(
        "colocate", help="colocate: vLLM inside each training process, on its GPU; server: a separate `trl vllm-serve` process on GPUs of its own."
    )
    vllm_gpu_memory_utilization: float = config_field(0.3, help="colocate: share of each GPU's memory vLLM takes.", gt=0.0, le=1.0)
    vllm_tensor_parallel_size: int = config_field(1, help="colocate: GPUs per vLLM engine (the server sets its own with --tensor-parallel-size).", ge=1)
    vllm_server_host: str = config_field("0.0.0.0", help="server: host of `trl vllm-serve` (ignored with vllm_server_base_url).")
    vllm_server_port: int = config_field(8000, help="server: port of `trl vllm-serve`.", ge=1, le=65535)
    vllm_server_base_url: str | None = config_field(None, help="server: its base URL, e.g. http://10.0.0.2:8000 (instead of host and port).")
    vllm_importance_sampling_correction: bool = config_field(
        True, help="Weight each token's loss (GRPO's and the distillation's) by the trainer/sampler probability ratio."
    )
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = config_field(
        "sequence_mask", help="The ratio per token or per sequence, and outside its bounds truncated to them or masked to 0 (TRL's modes)."
    )
    vllm_importance_sampling_clip_max: float = config_field(3.0, help="Upper bound of the trainer/sampler ratio.", gt=0.0)

    def vllm_kwargs(self) -> dict:
        """These keys, for ``trl.GRPOConfig`` (nothing when vLLM is off, so TRL's defaults stand)."""
        if not self.use_vllm:
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(VLLMArguments)}

    def check_vllm(self) -> None:
        """Before the model loads: vLLM sampling needs the package and a CUDA GPU."""
        if not self.use_vllm:
            return
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(f"use_vllm: true needs the vllm package ({VLLM_VERSIONS}, TRL's range): pip install 'posttrain[gpu]'")
        if not torch.cuda.is_available():
            raise ConfigError("use_vllm: true needs a CUDA GPU; this machine has none (set use_vllm: false to sample with transformers)")
