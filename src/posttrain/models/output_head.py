"""A causal LM's output head, run apart from its forward: :class:`OutputHead`.

A loss that needs more of the next-token distribution than one log-prob per token (SDPO's top-k
distillation) would otherwise ask the model for its logits at every position, a ``(B, T, V)``
tensor: 5 GB in float32 for 8 sequences of 1,024 tokens at Qwen's 151,936-token vocabulary. With
:meth:`OutputHead.capturing`, the model's forward runs as usual (through DDP's wrapper, PEFT and
autocast) but its head projects only the last position; the hidden states it was given are kept,
and :meth:`OutputHead.__call__` turns any chunk of them into the logits the model would have given.

The logit transforms some families apply after the head are the ones TRL's fused LM head reads
(``trl.trainer.utils.add_fused_lm_head``): Gemma's ``final_logit_softcapping`` and the scale of
Cohere (``logit_scale``), Falcon-H1 (``lm_head_multiplier``), Granite and MiniCPM3
(``1 / logits_scaling``). A model with another transform is caught by :meth:`OutputHead.reproduces`,
which compares the head run here with the model's own logits at the last position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.distributed.tensor import DTensor


def _logit_scale(config) -> float:
    """The factor the model multiplies its head's output by (1.0 for most families)."""
    for key in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        if getattr(config, key, None) is not None:
            return float(getattr(config, key))
    if getattr(config, "logits_scaling", None) is not None:
        return config.logits_scaling if config.model_type == "hyperclovax" else 1.0 / config.logits_scaling
    return 1.0


class OutputHead:
    """The logits ``model`` computes from its last hidden states: ``head(hidden)``, ``(..., H) -> (..., V)``.

    ``model`` is the unwrapped model (a transformers model or a PEFT model around one). The head
    module is looked up on every call, since PEFT may wrap it after this object is built.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        config = model.config.get_text_config()
        self.scale = _logit_scale(config)
        self.softcap = getattr(config, "final_logit_softcapping", None)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        # The head's forward, not its hooks: FSDP2's hooks would count this call as a new forward
        # of the head's unit, whose end never comes (the unit also holds the final norm), leaving
        # the unit mid-forward. Its weights are still gathered from the model's forward (accelerate's
        # FSDP2 does not reshard that unit after the forward); PEFT's LoRA lives in the forward itself.
        logits = self.model.get_output_embeddings().forward(hidden)
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[torch.Tensor]]:
        """Inside this block, each forward's head projects only the last position it is given; the
        hidden states it was given, ``(B, positions, H)``, are appended to the yielded list."""
        captured: list[torch.Tensor] = []

        def keep_last_position(module, args):
            captured.append(args[0])
            return (args[0][:, -1:], *args[1:])

        handle = self.model.get_output_embeddings().register_forward_pre_hook(keep_last_position)
        try:
            yield captured
        finally:
            handle.remove()

    def reproduces(self, captured: list[torch.Tensor], logits: torch.Tensor) -> bool:
        """Whether this head, on the captured hidden states of the last position, gives the model's
        own ``logits`` ``(B, 1, V)`` of one forward: false for a model whose head was not called as a
        module, or that transforms its logits in a way this class does not know."""
        weight = self.model.get_output_embeddings().weight
        if len(captured) != 1 or isinstance(weight, DTensor) or hasattr(weight, "ds_id"):
            return False  # a head sharded by FSDP2 (outside the root) or partitioned by ZeRO-3 is whole only in the forward
        try:
            with torch.no_grad():
                ours = self(captured[0][:, -1:])
        except RuntimeError:  # a head whose weights are not whole outside the forward (FSDP1's flat shards)
            return False
        if ours.shape != logits.shape:
            return False
        # Rounding differences only: a few units in the last place of the logits' dtype (bf16: 2⁻⁷)
        tolerance = max(1e-4, 2 * torch.finfo(logits.dtype).eps)
        ours, theirs = ours.detach().float(), logits.detach().float()
        return bool(((ours - theirs).abs() <= tolerance * theirs.abs().max().clamp(min=1.0)).all())
