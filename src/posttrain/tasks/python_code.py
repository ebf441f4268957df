"""Python programming problems scored by running the model's program on unit tests.

Each shipped problem (``data/python_problems.jsonl``) is a stdin-to-stdout exercise (sum two
numbers, FizzBuzz, a prime test, ...) with a reference solution and 3 to 5 tests. The problems
are deliberately simple: the task exists to exercise the code-RL path (sandboxed execution,
partial rewards, execution feedback) on models that fit a laptop, not to rank strong coders.

The verifier runs the last ```python block of the completion (else the last bare ``` block,
else the whole completion) once per test in :func:`posttrain.tasks.sandbox.run_python`, because it
is model output and may do anything. Outputs are compared line by line, ignoring trailing
whitespace. The reward is the fraction of tests passed, which gives RL a gradient between
"nothing works" and "all correct"; the feedback names what went wrong on the first two failing
tests (wrong answer with input, output and expected output; the error line of a traceback; a
time or memory limit), short enough (at most 2,000 characters) to put back into a prompt.
Tests run one after another: a program that hangs costs about ``timeout_s`` + 1 s per test,
which is why callers score completions in parallel (a thread pool in the RL reward).

Preference pairs reject the reference with one integer literal off by one, or else a program
that echoes its input, whichever really fails a test when run.
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
import json
import random
import re
import signal
import textwrap
from dataclasses import dataclass

from posttrain.data.reprompting import RepromptSettings, reprompt_text
from posttrain.errors import ConfigError, DataError
from posttrain.tasks.sandbox import SandboxResult, run_python

PROBLEMS_FILE = "python_problems.jsonl"  # in posttrain/tasks/data/
INSTRUCTION = (
    "Write a complete Python program that reads from standard input and writes to standard output. "
    "Answer with the program in a ```python code block."
)
NO_CODE = "No code found: answer with a complete Python program in a ```python code block."
FEEDBACK_LIMIT = 2000  # characters of feedback at most
FIELD_LIMIT = 300  # characters shown of one input, output or expected output
SHOWN_FAILURES = 2  # failing tests described in the feedback
VERIFY_TIMEOUT_S = 1.0  # per test when checking that a rejected program fails
ECHO_PROGRAM = "import sys\n\nprint(sys.stdin.read(), end='')\n"

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = {"python", "py", "python3"}


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str  # the statement with input and output format and an example
    solution: str  # reference program
    tests: tuple[dict, ...]  # {"input": str, "output": str}


@functools.cache
def load_problems() -> tuple[Problem, ...]:
    """The shipped problems, read from the package (so they work from an installed wheel)."""
    path = importlib.resources.files("posttrain.tasks") / "data" / PROBLEMS_FILE
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{PROBLEMS_FILE}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({err.msg})") from None
        for field in ("id", "prompt", "solution"):
            if not isinstance(row.get(field), str) or not row[field]:
                raise DataError(f"{where}: field '{field}' must be a non-empty string")
        tests = row.get("tests")
        if not isinstance(tests, list) or not tests or not all(_is_test(test) for test in tests):
            raise DataError(f"{where}: field 'tests' must be a non-empty list of {{'input': str, 'output': str}}")
        problems.append(Problem(row["id"], row["prompt"], row["solution"], tuple(tests)))
    ids = [problem.id for problem in problems]
    if len(set(ids)) != len(ids):
        raise DataError(f"{PROBLEMS_FILE}: problem ids are not unique")
    return tuple(problems)


def _is_test(test) -> bool:
    return isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str)


def extract_program(completion: str) -> str | None:
    """The program in a completion: the last ```python block, else the last bare ``` block, else
    the whole completion when it has no fences; None when there is no code. An unclosed last
    fence (generation cut off) runs to the end; an indented block (in a list item) is dedented."""
    blocks = _FENCE.findall(completion)
    if blocks:
        python = [body for tag, body in blocks if tag.lower() in _PYTHON_TAGS]
        bare = [body for tag, body in blocks if not tag]
        program = textwrap.dedent(python[-1] if python else bare[-1] if bare else "")
    else:
        program = completion
    return program if program.strip() else None


def normalize_output(text: str) -> str:
    """Output as compared: trailing whitespace dropped from every line and from the end."""
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip()


def fence(program: str) -> str:
    """``program`` as a completion: in a ```python block."""
    return f"```python\n{program.rstrip()}\n```"


class PythonCodeTask:
    """Stdin/stdout programming problems with unit tests, run in the sandbox.

    Args:
        test_size: problems held out for the test split (the rest are the training split).
        seed: fixes which problems are held out and the order of both splits.
        timeout_s: CPU-time limit per test run (the sandbox adds a little wall-clock slack).
        memory_mb: address-space limit per test run.
    """

    name = "python_code"

    def __init__(self, test_size: int = 6, seed: int = 0, timeout_s: float = 5.0, memory_mb: int = 512):
        total = len(load_problems())
        if not 0 < test_size < total:
            raise ConfigError(f"python_code task: test_size must be in [1, {total - 1}], got {test_size}")
        if not timeout_s > 0:
            raise ConfigError(f"python_code task: timeout_s must be positive, got {timeout_s}")
        if memory_mb < 64:
            raise ConfigError(f"python_code task: memory_mb must be at least 64, got {memory_mb}")
        self.test_size, self.seed, self.timeout_s, self.memory_mb = test_size, seed, timeout_s, memory_mb

    def _split(self, split: str) -> list[Problem]:
        if split not in ("train", "test"):
            raise ConfigError(f"python_code task: split must be 'train' or 'test', got '{split}'")
        problems = list(load_problems())
        random.Random(self.seed).shuffle(problems)
        return problems[self.test_size :] if split == "train" else problems[: self.test_size]

    def make_dataset(self, split: str, n: int | None = None) -> list[dict]:
        problems = self._split(split)
        if n is not None:
            problems = problems[:n]
        return [self._row(problem) for problem in problems]

    def _row(self, problem: Problem) -> dict:
        return {
            "prompt": f"{problem.prompt}\n\n{INSTRUCTION}",
            "completion": fence(problem.solution),
            "answer": problem.id,  # a program has no single answer; the id names its tests
            "tests": [dict(test) for test in problem.tests],
            "id": problem.id,
        }

    def _problem(self, prompt: str, row: dict) -> Problem | None:
        """The shipped problem a row is about: by id (or answer), else by its statement in the prompt."""
        key = row.get("id", row.get("answer"))
        for problem in load_problems():
            if problem.id == key:
                return problem
        for problem in load_problems():
            if problem.prompt in prompt:
                return problem
        return None

    def make_pairs(self, split: str, n: int | None = None) -> list[dict]:
        """Pairs whose ``chosen`` is the reference and ``rejected`` a program verified (by running
        it) to fail at least one test."""
        problems = self._split(split)
        if n is not None:
            problems = problems[:n]
        pairs = []
        for problem in problems:
            row = self._row(problem)
            rejected = fence(self.wrong_program(problem))
            pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected, "answer": row["answer"]})
        return pairs

    def wrong_program(self, problem: Problem) -> str:
        """The reference with its first integer literal (in AST order) whose +1 makes a test fail
        without hanging, else the echo program; checked by running, so never a correct one."""
        timeout_s = min(self.timeout_s, VERIFY_TIMEOUT_S)
        for candidate in [*_off_by_one(problem.solution), ECHO_PROGRAM]:
            for test in problem.tests:
                result = run_python(candidate, stdin=test["input"], timeout_s=timeout_s, memory_mb=self.memory_mb)
                if result.status == "timeout":
                    break  # a hang is a poor example of a mistake: try the next candidate
                if not _passed(result, test):
                    return candidate
        raise DataError(f"python_code task: no wrong program found for problem '{problem.id}' (its tests cannot tell)")

    def hinted_prompt(self, row: dict) -> str:
        """The prompt as SDPO's teacher sees it with the reference solution in context."""
        problem = self._problem(row["prompt"], row)
        if problem is None:
            raise ValueError(f"python_code task cannot find the problem of prompt {row['prompt'][:200]!r}")
        return reprompt_text(row["prompt"], fence(problem.solution), None, RepromptSettings())

    def score(self, prompt: str, completion: str, /, **row) -> tuple[float, str | None]:
        tests = row.get("tests")
        if not tests:
            problem = self._problem(prompt, row)
            if problem is None:
                raise ValueError(f"python_code task cannot find the tests for prompt {prompt[:200]!r}")
            tests = problem.tests
        program = extract_program(completion)
        if program is None:
            return 0.0, NO_CODE
        failures = []
        for number, test in enumerate(tests, 1):
            result = run_python(program, stdin=test["input"], timeout_s=self.timeout_s, memory_mb=self.memory_mb)
            if not _passed(result, test):
                failures.append((number, test, result))
        if not failures:
            return 1.0, None
        return 1.0 - len(failures) / len(tests), self.feedback(failures, len(tests))

    def feedback(self, failures: list[tuple[int, dict, SandboxResult]], total: int) -> str:
        """Describe the first SHOWN_FAILURES failing tests, within FEEDBACK_LIMIT characters."""
        header = f"{len(failures)} of {total} tests failed."
        if len(failures) > SHOWN_FAILURES:
            header = f"{len(failures)} of {total} tests failed; the first {SHOWN_FAILURES} are shown."
        parts = [header]
        for number, test, result in failures[:SHOWN_FAILURES]:
            parts.append(f"Test {number}: {self._describe(test, result)}")
        return _truncate("\n\n".join(parts), FEEDBACK_LIMIT)

    def _describe(self, test: dict, result: SandboxResult) -> str:
        given = f"Input:\n{_clip(test['input'])}"
        if result.status == "ok":
            return f"Wrong answer\n{given}\nOutput:\n{_clip(result.stdout)}\nExpected:\n{_clip(test['output'])}"
        if result.status == "timeout":
            return f"Time limit exceeded ({self.timeout_s:g} s)\n{given}"
        if result.status == "memory":
            return f"Memory limit exceeded ({self.memory_mb} MB)\n{given}"
        if result.status == "killed":
            return f"Runtime error: killed by {signal.Signals(-result.returncode).name}\n{given}"
        summary = _error_summary(result.stderr)
        return f"Runtime error\n{summary or f'exit status {result.returncode}'}\n{given}"


def _passed(result: SandboxResult, test: dict) -> bool:
    return result.status == "ok" and normalize_output(result.stdout) == normalize_output(test["output"])


def _off_by_one(solution: str) -> list[str]:
    """The solution with one integer literal increased by one, one variant per literal."""
    tree = ast.parse(solution)
    literals = [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and type(node.value) is int]
    variants = []
    for node in literals:
        node.value += 1
        variants.append(ast.unparse(tree) + "\n")
        node.value -= 1
    return variants


def _error_summary(stderr: str) -> str:
    """The end of a traceback: the innermost ``main.py`` frame with its source line, then the
    exception line (the whole stderr is mostly frames of no use to the reader)."""
    lines = [line for line in stderr.rstrip().splitlines() if line.strip() and not set(line.strip()) <= set("^~")]
    if not lines:
        return ""
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "main.py"')]
    if not frames or frames[-1] == len(lines) - 1:
        return _clip(lines[-1])
    start = frames[-1]
    end = start + 2 if start + 2 < len(lines) and lines[start + 1].startswith("    ") else start + 1
    return _clip("\n".join([*lines[start:end], lines[-1]]))


def _clip(text: str, limit: int = FIELD_LIMIT) -> str:
    """``text`` without its final newlines, cut to ``limit`` characters; "(empty)" for nothing."""
    text = text.rstrip("\n")
    if not text:
        return "(empty)"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a line break where possible, with a marker."""
    if len(text) <= limit:
        return text
    marker = "\n[feedback truncated]"
    cut = text.rfind("\n", 0, limit - len(marker))
    if cut < limit // 2:
        cut = limit - len(marker)
    return text[:cut] + marker
