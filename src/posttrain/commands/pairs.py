"""``posttrain pairs``: rollouts -> prompt/chosen/rejected pairs, judged.

For each prompt of a rollouts file the judge ranks the distinct completions: scoring judges
(verifier, reward model) score each one; pairwise judges (log-prob A/B, OpenAI-compatible) play a
round robin of comparisons, each asked in both orders. The best and the worst become a pair
(``kind: "judged"``) with both scores and their margin; equal best and worst is a tie, dropped
and counted. Optional diverse negatives add pairs whose rejected side is built from the chosen
one: ``truncation`` (cut short), ``wrong_answer`` (its last number changed), ``off_topic`` (a
completion written for another prompt), each labelled with its kind.

Output ``<output_dir>/pairs.jsonl`` is appended one prompt at a time; a rerun skips prompts
already written. The rollouts are streamed, not loaded: a first pass validates every row before
anything is judged (keeping, for ``off_topic``, only each row's first completion), the second
judges them one at a time, so memory does not grow with the file. ``summary.json`` counts rows
written, prompts skipped, ties, negatives by kind, and how often a pairwise judge's two orders
agreed.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from posttrain.artifacts import write_json
from posttrain.config import config_field
from posttrain.data.jsonl import append_jsonl, iter_jsonl, write_jsonl
from posttrain.data.rollouts import ROLLOUT_FIELDS, checked_rollouts
from posttrain.errors import ConfigError, DataError
from posttrain.judges.base import Judge
from posttrain.judges.factory import JudgeArguments, JudgeName
from posttrain.preemption import Preempted, stop_requested, stoppable_loop
from posttrain.runtime import get_logger

log = get_logger(__name__)

NegativeKind = Literal["truncation", "wrong_answer", "off_topic"]
_NUMBER = re.compile(r"-?\d+")


@dataclass
class PairsConfig(JudgeArguments):
    rollouts: str = config_field("", help="rollouts.jsonl written by posttrain rollout.")
    output_dir: str = config_field("runs/pairs", help="Where pairs.jsonl and summary.json go.")
    judge: JudgeName = config_field("verifier", help="Who ranks each prompt's completions.")
    task: str = config_field("arithmetic", help="Task whose verifier judges (judge: verifier).")
    task_options: dict = config_field({}, help="Options of the task.")
    negatives: list[NegativeKind] = config_field([], help="Diverse negatives to add: truncation, wrong_answer, off_topic.")
    seed: int = config_field(0, help="Seeds the negatives.")


def rank(judge: Judge, prompt: str, completions: list[str], fields: dict, agreement: Counter) -> list[float]:
    """One number per completion, higher is better: scores, or a pairwise judge's round-robin wins."""
    if not judge.pairwise:
        return judge.score_many(prompt, completions, **fields)
    wins = [0.0] * len(completions)
    for i, j in itertools.combinations(range(len(completions)), 2):
        verdict = judge.compare(prompt, completions[i], completions[j], **fields)
        wins[i] += verdict.prob_a
        wins[j] += 1 - verdict.prob_a
        if verdict.orders_agree is not None:
            agreement["agree" if verdict.orders_agree else "disagree"] += 1
    return wins


def make_negative(kind: str, chosen: str, rng: random.Random, other: str | None) -> str | None:
    """A rejected response built from ``chosen`` (None when this kind does not apply)."""
    if kind == "truncation":
        words = chosen.split(" ")
        if len(words) < 3:
            return None
        return " ".join(words[: max(1, int(len(words) * rng.uniform(0.3, 0.7)))])
    if kind == "wrong_answer":
        numbers = list(_NUMBER.finditer(chosen))
        if not numbers:
            return None
        last = numbers[-1]
        wrong = int(last.group()) + rng.choice([-1, 1]) * rng.randint(1, 9)
        return chosen[: last.start()] + str(wrong) + chosen[last.end() :]
    return other if other and other != chosen else None  # off_topic


def _other_completion(first_completions: list[str | None], index: int, rng: random.Random) -> str | None:
    """The first completion of a uniformly drawn row other than ``index`` (O(1), no list built)."""
    if len(first_completions) < 2:
        return None
    other = rng.randrange(len(first_completions) - 1)
    return first_completions[other + (other >= index)]


