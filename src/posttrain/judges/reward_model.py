"""A learned judge: any ``AutoModelForSequenceClassification`` reward model."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from posttrain.data.reward import load_rendering, reward_model_text
from posttrain.errors import PosttrainError
from posttrain.judges.base import Judge
from posttrain.models import check_model_source, load_tokenizer


class RewardModelJudge(Judge):
    """Scores (prompt, completion) with a sequence-classification head.

    The text is the tokenizer's chat template over a user and an assistant turn when it has one,
    else ``prompt`` and ``completion`` joined by a newline: :func:`posttrain.data.reward.reward_model_text`,
    what ``posttrain rm`` trains on, with the ``chat_template_kwargs`` it was trained with. A one-label head's logit is the score; a two-label head
    (bad, good) scores ``logit[1] − logit[0]``.
    """

    name = "reward_model"

    def __init__(self, model_name_or_path: str, batch_size: int = 16, trust_remote_code: bool = False):
        check_model_source(model_name_or_path)
        self.tokenizer = load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise PosttrainError(f"cannot load a reward model from {model_name_or_path}: {str(err).splitlines()[0]}") from None
        if self.model.config.num_labels not in (1, 2):
            raise PosttrainError(f"{model_name_or_path}: a reward model needs 1 or 2 labels, it has {self.model.config.num_labels}")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.batch_size = batch_size
        self.chat_template_kwargs = load_rendering(model_name_or_path)

    def score(self, prompt: str, completion: str, /, **row) -> float:
        return self.score_many(prompt, [completion])[0]

    def score_many(self, prompt: str, completions: list[str], /, **row) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(completions), self.batch_size):
            texts = [reward_model_text(self.tokenizer, prompt, c, self.chat_template_kwargs)
                     for c in completions[start : start + self.batch_size]]
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                logits = self.model(**encoded).logits.float()  # (batch, num_labels)
            values = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
            scores.extend(values.tolist())
        return scores
