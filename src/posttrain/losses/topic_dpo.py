"""DPO on topic-word distributions: preferred words up, dispreferred words down, per topic.

For a topic k with preferred word w+ and dispreferred word w−, with ``ℓ_k`` the log-probabilities
of topic k's words under the model and ``ℓref_k`` the same for the frozen snapshot (the reference):

    L = mean over (k, w+, w−) of  −log σ(α · [(ℓ_k[w+] − ℓ_k[w−]) − (ℓref_k[w+] − ℓref_k[w−])])

which is the DPO loss (Rafailov et al. 2023, eq. 7, https://arxiv.org/abs/2305.18290) with the
topic as the prompt, the words as the responses and α as β; it is computed by
:func:`posttrain.losses.dpo.dpo_loss`. Which log-probabilities, by ``distribution``:

* ``"words"``: ``ℓ_k = log_softmax(logits_k)`` over the vocabulary, each topic's distribution
  over words (the form of the method's original implementation);
* ``"beta"``: ``ℓ_k = log β_k`` with ``β = softmax(logits, dim=0)`` over topics, ECRTM's
  topic-word matrix, from which the decoder reconstructs documents and top words are ranked.
  Here ``ℓ_k[w+] − ℓ_k[w−]`` is exactly the gap that orders w+ against w− in topic k's top-word
  list, and a word pushed down in topic k moves to the other topics (its column sums to 1).
  Under ``"words"`` the same gap is ``logits[k, w+] − logits[k, w−]``, which also moves both
  words' β in every other topic, so the top-word ranking can move against the preference.

Shapes: ``logits``, ``ref_logits`` (K, V); ``topics``, ``winners``, ``losers`` (P,) indices, one
entry per triple.
"""

from __future__ import annotations

from typing import Literal

import torch

from posttrain.losses.dpo import dpo_loss

TopicDistribution = Literal["words", "beta"]

_SOFTMAX_DIM = {"words": -1, "beta": 0}


def topic_word_dpo_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    topics: torch.Tensor,
    winners: torch.Tensor,
    losers: torch.Tensor,
    alpha: float = 1.0,
    distribution: TopicDistribution = "words",
) -> torch.Tensor:
    """The mean DPO loss over the (topic, winner, loser) triples (a scalar)."""
    if distribution not in _SOFTMAX_DIM:
        raise ValueError(f"distribution must be one of {', '.join(_SOFTMAX_DIM)}, got '{distribution}'")
    dim = _SOFTMAX_DIM[distribution]
    log_probs = torch.log_softmax(logits, dim=dim)
    ref_log_probs = torch.log_softmax(ref_logits, dim=dim).detach()
    chosen = log_probs[topics, winners] - ref_log_probs[topics, winners]
    rejected = log_probs[topics, losers] - ref_log_probs[topics, losers]
    return dpo_loss(chosen, rejected, beta=alpha, loss_type="sigmoid").mean()
