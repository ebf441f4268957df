"""What ``posttrain eval`` measures besides accuracy: pass@k from sampled completions (the
unbiased estimator of Chen et al. 2021) and format compliance; and what ``posttrain discover``
measures: discovery@k.
"""

from __future__ import annotations

import math

from posttrain.data.base_format import END
from posttrain.generation.few_shot import has_chat_markup


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, eq. 1):
    ``1 - C(n-c, k) / C(n, k)``, the chance that at least one of k samples drawn without
    replacement is correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def discovery_at_k(first_successes: list[int | None], k: int) -> float:
    """discovery@k (Hübotter et al. 2026, §5): the share of problems solved within their first
    ``k`` attempts, from each problem's attempt number (1-based) of its first success, None for a
    problem never solved. Unlike pass@k it counts attempts in the order they were made, so that a
    method that learns between attempts (test-time SDPO) and one that does not (best-of-k) compare
    on the same axis."""
    if not first_successes:
        raise ValueError("discovery@k of no problems")
    return sum(first is not None and first <= k for first in first_successes) / len(first_successes)


def follows_format(completion: str, num_tokens: int, max_new_tokens: int, base_model_mode: bool) -> bool:
    """Whether a completion ends the way its format says, within the generation budget.

    ``completion`` is the raw generated text (stop strings kept). A base model must close its
    response with ``END`` and write no chat markup (the contamination a chat template would
    leave); a chat model must end its turn (emit its end-of-sequence token, so fewer than
    ``max_new_tokens`` tokens were generated) rather than run on until the budget cuts it off.
    """
    if base_model_mode:
        return END in completion and not has_chat_markup(completion)
    return num_tokens < max_new_tokens
