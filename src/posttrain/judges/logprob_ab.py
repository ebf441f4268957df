"""A local language model as judge: which response is better, "A" or "B"?

The judge LM reads the prompt and both responses and is asked to answer with one letter; the
verdict is read from the next-token distribution, ``log P("A") − log P("B")``, not from sampled
text. Asking in both orders (A/B, then B/A) and averaging cancels the LM's position bias; whether
the two orders agree is reported. ``score`` asks "Is this response correct? Yes or No" the same way.
"""

from __future__ import annotations

import inspect
import math

import torch

from posttrain.judges.base import Comparison, Judge
from posttrain.models import load_model, load_tokenizer, render_prompt

COMPARE_TEMPLATE = (
    "Question: {prompt}\n\nResponse A: {a}\n\nResponse B: {b}\n\n"
    "Which response answers the question better? Answer with the single letter A or B."
)
SCORE_TEMPLATE = "Question: {prompt}\n\nResponse: {completion}\n\nIs this response correct? Answer Yes or No."


class LogProbABJudge(Judge):
    name = "logprob_ab"
    pairwise = True

    def __init__(self, model_name_or_path: str, base_model_mode: bool = False, trust_remote_code: bool = False):
        self.tokenizer = load_tokenizer(model_name_or_path, base_model_mode, trust_remote_code)
        self.model = load_model(model_name_or_path, trust_remote_code=trust_remote_code)
        self.model.eval()
        # Only the answer position's logits, not the whole prompt's (T, V): 2.5 GB in float32 for a
        # 4,096-token prompt at a 152k vocabulary (a custom model without the argument computes them all)
        self.last_position = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
        self.base_model_mode = base_model_mode

    def _answer_ids(self, word: str) -> list[int]:
        """The first non-blank token of the word, written with and without a leading space
        (tokenizers differ; a bare space token would stand for every space-led word)."""
        ids = set()
        for variant in (word, " " + word):
            tokens = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
            ids.add(next(t for t in tokens if self.tokenizer.decode([t]).strip()))
        return sorted(ids)

    def _log_probs(self, question: str, words: tuple[str, str]) -> tuple[float, float]:
        """log P(word) at the answer position for both words (summed over their token variants)."""
        text = render_prompt(self.tokenizer, question, self.base_model_mode)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            log_probs = torch.log_softmax(self.model(ids, **self.last_position).logits[0, -1].float(), dim=-1)
        first, second = (torch.logsumexp(log_probs[self._answer_ids(w)], dim=0).item() for w in words)
        return first, second

    def compare(self, prompt: str, a: str, b: str, /, **row) -> Comparison:
        a1, b1 = self._log_probs(COMPARE_TEMPLATE.format(prompt=prompt, a=a, b=b), ("A", "B"))
        b2, a2 = self._log_probs(COMPARE_TEMPLATE.format(prompt=prompt, a=b, b=a), ("A", "B"))
        first, second = a1 - b1, a2 - b2  # evidence for `a` in each order
        prob_a = 1 / (1 + math.exp(-(first + second) / 2))
        preferred = "tie" if prob_a == 0.5 else ("a" if prob_a > 0.5 else "b")
        return Comparison(
            preferred, prob_a, abs(2 * prob_a - 1), orders_agree=(first > 0) == (second > 0),
            details={"logit_a_first": first, "logit_a_second": second},
        )

    def score(self, prompt: str, completion: str, /, **row) -> float:
        yes, no = self._log_probs(SCORE_TEMPLATE.format(prompt=prompt, completion=completion), ("Yes", "No"))
        return yes - no
