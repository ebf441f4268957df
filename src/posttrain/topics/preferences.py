"""Word preferences per topic from a judge, and the topic filter.

For every topic: the judge rates its top-10 words (1-3) and describes it; 5 vocabulary words the
judge proposes (nearest the description, or co-occurring most with the topic), outside its own
top 15 and the lists other topics hold (``posttrain topics``: their top 25), join the top-15 as
candidates; the judge names winning words (among the top-15 and the candidates) and losing words
(among the top-15), with its reasons. Rows are appended to ``preferences.jsonl`` one topic at a
time, so a rerun skips judged topics::

    {"topic": 3, "score": 2, "description": "...", "top_words": [...], "candidates": [...],
     "w_win": ["economy", ...], "w_lose": ["said", ...], "reasons": {"said": "...", ...}}

(``w_loose``, the key of the original implementation, is accepted when reading.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from tqdm.auto import tqdm

from posttrain.data.jsonl import append_jsonl, iter_jsonl
from posttrain.errors import DataError
from posttrain.runtime import get_logger
from posttrain.topics.judges import TopicJudge

log = get_logger(__name__)

TopicFilter = Literal["cv_below_avg", "llm_score", "either", "all"]
TOPIC_FILTERS = get_args(TopicFilter)


def read_preferences(path: str | Path) -> dict[int, dict]:
    """Judged topics by index; a torn last line (a killed run) is ignored."""
    rows = {}
    if not Path(path).is_file():
        return rows
    for number, row in iter_jsonl(path, required={"topic": int, "score": int}, allow_torn_tail=True):
        if "w_lose" not in row and "w_loose" in row:
            row["w_lose"] = row.pop("w_loose")
        for key in ("w_win", "w_lose"):
            if not isinstance(row.get(key), list):
                raise DataError(f"{path}:{number}: field '{key}' must be a list of words")
        rows[row["topic"]] = row
    return rows


def build_preferences(
    path: str | Path, top_words_10: list[list[str]], top_words_15: list[list[str]], judge: TopicJudge,
    num_candidates: int = 5, held_lists: list[list[str]] | None = None,
) -> dict[int, dict]:
    """Judge every topic not yet in ``path`` (appending as it goes); return all rows.

    ``held_lists``: each topic's words that another topic's candidates must avoid (default: the
    top-10 lists; the top-25 lists keep TD, which counts repeats among them)."""
    held_lists = top_words_10 if held_lists is None else held_lists
    done = read_preferences(path)
    todo = [k for k in range(len(top_words_15)) if k not in done]
    if done:
        log.info(f"preferences: {len(done)} topics judged already, {len(todo)} to go")
    for k in tqdm(todo, desc="judging topics", disable=not todo):
        rating = judge.rate(top_words_10[k], [row["description"] for row in done.values()])
        # a candidate another topic already holds would raise this topic's coherence at the cost
        # of diversity (and of the other topic, whose β for that word falls)
        taken = {w for j, words in enumerate(held_lists) if j != k for w in words}
        candidates = judge.candidates(top_words_15[k], rating.description, num_candidates, exclude=set(top_words_15[k]) | taken)
        choice = judge.choose(top_words_15[k], candidates, rating.description)
        row = {
            "topic": k, "score": rating.score, "description": rating.description, "top_words": top_words_15[k],
            "candidates": candidates, "w_win": choice.winners, "w_lose": choice.losers, "reasons": choice.reasons,
        }
        append_jsonl(path, [row])
        done[k] = row
    return done


def select_topics(topic_filter: str, c_v_per_topic: list[float], preferences: dict[int, dict]) -> list[int]:
    """Which topics DPO acts on: C_V below the mean, judge score below 3, either, or all."""
    if topic_filter not in TOPIC_FILTERS:
        raise ValueError(f"unknown topic filter '{topic_filter}' (expected one of {', '.join(TOPIC_FILTERS)})")
    mean = float(np.mean(c_v_per_topic))
    # isclose: the mean of equal values can round a hair above them
    low_cv = {k for k, value in enumerate(c_v_per_topic) if value < mean and not math.isclose(value, mean)}
    low_score = {k for k, row in preferences.items() if row["score"] < 3}
    chosen = {
        "cv_below_avg": low_cv, "llm_score": low_score, "either": low_cv | low_score, "all": set(range(len(c_v_per_topic))),
    }[topic_filter]
    return sorted(chosen)


def preference_triples(preferences: dict[int, dict], topics: list[int], vocab: list[str]) -> tuple[np.ndarray, int]:
    """``(P, 3)`` rows of (topic, winner index, loser index) for the chosen topics, and the number
    of words ignored because they are not in the vocabulary."""
    index = {word: i for i, word in enumerate(vocab)}
    triples, ignored = [], 0
    for k in topics:
        row = preferences.get(k)
        if row is None:
            continue
        winners = [index[w] for w in row["w_win"] if w in index]
        losers = [index[w] for w in row["w_lose"] if w in index]
        ignored += len(row["w_win"]) + len(row["w_lose"]) - len(winners) - len(losers)
        triples += [(k, w, loser) for w in winners for loser in losers if w != loser]
    return np.asarray(triples, dtype=np.int64).reshape(-1, 3), ignored
