"""DPO on topic-word distributions (SPEC G): preferred words up, dispreferred words down, per topic.

For a topic k with preferred word w+ and dispreferred word w−, with ``ℓ_k = log_softmax(logits_k)``
over the vocabulary and ``ℓref_k`` the same for the frozen snapshot (the reference):

    L = mean over (k, w+, w−) of  −log σ(α · [(ℓ_k[w+] − ℓ_k[w−]) − (ℓref_k[w+] − ℓref_k[w−])])

which is the DPO loss (Rafailov et al. 2023, eq. 7, https://arxiv.org/abs/2305.18290) with the
topic as the prompt, the words as the responses and α as β; it is computed by
:func:`posttrain.losses.dpo.dpo_loss`. Shapes: ``logits``, ``ref_logits`` (K, V); ``topics``,
``winners``, ``losers`` (P,) indices, one entry per triple.
"""

from __future__ import annotations

import torch

from posttrain.losses.dpo import dpo_loss


def topic_word_dpo_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    topics: torch.Tensor,
    winners: torch.Tensor,
    losers: torch.Tensor,
    alpha: float = 1.0,
) -> torch.Tensor:
    """The mean DPO loss over the (topic, winner, loser) triples (a scalar)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    ref_log_probs = torch.log_softmax(ref_logits, dim=-1).detach()
    chosen = log_probs[topics, winners] - ref_log_probs[topics, winners]
    rejected = log_probs[topics, losers] - ref_log_probs[topics, losers]
    return dpo_loss(chosen, rejected, beta=alpha, loss_type="sigmoid").mean()
