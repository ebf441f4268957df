"""Unit tests for the Python code task (posttrain.tasks.python_code): shipped problems, splits,
program extraction, sandboxed scoring with partial rewards and feedback, and preference pairs."""

from __future__ import annotations

import pytest

from posttrain.errors import ConfigError
from posttrain.tasks import get_task
from posttrain.tasks.python_code import (
    ECHO_PROGRAM,
    FEEDBACK_LIMIT,
    INSTRUCTION,
    NO_CODE,
    PythonCodeTask,
    extract_program,
    fence,
    load_problems,
    normalize_output,
)

TASK = PythonCodeTask()
PROBLEMS = load_problems()

# ---------------------------------------------------------------------------------------------
# shipped problems


def test_shipped_problems_are_well_formed():
    """About two dozen problems with unique ids, a statement with I/O format, and 3-5 tests."""
    assert len(PROBLEMS) == 24
    assert len({problem.id for problem in PROBLEMS}) == len(PROBLEMS)
    for problem in PROBLEMS:
        assert "Input:" in problem.prompt and "Output:" in problem.prompt, problem.id
        assert 3 <= len(problem.tests) <= 5, problem.id
        assert len({test["input"] for test in problem.tests}) == len(problem.tests), problem.id


@pytest.mark.parametrize("problem", PROBLEMS, ids=[problem.id for problem in PROBLEMS])
def test_every_reference_solution_passes_its_tests(problem):
    """Each reference program, run in the sandbox, passes all of its problem's tests."""
    assert TASK.score(problem.prompt, fence(problem.solution), id=problem.id) == (1.0, None)


# ---------------------------------------------------------------------------------------------
# datasets


def test_rows_have_prompt_completion_answer_tests_id():
    """A row is the statement plus the instruction, the fenced reference, the id as answer, and the tests."""
    row = TASK.make_dataset("test", n=1)[0]
    problem = next(problem for problem in PROBLEMS if problem.id == row["id"])
    assert set(row) == {"prompt", "completion", "answer", "tests", "id"}
    assert row["prompt"] == f"{problem.prompt}\n\n{INSTRUCTION}"
    assert row["completion"] == f"```python\n{problem.solution.rstrip()}\n```"
    assert row["answer"] == problem.id
    assert row["tests"] == list(problem.tests)


def test_splits_are_disjoint_and_cover_all_problems():
    """test has test_size problems, train the rest, with no overlap."""
    task = PythonCodeTask(test_size=6, seed=0)
    train = {row["id"] for row in task.make_dataset("train")}
    test = {row["id"] for row in task.make_dataset("test")}
    assert (len(train), len(test)) == (18, 6)
    assert not train & test
    assert train | test == {problem.id for problem in PROBLEMS}


def test_splits_are_deterministic_and_seeded():
    """The same seed gives the same rows; another seed holds out other problems."""
    assert PythonCodeTask(seed=3).make_dataset("train") == PythonCodeTask(seed=3).make_dataset("train")
    held_out = [{row["id"] for row in PythonCodeTask(seed=seed).make_dataset("test")} for seed in (0, 1)]
    assert held_out[0] != held_out[1]


def test_n_takes_a_prefix():
    """n takes the first n rows of the split."""
    assert TASK.make_dataset("train", n=4) == TASK.make_dataset("train")[:4]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"test_size": 0}, "test_size must be in \\[1, 23\\], got 0"),
        ({"test_size": 24}, "test_size must be in \\[1, 23\\], got 24"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
        ({"memory_mb": 10}, "memory_mb must be at least 64"),
    ],
)
def test_bad_options(options, message):
    """Out-of-range options are ConfigErrors naming the option."""
    with pytest.raises(ConfigError, match=message):
        PythonCodeTask(**options)


def test_bad_split():
    """Only 'train' and 'test' are splits."""
    with pytest.raises(ConfigError, match="split must be 'train' or 'test'"):
        TASK.make_dataset("validation")


def test_get_task_builds_python_code_with_options():
    """The registry knows the task and passes its options."""
    task = get_task("python_code", test_size=4, seed=2, timeout_s=2.0)
    assert isinstance(task, PythonCodeTask)
    assert (task.name, task.test_size, task.seed, task.timeout_s, task.memory_mb) == ("python_code", 4, 2, 2.0, 512)
    assert len(task.make_dataset("test")) == 4


# ---------------------------------------------------------------------------------------------
# program extraction and output comparison