def _scan_rollouts(path: str, keep_first_completions: bool) -> tuple[int, list[str | None]]:
    """Validate every row of ``path`` before anything is judged or written; return the row count
    and, if asked (off_topic negatives), each row's first completion: all that is kept of the file."""
    count, first_completions = 0, []
    for _, row in checked_rollouts(path, ROLLOUT_FIELDS):
        count += 1
        if keep_first_completions:
            first_completions.append(row["completions"][0] if row["completions"] else None)
    return count, first_completions


def _complete_prompts(path: Path) -> set[str]:
    """Ids whose rows are all on disk. A crash can cut a prompt's rows short: those rows are
    removed (the file is rewritten atomically) so the prompt is paired again from scratch."""
    if not path.exists():
        return set()
    written, expected = Counter(), {}
    for _, row in iter_jsonl(path, allow_torn_tail=True):
        written[row["id"]] += 1
        expected[row["id"]] = row["rows_for_prompt"]
    complete = {id_ for id_, count in written.items() if count == expected[id_]}
    if len(complete) < len(written):  # a second pass copies the complete prompts' rows
        write_jsonl(path, (row for _, row in iter_jsonl(path, allow_torn_tail=True) if row["id"] in complete))
    return complete


def run_pairs(config: PairsConfig) -> dict:
    if not config.rollouts:
        raise ConfigError("config key 'rollouts' is empty: give the rollouts.jsonl of posttrain rollout")
    num_rows, first_completions = _scan_rollouts(config.rollouts, keep_first_completions="off_topic" in config.negatives)
    out_path = Path(config.output_dir) / "pairs.jsonl"
    done = _complete_prompts(out_path)
    judge = config.build_judge(config.judge, config.output_dir, task=config.task, task_options=config.task_options)
    rng = random.Random(config.seed)
    counts, agreement = Counter(), Counter()
    rows = iter_jsonl(config.rollouts, required=ROLLOUT_FIELDS)
    with stoppable_loop():  # SIGTERM stops after the prompt in flight is written
        for index, (number, row) in enumerate(tqdm(rows, total=num_rows, desc=f"judging ({config.judge})")):
            if stop_requested():
                raise Preempted(f"stopped by SIGTERM after {index} of {num_rows} rollout rows (pairs in {out_path})")
            if row["id"] in done:
                counts["skipped_done"] += 1
                continue
            completions = list(dict.fromkeys(c for c in row["completions"] if c.strip()))  # distinct, in order
            if len(completions) < 2:
                counts["fewer_than_two_distinct"] += 1
                continue
            fields = row.get("fields", {})
            try:
                values = rank(judge, row["prompt"], completions, fields, agreement)
            except ValueError as err:  # e.g. a verifier that cannot read this task's problem from the prompt
                raise DataError(f"{config.rollouts}:{number}: the {config.judge} judge cannot score this row ({str(err)[:200]})") from None
            best = max(range(len(completions)), key=values.__getitem__)
            worst = min(range(len(completions)), key=values.__getitem__)
            if values[best] == values[worst]:
                counts["ties"] += 1
                continue
            chosen = completions[best]
            base = {"id": row["id"], "prompt": row["prompt"], "chosen": chosen, "judge": config.judge, **fields}
            pairs = [{**base, "rejected": completions[worst], "chosen_score": values[best],
                      "rejected_score": values[worst], "margin": values[best] - values[worst], "kind": "judged"}]
            for kind in config.negatives:
                other = _other_completion(first_completions, index, rng) if kind == "off_topic" else None
                negative = make_negative(kind, chosen, rng, other)
                if negative is None:
                    counts[f"negative_not_applicable_{kind}"] += 1
                    continue
                pairs.append({**base, "rejected": negative, "chosen_score": values[best], "rejected_score": None, "margin": None, "kind": kind})
                counts[f"negatives_{kind}"] += 1
            for pair in pairs:
                pair["rows_for_prompt"] = len(pairs)
            append_jsonl(out_path, pairs)
            counts["rows_written"] += len(pairs)
            counts["prompts_paired"] += 1
    summary = {"prompts": num_rows, **counts}
    if agreement:
        summary["judge_orders_agree"] = agreement["agree"] / (agreement["agree"] + agreement["disagree"])
    if config.judge == "openai":
        summary.update(api_requests=judge.requests_sent, api_cache_hits=judge.cache_hits)
    write_json(Path(config.output_dir) / "summary.json", summary)
    log.info("pairs: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return summary
