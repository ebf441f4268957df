"""Topic-model metrics: diversity, coherence (C_V, NPMI with gensim), purity and NMI.

* TD (topic diversity, Dieng et al. 2020): the share of unique words among all topics' top-25.
* C_V and NPMI (Röder et al. 2015) of each topic's top-10 words on a reference corpus (by
  default the training corpus), computed by gensim's ``CoherenceModel``; the mean over topics.
* purity and NMI of the documents' argmax topic against their labels (test documents):
  purity = (1/N) Σ_topics max_label |docs of the topic with the label|; NMI from scikit-learn.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def top_words(beta: np.ndarray, vocab: list[str], n: int) -> list[list[str]]:
    """Each topic's ``n`` most probable words (rows of ``beta`` (K, V)), most probable first."""
    order = np.argsort(-beta, axis=1, kind="stable")[:, :n]
    return [[vocab[j] for j in row] for row in order]


def topic_diversity(topics: list[list[str]]) -> float:
    """Unique words over all words in the topics' lists."""
    words = [w for topic in topics for w in topic]
    return len(set(words)) / len(words)


def coherence_per_topic(topics: list[list[str]], texts: list[list[str]], measure: str, dictionary=None) -> list[float]:
    """gensim coherence (``c_v`` or ``c_npmi``) of each topic on the reference ``texts``
    (``dictionary``: gensim's Dictionary of ``texts``, when the caller already built it)."""
    from gensim.corpora import Dictionary
    from gensim.models.coherencemodel import CoherenceModel

    dictionary = dictionary if dictionary is not None else Dictionary(texts)
    model = CoherenceModel(topics=topics, texts=texts, dictionary=dictionary, coherence=measure, processes=1)
    return [float(x) for x in model.get_coherence_per_topic()]


def purity(labels: list[int], clusters: list[int]) -> float:
    members: dict[int, Counter] = {}
    for label, cluster in zip(labels, clusters):
        members.setdefault(cluster, Counter())[label] += 1
    return sum(counts.most_common(1)[0][1] for counts in members.values()) / len(labels)


def nmi(labels: list[int], clusters: list[int]) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels, clusters))


def topic_metrics(topics_10: list[list[str]], topics_25: list[list[str]], texts: list[list[str]]) -> dict:
    """TD on the top-25 lists, C_V and NPMI (mean and per topic) on the top-10 lists."""
    from gensim.corpora import Dictionary

    dictionary = Dictionary(texts)  # one for both measures
    c_v = coherence_per_topic(topics_10, texts, "c_v", dictionary)
    npmi = coherence_per_topic(topics_10, texts, "c_npmi", dictionary)
    return {
        "td": topic_diversity(topics_25),
        "c_v": float(np.mean(c_v)),
        "npmi": float(np.mean(npmi)),
        "c_v_per_topic": c_v,
        "npmi_per_topic": npmi,
    }