@pytest.mark.parametrize(
    "completion, program",
    [
        ("Here:\n```python\nprint(1)\n```\nDone.", "print(1)\n"),
        ("```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```", "print(2)\n"),
        ("```\nprint(3)\n```", "print(3)\n"),
        ("```python\nprint(4)\n```\n```\nnot this\n```", "print(4)\n"),
        ("```py\nprint(5)\n```", "print(5)\n"),
        ("```Python3\nprint(6)\n```", "print(6)\n"),
        ("print(7)", "print(7)"),
        ("```python\nprint(8)\n", "print(8)\n"),
        ("1. Read n:\n   ```python\n   n = int(input())\n   print(n)\n   ```", "n = int(input())\nprint(n)\n"),
        ("```python\n```", None),
        ("```cpp\nint main() {}\n```", None),
        ("   \n", None),
        ("", None),
    ],
    ids=["one-block", "last-python-block", "bare-block", "python-over-bare", "py-tag", "tag-case", "no-fences",
         "unclosed-fence", "indented-block", "empty-block", "other-language-only", "blank", "empty"],
)
def test_extract_program(completion, program):
    """Last ```python block, else last bare block, else the whole unfenced completion; None for no code."""
    assert extract_program(completion) == program


def test_normalize_output_ignores_trailing_whitespace_only():
    """Trailing spaces per line and trailing newlines do not matter; anything else does."""
    assert normalize_output("1 2 \n3\t\n\n\n") == normalize_output("1 2\n3") == "1 2\n3"
    assert normalize_output("a\r\nb\r\n") == "a\nb"
    assert normalize_output(" 1") != normalize_output("1")
    assert normalize_output("a\n\nb") != normalize_output("a\nb")


# ---------------------------------------------------------------------------------------------
# scoring and feedback

ECHO_TESTS = [{"input": "a\n", "output": "a\n"}, {"input": "b\n", "output": "c\n"}]


def test_partial_reward_and_wrong_answer_feedback():
    """Passing 1 of 2 tests scores 0.5; the feedback shows the failing test's input, output, expected."""
    reward, feedback = TASK.score("echo", "```python\nprint(input())\n```", tests=ECHO_TESTS)
    assert reward == 0.5
    assert feedback == "1 of 2 tests failed.\n\nTest 2: Wrong answer\nInput:\nb\nOutput:\nb\nExpected:\nc"


def test_trailing_whitespace_in_output_is_accepted():
    """Extra trailing spaces and blank lines at the end still pass."""
    assert TASK.score("p", "```python\nprint('x  ')\nprint()\n```", tests=[{"input": "", "output": "x\n"}]) == (1.0, None)


def test_empty_output_is_shown_as_empty():
    """A program that prints nothing is a wrong answer with Output: (empty)."""
    _, feedback = TASK.score("p", "```python\npass\n```", tests=[{"input": "1\n", "output": "1\n"}])
    assert "Output:\n(empty)\nExpected:\n1" in feedback


def test_runtime_error_feedback_names_the_line_and_exception():
    """A crash reports the program's line, its source and the exception, then the input."""
    completion = "```python\nx = int(input())\nprint(10 // x)\n```"
    reward, feedback = TASK.score("p", completion, tests=[{"input": "2\n", "output": "5\n"}, {"input": "0\n", "output": "0\n"}])
    assert reward == 0.5
    assert feedback == (
        "1 of 2 tests failed.\n\nTest 2: Runtime error\n"
        '  File "main.py", line 2, in <module>\n    print(10 // x)\n'
        "ZeroDivisionError: integer division or modulo by zero\nInput:\n0"
    )


def test_syntax_error_feedback():
    """A syntax error fails every test as a runtime error naming the SyntaxError."""
    reward, feedback = TASK.score("p", "```python\nprint(1\n```", tests=ECHO_TESTS)
    assert reward == 0.0
    assert feedback.startswith("2 of 2 tests failed.\n\nTest 1: Runtime error\n")
    assert "SyntaxError: '(' was never closed" in feedback


def test_exit_status_and_signal_feedback():
    """A silent non-zero exit reports its status; a signal death names the signal."""
    tests = [{"input": "", "output": "x\n"}]
    assert "Runtime error\nexit status 3" in TASK.score("p", "```python\nimport sys\nsys.exit(3)\n```", tests=tests)[1]
    killed = "```python\nimport os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n```"
    assert "Runtime error: killed by SIGSEGV" in TASK.score("p", killed, tests=tests)[1]


def test_time_limit_feedback():
    """An endless loop is reported as a time limit with the task's limit."""
    task = PythonCodeTask(timeout_s=0.5)
    reward, feedback = task.score("p", "```python\nwhile True:\n    pass\n```", tests=[{"input": "1\n", "output": "1\n"}])
    assert reward == 0.0
    assert feedback == "1 of 1 tests failed.\n\nTest 1: Time limit exceeded (0.5 s)\nInput:\n1"


