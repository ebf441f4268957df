"""SDPO's premise at the first error of failed samples (posttrain.evaluation.premise)."""

from __future__ import annotations

import pytest
import torch

from posttrain.evaluation.premise import FirstError, correct_token_log_prob, first_error, teacher_wins


@pytest.mark.parametrize("completion, reference, expected", [
    ([5, 6, 9], [5, 6, 7, 8], FirstError(prefix=[5, 6], correct=7)),  # a wrong token
    ([9, 6, 7], [5, 6, 7], FirstError(prefix=[], correct=5)),  # wrong from the start
    ([5], [5, 6], FirstError(prefix=[5], correct=6)),  # stopped early: the first missing token
    ([], [5], FirstError(prefix=[], correct=5)),
    ([5, 6, 1], [5, 6], None),  # the whole reference, then more: no correct token there
    ([5, 6], [5, 6], None),
])
def test_first_error_is_where_the_completion_leaves_the_reference(completion, reference, expected):
    assert first_error(completion, reference) == expected


def test_the_correct_tokens_log_prob_is_the_models_next_token_distribution(tiny_model_dir):
    from posttrain.models import load_model

    model = load_model(tiny_model_dir, "float32", False, device="cpu")
    context, error = [3, 14, 15], FirstError(prefix=[9, 2], correct=6)
    ours = correct_token_log_prob(model, context, error)
    with torch.no_grad():
        full = model(input_ids=torch.tensor([[3, 14, 15, 9, 2]])).logits[0, -1]
    assert ours == pytest.approx(torch.log_softmax(full.double(), -1)[6].item(), abs=1e-5)
    assert ours != pytest.approx(correct_token_log_prob(model, context, FirstError(prefix=[9], correct=6)), abs=1e-6)


def test_teacher_wins_counts_strictly_better_first_errors():
    assert teacher_wins([-1.0, -2.0, -3.0, -0.5], [-0.5, -2.0, -1.0, -4.0]) == 0.5  # a tie is not a win
    assert teacher_wins([], []) is None  # nothing failed
    with pytest.raises(ValueError, match="2 student and 1 teacher"):
        teacher_wins([-1.0, -2.0], [-1.0])


def test_eval_compares_each_teacher_context_with_the_student_at_the_first_error(tiny_model_dir, tmp_path, monkeypatch):
    """Wiring: each failed plain completion is scored at its own first error under the student's
    prompt, the feedback the verifier gives on *that* completion, and a correct solution. A stand-in
    log-probability that likes feedback and dislikes the solution gives shares 1 and 0."""
    import posttrain.commands.eval as eval_command
    from posttrain.commands.eval import EvalConfig
    from posttrain.config import load_config
    from posttrain.tasks.arithmetic import ArithmeticTask

    rows = ArithmeticTask().make_dataset("test", n=4)
    # a wrong first step and a wrong answer; the 4th completion is right
    wrong = {row["prompt"]: row["completion"].replace("carry", "carry 7", 1).split("Answer:")[0] + "Answer: 1" for row in rows[:3]}

    def greedy(model, tokenizer, prompts, **kwargs):
        texts = [[next(wrong.get(r["prompt"], r["completion"]) for r in rows if r["prompt"] in p)] for p in prompts]
        return (texts, [[5] for _ in prompts]) if kwargs.get("return_token_counts") else texts

    seen = []

    def log_prob(model, context, error):
        text = tokenizer.decode(context)
        seen.append((text, error))
        return -0.1 if "unsuccessful earlier attempt" in text else -5.0 if "Correct solution:" in text else -1.0

    from posttrain.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir, False, False)
    monkeypatch.setattr(eval_command, "generate", greedy)
    monkeypatch.setattr(eval_command, "correct_token_log_prob", log_prob)
    config = load_config(EvalConfig, values={"model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path),
                                             "num_examples": 4, "premise_check": True})
    metrics = eval_command.run_eval(config)
    assert metrics["premise/first_errors"] == 3
    assert (metrics["premise/first_error_feedback"], metrics["premise/first_error_solution"]) == (1.0, 0.0)
    task = ArithmeticTask()
    for row, (student, feedback, solution) in zip(rows[:3], zip(*[iter(seen)] * 3)):
        _, said = task.score(row["prompt"], wrong[row["prompt"]], **row)
        assert said in feedback[0] and said not in student[0]  # the verifier's words on this very completion
        assert task.hinted_prompt(row) in solution[0] and "<|im_start|>user\n" in student[0]
        prefix = tokenizer.decode(student[1].prefix)
        assert row["completion"].startswith(prefix) and wrong[row["prompt"]].startswith(prefix)
        assert student[1] == feedback[1] == solution[1]  # one first error, three contexts
