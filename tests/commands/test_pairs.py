"""Unit tests for ``posttrain pairs`` (posttrain.commands.pairs.run_pairs).

No model is needed: the arithmetic verifier judges, rollouts files are written by hand, and the
pairwise path uses a fake judge whose verdicts are fixed here.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from posttrain.commands.pairs import PairsConfig, run_pairs
from posttrain.config import load_config
from posttrain.data.jsonl import iter_jsonl, read_jsonl
from posttrain.errors import ConfigError, DataError
from posttrain.judges.base import Comparison, Judge
from posttrain.tasks.arithmetic import ArithmeticTask, solve

TASK = ArithmeticTask()


def _wrong(a: int, b: int, answer: int) -> str:
    return solve(a, b, 2).rsplit("Answer:", 1)[0] + f"Answer: {answer}"


def _row(id_: str, a: int, b: int, completions: list[str]) -> dict:
    return {"id": id_, "prompt": f"What is {a} + {b}?", "completions": completions, "fields": {"a": a, "b": b, "answer": a + b}}


def _write_rollouts(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _run(tmp_path, rollouts_rows, out="out", **values):
    rollouts = _write_rollouts(tmp_path / "rollouts.jsonl", rollouts_rows)
    config = load_config(PairsConfig, values={"rollouts": rollouts, "output_dir": str(tmp_path / out), **values})
    summary = run_pairs(config)
    pairs_path = tmp_path / out / "pairs.jsonl"
    rows = read_jsonl(pairs_path) if pairs_path.exists() else []
    return summary, rows


# Three pairable prompts: first completion wrong in each (so off_topic never equals a chosen).
P1 = _row("p1", 47, 38, [_wrong(47, 38, 84), solve(47, 38, 2), _wrong(47, 38, 95), solve(47, 38, 2)])
P2 = _row("p2", 12, 34, [_wrong(12, 34, 47), "I do not know.", solve(12, 34, 2)])
P3 = _row("p3", 99, 99, [_wrong(99, 99, 188), solve(99, 99, 2)])
TIE = _row("tie", 10, 10, [solve(10, 10, 2), "Answer: 20"])  # both right
ALL_WRONG = _row("allwrong", 21, 21, ["Answer: 41", "Answer: 43", "no idea at all"])  # all score 0
DUPES = _row("dupes", 11, 11, [solve(11, 11, 2), solve(11, 11, 2), "   ", ""])  # one distinct
BLANK = _row("blank", 13, 13, ["", "  \n "])  # none


# ---------------------------------------------------------------------------------------------
# the judged pair


def test_best_and_worst_become_the_judged_pair(tmp_path):
    summary, rows = _run(tmp_path, [P1, P2])
    assert len(rows) == 2
    first, second = rows
    assert first == {
        "id": "p1",
        "prompt": "What is 47 + 38?",
        "chosen": solve(47, 38, 2),
        "rejected": _wrong(47, 38, 84),  # the first of the worst (score 0), in order
        "judge": "verifier",
        "a": 47, "b": 38, "answer": 85,  # task fields copied
        "chosen_score": 1.0,
        "rejected_score": 0.0,
        "margin": 1.0,
        "kind": "judged",
        "rows_for_prompt": 1,  # lets a resumed run tell a complete prompt from one cut short
    }
    assert second["id"] == "p2" and second["chosen"] == solve(12, 34, 2)
    assert second["rejected"] == _wrong(12, 34, 47)
    assert (second["a"], second["b"], second["answer"]) == (12, 34, 46)
    assert summary["prompts"] == 2 and summary["rows_written"] == 2 and summary["prompts_paired"] == 2


def test_chosen_is_right_and_rejected_wrong_by_the_verifier(tmp_path):
    _, rows = _run(tmp_path, [P1, P2, P3])
    for row in rows:
        fields = {"a": row["a"], "b": row["b"]}
        assert TASK.score(row["prompt"], row["chosen"], **fields)[0] == 1.0
        assert TASK.score(row["prompt"], row["rejected"], **fields)[0] == 0.0
        assert row["margin"] == row["chosen_score"] - row["rejected_score"]


def test_verifier_uses_the_rows_fields(tmp_path):
    """The fields, not the prompt text, define the problem: with a=1,b=1 the 'right' answer is 2."""
    row = {"id": "f", "prompt": "What is 47 + 38?", "completions": ["Answer: 85", "Answer: 2"], "fields": {"a": 1, "b": 1, "answer": 2}}
    _, rows = _run(tmp_path, [row])
    assert rows[0]["chosen"] == "Answer: 2" and rows[0]["rejected"] == "Answer: 85"


def test_ties_are_counted_and_dropped(tmp_path):
    summary, rows = _run(tmp_path, [TIE, ALL_WRONG, P1])
    assert [r["id"] for r in rows] == ["p1"]
    assert summary["ties"] == 2
    assert summary["prompts"] == 3 and summary["prompts_paired"] == 1


def test_fewer_than_two_distinct_completions_are_counted(tmp_path):
    summary, rows = _run(tmp_path, [DUPES, BLANK, P1])
    assert [r["id"] for r in rows] == ["p1"]
    assert summary["fewer_than_two_distinct"] == 2
    assert "ties" not in summary


def test_duplicates_do_not_pair_with_themselves(tmp_path):
    """Two copies of a right answer and a wrong one: the pair is right vs wrong, never a copy vs itself."""
    row = _row("d", 47, 38, [solve(47, 38, 2), solve(47, 38, 2), "Answer: 1"])
    _, rows = _run(tmp_path, [row])
    assert len(rows) == 1 and rows[0]["chosen"] != rows[0]["rejected"]


# ---------------------------------------------------------------------------------------------
# diverse negatives


def _numbers(text):
    return re.findall(r"-?\d+", text)


def test_negatives_are_built_labelled_and_counted(tmp_path):
    rollouts = [P1, P2, P3, TIE]
    summary, rows = _run(tmp_path, rollouts, negatives=["truncation", "wrong_answer", "off_topic"], seed=3)
    by_id = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row)
    assert set(by_id) == {"p1", "p2", "p3"}
    completions_of = {r["id"]: r["completions"] for r in rollouts}
    for id_, group in by_id.items():
        assert [r["kind"] for r in group] == ["judged", "truncation", "wrong_answer", "off_topic"]
        judged = group[0]
        chosen = judged["chosen"]
        for row in group[1:]:
            # everything but the rejected side and its scores is the judged pair's
            assert {k: v for k, v in row.items() if k not in ("rejected", "rejected_score", "margin", "kind")} == {
                k: v for k, v in judged.items() if k not in ("rejected", "rejected_score", "margin", "kind")
            }
            assert row["chosen_score"] == 1.0 and row["rejected_score"] is None and row["margin"] is None
            assert row["rejected"] != chosen
        truncation, wrong, off_topic = group[1:]
        # truncation: a strict prefix of chosen, cut at a word boundary
        assert chosen.startswith(truncation["rejected"]) and len(truncation["rejected"]) < len(chosen)
        assert chosen[len(truncation["rejected"])] == " "
        assert truncation["rejected"].strip()
        # wrong_answer: only the last number differs
        got, want = _numbers(wrong["rejected"]), _numbers(chosen)
        assert len(got) == len(want) and got[:-1] == want[:-1] and got[-1] != want[-1]
        assert re.sub(r"-?\d+$", "", wrong["rejected"]) == re.sub(r"-?\d+$", "", chosen)
        assert TASK.score(wrong["prompt"], wrong["rejected"], a=wrong["a"], b=wrong["b"])[0] == 0.0
        # off_topic: a completion written for another prompt
        others = [c for other, cs in completions_of.items() if other != id_ for c in cs]
        assert off_topic["rejected"] in others
        assert off_topic["rejected"] not in completions_of[id_]
    assert summary["negatives_truncation"] == 3
    assert summary["negatives_wrong_answer"] == 3
    assert summary["negatives_off_topic"] == 3
    assert summary["rows_written"] == 12 == len(rows)
    assert summary["prompts_paired"] == 3 and summary["ties"] == 1


def test_negatives_not_applicable_are_counted(tmp_path, monkeypatch):
    """A two-word chosen cannot be truncated, one without numbers has no answer to change, and
    with a single rollout row there is no other prompt to take an off-topic answer from."""
    row = {"id": "x", "prompt": "Say hello.", "completions": ["Hello there", "nope"], "fields": {}}

    class LengthJudge(Judge):
        name = "fake_scorer"

        def score(self, prompt, completion, /, **row):
            return float(len(completion))

    import posttrain.judges.factory as judge_factory

    monkeypatch.setattr(judge_factory, "build_judge", lambda *a, **k: LengthJudge())
    summary, rows = _run(tmp_path, [row], negatives=["truncation", "wrong_answer", "off_topic"])
    assert [r["kind"] for r in rows] == ["judged"]
    assert rows[0]["chosen"] == "Hello there" and rows[0]["rejected"] == "nope"
    assert summary["negative_not_applicable_truncation"] == 1
    assert summary["negative_not_applicable_wrong_answer"] == 1
    assert summary["negative_not_applicable_off_topic"] == 1
    assert not any(k.startswith("negatives_") for k in summary)


def test_negatives_are_seeded(tmp_path):
    rollouts = [P1, P2, P3]
    _, first = _run(tmp_path, rollouts, out="a", negatives=["truncation", "wrong_answer", "off_topic"], seed=5)
    _, second = _run(tmp_path, rollouts, out="b", negatives=["truncation", "wrong_answer", "off_topic"], seed=5)
    assert first == second


def test_rows_of_one_prompt_are_written_together(tmp_path):
    _, rows = _run(tmp_path, [P1, TIE, P2, DUPES, P3], negatives=["truncation", "wrong_answer"])
    ids = [r["id"] for r in rows]
    assert ids == ["p1"] * 3 + ["p2"] * 3 + ["p3"] * 3


# ---------------------------------------------------------------------------------------------
# resuming, torn tails, summary


def _id_kinds(rows):
    return Counter((r["id"], r["kind"]) for r in rows)


def test_rerun_skips_prompts_already_written(tmp_path):
    negatives = ["truncation", "off_topic"]
    first_summary, first_rows = _run(tmp_path, [P1, P2], negatives=negatives)
    assert first_summary["rows_written"] == 6 and "skipped_done" not in first_summary
    # the same rollouts plus one more prompt, into the same output directory
    summary, rows = _run(tmp_path, [P1, P2, P3, TIE], negatives=negatives)
    assert summary["skipped_done"] == 2
    assert summary["rows_written"] == 3 and summary["prompts_paired"] == 1
    assert rows[:6] == first_rows  # earlier rows untouched
    assert [r["id"] for r in rows[6:]] == ["p3"] * 3
    assert max(_id_kinds(rows).values()) == 1  # no duplicate (id, kind)
    # and once more: nothing left to do
    summary, again = _run(tmp_path, [P1, P2, P3, TIE], negatives=negatives)
    assert summary["skipped_done"] == 3 and summary.get("rows_written", 0) == 0
    assert again == rows


def test_torn_last_line_is_tolerated_and_cut(tmp_path):
    _, first_rows = _run(tmp_path, [P1, P2])
    pairs_path = tmp_path / "out" / "pairs.jsonl"
    with open(pairs_path, "ab") as handle:  # a writer killed mid-line while writing p3
        handle.write(b'{"id": "p3", "prompt": "What is 99 + 99?", "chosen": "9+9=1')
    summary, rows = _run(tmp_path, [P1, P2, P3])  # strict read_jsonl: must parse every line
    assert summary["skipped_done"] == 2  # the torn p3 row does not count as done
    assert summary["rows_written"] == 1
    assert rows[:2] == first_rows
    assert rows[2]["id"] == "p3" and rows[2]["chosen"] == solve(99, 99, 2)
    text = pairs_path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "9+9=1\"" not in text and text.count("\n") == 3


def test_torn_tail_without_new_rows_still_reads(tmp_path):
    """A rerun with nothing to append still tolerates the torn tail (it skips, it does not crash)."""
    _run(tmp_path, [P1])
    with open(tmp_path / "out" / "pairs.jsonl", "ab") as handle:
        handle.write(b'{"id": "p9", "pro')
    rollouts = _write_rollouts(tmp_path / "rollouts.jsonl", [P1])
    summary = run_pairs(load_config(PairsConfig, values={"rollouts": rollouts, "output_dir": str(tmp_path / "out")}))
    assert summary["skipped_done"] == 1


def test_summary_json_is_written(tmp_path):
    summary, _ = _run(tmp_path, [P1, P2, TIE, DUPES], negatives=["wrong_answer"])
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk == {
        "prompts": 4,
        "ties": 1,
        "fewer_than_two_distinct": 1,
        "negatives_wrong_answer": 2,
        "rows_written": 4,
        "prompts_paired": 2,
    }
    assert "judge_orders_agree" not in on_disk  # only pairwise judges report it


# ---------------------------------------------------------------------------------------------
# a pairwise judge (round robin)


class FakePairwiseJudge(Judge):
    """Prefers the longer text; the two orders disagree on one chosen pair of texts."""

    name = "logprob_ab"
    pairwise = True

    def __init__(self, disagree_on: set[frozenset]):
        self.disagree_on = disagree_on
        self.calls = []

    def score(self, prompt, completion, /, **row):  # pragma: no cover - a pairwise judge is not scored
        raise AssertionError("run_pairs must compare, not score, with a pairwise judge")

    def compare(self, prompt, a, b, /, **row):
        self.calls.append((prompt, a, b, row))
        prob_a = 0.9 if len(a) > len(b) else 0.1 if len(a) < len(b) else 0.5
        preferred = "a" if prob_a > 0.5 else "b" if prob_a < 0.5 else "tie"
        agree = frozenset((a, b)) not in self.disagree_on
        return Comparison(preferred, prob_a, abs(2 * prob_a - 1), orders_agree=agree)


def test_language_model_judges_are_the_pairwise_ones():
    from posttrain.judges.logprob_ab import LogProbABJudge
    from posttrain.judges.openai import OpenAIJudge
    from posttrain.judges.reward_model import RewardModelJudge
    from posttrain.judges.verifier import VerifierJudge

    assert LogProbABJudge.pairwise and OpenAIJudge.pairwise
    assert not (Judge.pairwise or RewardModelJudge.pairwise or VerifierJudge.pairwise)


def test_pairwise_judge_round_robin(tmp_path, monkeypatch):
    import posttrain.judges.factory as judge_factory

    judge = FakePairwiseJudge(disagree_on={frozenset(("aa", "aaaa"))})
    monkeypatch.setattr(judge_factory, "build_judge", lambda *a, **k: judge)
    q1 = {"id": "q1", "prompt": "Q1?", "completions": ["aa", "a", "aaaa", "aaa"], "fields": {"answer": 1}}
    q2 = {"id": "q2", "prompt": "Q2?", "completions": ["bbb", "b", "bb"], "fields": {"answer": 2}}
    summary, rows = _run(tmp_path, [q1, q2], judge="logprob_ab")

    # every unordered pair exactly once, fields passed through
    q1_calls = [(a, b) for p, a, b, _ in judge.calls if p == "Q1?"]
    assert len(q1_calls) == 6 and len({frozenset(c) for c in q1_calls}) == 6
    assert len([c for c in judge.calls if c[0] == "Q2?"]) == 3
    assert all(row == {"answer": 1} for p, _, _, row in judge.calls if p == "Q1?")

    # wins by hand (0.9 to the longer, 0.1 to the shorter):
    # q1: "aa"=0.9+0.1+0.1=1.1, "a"=0.1*3=0.3, "aaaa"=0.9*3=2.7, "aaa"=0.9+0.9+0.1=1.9
    first, second = rows
    assert first["id"] == "q1" and first["chosen"] == "aaaa" and first["rejected"] == "a"
    assert first["chosen_score"] == pytest.approx(2.7) and first["rejected_score"] == pytest.approx(0.3)
    assert first["margin"] == pytest.approx(2.4) and first["kind"] == "judged" and first["judge"] == "logprob_ab"
    # q2: "bbb"=1.8, "b"=0.2, "bb"=1.0
    assert second["chosen"] == "bbb" and second["rejected"] == "b"
    assert second["chosen_score"] == pytest.approx(1.8) and second["rejected_score"] == pytest.approx(0.2)
    # 9 comparisons, one whose orders disagreed
    assert summary["judge_orders_agree"] == pytest.approx(8 / 9)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["judge_orders_agree"] == pytest.approx(8 / 9)


def test_pairwise_judge_all_equal_is_a_tie(tmp_path, monkeypatch):
    import posttrain.judges.factory as judge_factory

    judge = FakePairwiseJudge(disagree_on=set())
    monkeypatch.setattr(judge_factory, "build_judge", lambda *a, **k: judge)
    q = {"id": "q", "prompt": "Q?", "completions": ["xy", "ab", "cd"]}  # no fields at all
    summary, rows = _run(tmp_path, [q], judge="logprob_ab")
    assert rows == [] and summary["ties"] == 1
    assert summary["judge_orders_agree"] == 1.0


def test_orders_agree_none_is_not_counted(tmp_path, monkeypatch):
    """A judge without an order (orders_agree None) adds nothing to the agreement rate."""
    import posttrain.judges.factory as judge_factory

    class NoOrder(FakePairwiseJudge):
        def compare(self, prompt, a, b, /, **row):
            verdict = super().compare(prompt, a, b, **row)
            verdict.orders_agree = None
            return verdict

    monkeypatch.setattr(judge_factory, "build_judge", lambda *a, **k: NoOrder(set()))
    summary, rows = _run(tmp_path, [{"id": "q", "prompt": "Q?", "completions": ["a", "bbb"]}], judge="logprob_ab")
    assert rows[0]["chosen"] == "bbb"
    assert "judge_orders_agree" not in summary


def test_pairwise_judge_with_arithmetic_fields(tmp_path, monkeypatch):
    """The rollouts rollout writes for the built-in task carry fields a, b, answer."""
    import posttrain.judges.factory as judge_factory

    judge = FakePairwiseJudge(disagree_on=set())
    monkeypatch.setattr(judge_factory, "build_judge", lambda *a, **k: judge)
    row = _row("p1", 47, 38, ["Answer: 85", solve(47, 38, 2), "85"])
    summary, rows = _run(tmp_path, [row], judge="logprob_ab")
    assert rows[0]["chosen"] == solve(47, 38, 2) and rows[0]["rejected"] == "85"
    assert (rows[0]["a"], rows[0]["b"], rows[0]["answer"]) == (47, 38, 85)
    assert summary["judge_orders_agree"] == 1.0


# ---------------------------------------------------------------------------------------------
# config and data errors


def test_unknown_judge_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="judge"):
        load_config(PairsConfig, values={"rollouts": "r.jsonl", "judge": "gpt4"})


def test_unknown_negative_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="paraphrase"):
        load_config(PairsConfig, values={"rollouts": "r.jsonl", "negatives": ["truncation", "paraphrase"]})


def test_empty_rollouts_key_is_a_config_error(tmp_path):
    config = load_config(PairsConfig, values={"output_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="rollouts"):
        run_pairs(config)
    assert not (tmp_path / "out" / "pairs.jsonl").exists()


def test_empty_rollouts_file_is_a_data_error(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        run_pairs(load_config(PairsConfig, values={"rollouts": str(path), "output_dir": str(tmp_path / "out")}))


def test_missing_completions_is_a_data_error_naming_file_and_line(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    bad = {"id": "p2", "prompt": "What is 12 + 34?", "fields": {"a": 12, "b": 34}}
    path.write_text(json.dumps(P1) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match="completions") as err:
        run_pairs(load_config(PairsConfig, values={"rollouts": str(path), "output_dir": str(tmp_path / "out")}))
    assert f"{path}:2" in str(err.value)
    assert not (tmp_path / "out" / "pairs.jsonl").exists()  # validated before anything is written


def test_prompt_torn_midway_is_completed_on_resume(tmp_path):
    """A crash after a prompt's judged row but inside its truncation row: the rerun must end with
    every row of that prompt, each (id, kind) once."""
    _, first_rows = _run(tmp_path, [P1], negatives=["truncation"])
    assert [r["kind"] for r in first_rows] == ["judged", "truncation"]
    pairs_path = tmp_path / "out" / "pairs.jsonl"
    lines = pairs_path.read_bytes().split(b"\n")
    pairs_path.write_bytes(lines[0] + b"\n" + lines[1][:25])  # judged row whole, truncation row torn
    rollouts = _write_rollouts(tmp_path / "rollouts.jsonl", [P1])
    run_pairs(load_config(PairsConfig, values={"rollouts": rollouts, "output_dir": str(tmp_path / "out"), "negatives": ["truncation"]}))
    rows = [row for _, row in iter_jsonl(pairs_path, allow_torn_tail=True)]
    assert _id_kinds(rows) == Counter({("p1", "judged"): 1, ("p1", "truncation"): 1})


def test_logprob_ab_judge_in_base_model_mode_asks_in_the_instruction_format(tmp_path, tiny_model_dir):
    """judge_base_model_mode reaches the judge LM: no chat template, Instruction/Response prompts."""
    from posttrain.judges.factory import build_judge

    judge = build_judge("logprob_ab", model=tiny_model_dir, base_model_mode=True)
    assert judge.base_model_mode and judge.tokenizer.chat_template is None
    chat_judge = build_judge("logprob_ab", model=tiny_model_dir)
    assert not chat_judge.base_model_mode and chat_judge.tokenizer.chat_template is not None
    summary, rows = _run(tmp_path, [P1], judge="logprob_ab", judge_model=tiny_model_dir, judge_base_model_mode=True)
    assert summary["prompts"] == 1 and all(row["judge"] == "logprob_ab" for row in rows)