def test_memory_limit_feedback():
    """Allocating past the limit is reported as a memory limit with the task's limit."""
    task = PythonCodeTask(memory_mb=128)
    reward, feedback = task.score("p", "```python\nx = bytearray(10**10)\n```", tests=[{"input": "", "output": "1\n"}])
    assert (reward, feedback) == (0.0, "1 of 1 tests failed.\n\nTest 1: Memory limit exceeded (128 MB)\nInput:\n(empty)")


def test_feedback_describes_at_most_two_failures():
    """With five failing tests, two are described and the total is stated."""
    tests = [{"input": f"{i}\n", "output": f"{i + 1}\n"} for i in range(5)]
    reward, feedback = TASK.score("p", "```python\nprint(input())\n```", tests=tests)
    assert reward == 0.0
    assert feedback.startswith("5 of 5 tests failed; the first 2 are shown.\n\nTest 1: Wrong answer")
    assert "Test 2: Wrong answer" in feedback and "Test 3" not in feedback


def test_feedback_with_very_long_output_stays_short():
    """Megabytes of output, input and expected text still give at most FEEDBACK_LIMIT characters,
    cut cleanly with markers."""
    long_input = "x" * 5000 + "\n"
    tests = [{"input": long_input, "output": "y" * 5000 + "\n"}, {"input": long_input, "output": "z" * 5000 + "\n"}]
    reward, feedback = TASK.score("p", "```python\nprint('w' * 10**6)\n```", tests=tests)
    assert reward == 0.0
    assert len(feedback) <= FEEDBACK_LIMIT
    assert "more characters]" in feedback
    assert feedback.endswith("[feedback truncated]")
    assert feedback.startswith("2 of 2 tests failed.\n\nTest 1: Wrong answer\nInput:\nxxx")


def test_no_code_scores_zero():
    """A completion without a program scores 0 with feedback saying so, without running anything."""
    assert TASK.score("p", "I cannot solve this.\n```text\nsorry\n```", tests=ECHO_TESTS) == (0.0, NO_CODE)
    assert TASK.score("p", "", tests=ECHO_TESTS) == (0.0, NO_CODE)


def test_score_finds_tests_by_id_or_by_prompt():
    """Without tests in the row, the shipped problem is found by id, by answer, or by its statement."""
    row = TASK.make_dataset("test", n=1)[0]
    assert TASK.score("anything", row["completion"], id=row["id"]) == (1.0, None)
    assert TASK.score("anything", row["completion"], answer=row["answer"]) == (1.0, None)
    assert TASK.score(f"<|user|>\n{row['prompt']}\n<|assistant|>", row["completion"]) == (1.0, None)
    assert TASK.score(row["prompt"], row["completion"], **row) == (1.0, None)


def test_score_unknown_problem_raises():
    """A prompt that is no shipped problem, without tests, is a ValueError quoting the prompt."""
    with pytest.raises(ValueError, match="cannot find the tests for prompt 'Write hello world'"):
        TASK.score("Write hello world", "```python\nprint('hello world')\n```")


# ---------------------------------------------------------------------------------------------
# hinted prompts and preference pairs


def test_hinted_prompt_contains_the_reference_solution():
    """The hinted prompt starts with the prompt and includes the fenced reference solution."""
    row = TASK.make_dataset("test", n=1)[0]
    hinted = TASK.hinted_prompt(row)
    assert hinted.startswith(row["prompt"])
    assert row["completion"] in hinted


def test_pairs_reject_a_program_that_really_fails():
    """chosen is the reference (reward 1), rejected a deterministic program that fails a test."""
    pairs = TASK.make_pairs("test")
    assert pairs == TASK.make_pairs("test")
    rows = TASK.make_dataset("test")
    assert [pair["prompt"] for pair in pairs] == [row["prompt"] for row in rows]
    for pair, row in zip(pairs, rows):
        assert set(pair) == {"prompt", "chosen", "rejected", "answer"}
        assert pair["chosen"] == row["completion"]
        assert pair["rejected"] != pair["chosen"]
        reward, feedback = TASK.score(pair["prompt"], pair["rejected"], **row)
        assert reward < 1.0 and feedback, row["id"]


def test_wrong_program_prefers_an_off_by_one_mistake():
    """The rejected program is the reference with one integer literal changed, when that fails;
    a reference without integer literals falls back to echoing the input."""
    fizzbuzz = next(problem for problem in PROBLEMS if problem.id == "fizzbuzz")
    wrong = TASK.wrong_program(fizzbuzz)
    assert wrong != ECHO_PROGRAM and "FizzBuzz" in wrong
    sum_two = next(problem for problem in PROBLEMS if problem.id == "sum_two")
    assert TASK.wrong_program(sum_two) == ECHO_PROGRAM
