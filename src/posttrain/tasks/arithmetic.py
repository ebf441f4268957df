"""Arithmetic word problems: the built-in task of the embedded default.

Problems are additions of two ``digits``-digit numbers ("What is 47 + 38?"). The reference
solution is a column-by-column scratchpad, least significant digit first::

    7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85

Each step needs only single-digit sums and a carry, which is what lets a ~1M-parameter model
learn the task in CPU minutes; answering directly forces it to resolve every carry in one
forward pass, and then it barely learns (about 10% in the same budget).

The verifier is exact: the number after the last ``Answer:``, and with ``check_steps`` also
every step of the scratchpad (a right answer reached through a wrong step is a failure, which
keeps RL from rewarding lucky guesses). Feedback says what is wrong and what is right: the
first wrong or missing step and what it should be (``Step 2 should be: 4+3+1=8 carry 0. You
wrote: 4+3+1=9 carry 0.``), or the right final answer when only that is wrong. With
``feedback_style: prefix`` it quotes the right solution up to and including the first wrong
step instead (``Your attempt goes wrong at step 2. It should begin: 7+8=15 carry 1. 4+3+1=8
carry 0.``): the same information, worded as the text to write, which a model that reads a
solution in context can copy at the very token where its attempt went wrong; a step number
means nothing to a model that cannot count its steps (docs/sdpo.md, "Feedback the model can use").

The hinted prompt puts a correct solution in context, in the words SDPO's teacher sees it
(:func:`posttrain.data.reprompting.reprompt_text`). A tiny model cannot read a solution in
context unless it has seen the format, so ``teacher_fraction`` mixes such rows into the training
split (half with a correct solution, half with the feedback on a typical mistake, each followed
by the reference answer); in ``masked_fraction`` of the solution rows the question asks about
other numbers, so the only way to the answer is to read the context. Whether the in-context
teacher then beats the student, as it does for large models, is what ``posttrain eval
--premise_check true`` measures; on the 0.87M tiny model it does not (docs/sdpo.md).
"""

from __future__ import annotations

import random
import re

from posttrain.data.reprompting import RepromptSettings, first_divergence, reprompt_text
from posttrain.errors import ConfigError
from posttrain.tasks import Feedback

_ANSWER = re.compile(r"Answer:\s*(-?\d+)")
_PROBLEM = re.compile(r"What is (\d+) \+ (\d+)\?")
_STEP_TEXT = re.compile(r"[^.]*\.")  # one scratchpad step: everything up to and including its full stop
FEEDBACK_STYLES = ("step", "prefix")
POOL_SIZE = 200_000  # problems drawn (without replacement) when the space is larger
# Pretraining-like pages (the ``documents`` split). Each page names its question and its answer with
# one pair of labels: none, a conventional pair, or two words from LABEL_WORDS or made up. Its
# examples may close with one of PAGE_TERMINATORS. None of these is Instruction/Response/END: the
# post-training format stays unseen, so a base model that reads it few-shot has learned to read
# a page's format, not that format.
CONVENTIONAL_LABELS = (("Q", "A"), ("Problem", "Solution"), ("Question", "Answer"), ("Input", "Output"), ("Query", "Reply"),
                       ("Task", "Result"), ("Prompt", "Completion"), ("User", "Bot"), ("Exercise", "Work"), ("Request", "Reply"))
LABEL_WORDS = ("Q", "A", "Question", "Answer", "Input", "Output", "Query", "Reply", "Task", "Result", "Prompt", "Text",
               "Note", "Example", "Problem", "Solution", "User", "Bot", "Human", "AI", "Teacher", "Student", "Request",
               "Work", "Ask", "Say", "Case", "Item", "Source", "Target", "Context", "Message", "Post", "Title", "Body",
               "Line", "Data", "Info")
# How many examples come before a page's problem (drawn uniformly from this tuple).
EARLIER_EXAMPLE_COUNTS = (0, 0, 0, 1, 1, 1, 1, 2, 2, 2)
PAGE_TERMINATORS = ("", "", "DONE", "STOP", "###", "---", "EOF", "FIN", "<end>", "===")
# Short exchanges that share a page with the worked sums: what else a page of text holds.
OTHER_EXCHANGES = (
    ("What colour is the sky?", "The sky is blue on a clear day."), ("Name a fruit.", "An apple."),
    ("Who wrote the letter?", "She did."), ("Where is the market?", "The market is in the town square."),
    ("Say hello.", "Hello!"), ("What day is the meeting?", "The meeting is on Monday at noon."),
    ("Describe a cat.", "A small furry animal that likes to sleep."), ("Give an example of a verb.", "Run."),
    ("Is this correct?", "Yes, this is correct."), ("What did they buy?", "They bought fresh bread and milk."),
    ("Write a short line about the sea.", "The sea is wide and grey under the rain."),
    ("What is the opposite of hot?", "Cold."), ("Hi.", "Hi there."), ("Yes or no?", "Yes."), ("Is it late?", "No."),
    ("Red or blue?", "Blue."), ("One word for big.", "Large."), ("Count to three.", "One, two, three."),
    ("Name a day.", "Monday."), ("Thanks!", "You are welcome."), ("Who is Bob?", "My friend."), ("Is it true?", "It is."),
)


def solve(a: int, b: int, digits: int) -> str:
    """The scratchpad solution of ``a + b`` (both ``digits`` digits long)."""
    steps, carry = [], 0
    for position in range(digits):
        da, db = (a // 10**position) % 10, (b // 10**position) % 10
        total = da + db + carry
        lhs = f"{da}+{db}" if position == 0 else f"{da}+{db}+{carry}"
        carry = total // 10
        steps.append(f"{lhs}={total} carry {carry}.")
    return " ".join(steps) + f" Answer: {a + b}"


def scratchpad_steps(text: str) -> list[str]:
    """The steps written before the first ``Answer:``, one string per full stop, stripped::

        "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85" -> ["7+8=15 carry 1.", "4+3+1=8 carry 0."]

    A malformed step stays one step, so the steps after it keep their numbers."""
    body = text.split("Answer:", 1)[0]
    return [step.strip() for step in _STEP_TEXT.findall(body) if step.strip() != "."]


def extract_answer(completion: str) -> int | None:
    """The integer after the last ``Answer:``, or None if there is none."""
    found = _ANSWER.findall(completion)
    return int(found[-1]) if found else None


class ArithmeticTask:
    """Two-operand addition with a scratchpad, seeded and with disjoint train/test splits.

    Args:
        digits: digits per operand (2 gives 8,100 distinct problems; from 3 digits on, a seeded
            pool of 200,000 distinct problems is drawn).
        test_size: problems held out for the test split.
        seed: fixes which problems are held out and the order of both splits.
        teacher_fraction: share of training rows whose prompt is a teacher's prompt (a correct
            solution or feedback in context), so SFT teaches the model to use that context.
        masked_fraction: share of the solution-in-context rows (and, with ``feedback_style:
            prefix``, of the feedback rows) whose question asks about other, random numbers: the
            answer can only be read from the context.
        check_steps: the verifier also checks every scratchpad step, not only the final answer.
        feedback_style: ``step`` names the first wrong step and what it should be; ``prefix``
            quotes the right solution up to and including it (:meth:`feedback`).
    """

    name = "arithmetic"

    def __init__(
        self, digits: int = 2, test_size: int = 300, seed: int = 0, teacher_fraction: float = 0.0,
        masked_fraction: float = 0.0, check_steps: bool = False, feedback_style: str = "step",
    ):
        if not 1 <= digits <= 6:
            raise ConfigError(f"arithmetic task: digits must be in [1, 6], got {digits}")
        low, high = 10 ** (digits - 1), 10**digits - 1
        space = (high - low + 1) ** 2
        pool = min(space, POOL_SIZE)
        if not 0 < test_size < pool:
            raise ConfigError(f"arithmetic task: test_size must be in [1, {pool - 1}], got {test_size}")
        for key, value in (("teacher_fraction", teacher_fraction), ("masked_fraction", masked_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"arithmetic task: {key} must be in [0, 1], got {value}")
        self.digits, self.test_size, self.seed, self.teacher_fraction = digits, test_size, seed, teacher_fraction
        if feedback_style not in FEEDBACK_STYLES:
            raise ConfigError(f"arithmetic task: feedback_style must be one of {', '.join(FEEDBACK_STYLES)}, got '{feedback_style}'")
        self.masked_fraction, self.check_steps, self.feedback_style = masked_fraction, check_steps, feedback_style
        self._low, self._high, self._space, self._pool = low, high, space, pool

    def _pairs(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        rng = random.Random(self.seed)
        width = self._high - self._low + 1
        order = rng.sample(range(self._space), self._pool)  # distinct problems, seeded order
        pairs = [(self._low + i // width, self._low + i % width) for i in order]
        return pairs[self.test_size :], pairs[: self.test_size]

    def make_dataset(self, split: str, n: int | None = None) -> list[dict]:
        """Rows of ``split``: ``train`` and ``test`` give prompt/completion/answer rows;
        ``documents`` gives the train problems as plain text (:meth:`as_documents`)."""
        train, test = self._pairs()
        if split not in ("train", "test", "documents"):
            raise ConfigError(f"arithmetic task: split must be 'train', 'test' or 'documents', got '{split}'")
        pairs = test if split == "test" else train
        if n is not None:
            pairs = pairs[:n]
        rows = [self._row(a, b) for a, b in pairs]
        if split == "documents":
            return self.as_documents(rows)
        if split == "train" and self.teacher_fraction:
            rng = random.Random(self.seed + 2)
            for row in rows:
                if rng.random() >= self.teacher_fraction:
                    continue
                if rng.random() < 0.5:
                    masked = rng.random() < self.masked_fraction
                    row["prompt"] = self.hinted_prompt({**row, "prompt": self.masked_question(rng)} if masked else row)
                elif self.feedback_style == "prefix" and rng.random() < self.masked_fraction:
                    row["prompt"] = self.feedback_prompt(row, rng, masked=True)
                else:
                    row["prompt"] = self.feedback_prompt(row, rng)
        return rows

    def as_documents(self, rows: list[dict]) -> list[dict]:
        """``rows`` as pages of plain text, the last problem on each page to be continued (seeded)::

            {"prompt": "Context: Who is Bob?\\nTarget: My friend.\\nSTOP\\n\\nContext: What is 32 + 83?\\nTarget:",
             "completion": " 2+3=5 carry 0. 3+8+0=11 carry 1. Answer: 115"}

        the kind of text a base model read in pretraining. A page holds 0-2 earlier examples (a
        short exchange from :data:`OTHER_EXCHANGES`, or a quarter of the time another worked sum
        from ``rows``) before its problem, all in one framing: no labels, a conventional pair
        (:data:`CONVENTIONAL_LABELS`), or two words from :data:`LABEL_WORDS` or made up; the
        earlier examples may end with a terminator line. Trained with ``prompt_completion_format: plain``
        (loss on the completion only) they make the tiny model a stand-in base model that solves
        the sums in framings it knows and reads a few-shot prompt in one it never saw
        (Instruction/Response/END): earlier pages of one problem each taught it the sums but
        never to read a prompt with examples (docs/benchmarks.md)."""
        rng = random.Random(self.seed + 3)
        documents = []
        for row in rows:
            question_label, answer_label = self._page_labels(rng)
            terminator = rng.choice(PAGE_TERMINATORS)

            def framed(question: str) -> str:
                return f"{question_label}: {question}\n{answer_label}:" if question_label else question

            earlier = []
            for _ in range(rng.choice(EARLIER_EXAMPLE_COUNTS)):
                other = rng.choice(rows)
                question, answer = rng.choice(OTHER_EXCHANGES) if rng.random() < 0.75 else (other["prompt"], other["completion"])
                earlier.append(f"{framed(question)} {answer}" + (f"\n{terminator}" if terminator else ""))
            # the page ends after the answer (EOS follows), so the model learns to stop there
            documents.append({"prompt": "\n\n".join([*earlier, framed(row["prompt"])]), "completion": " " + row["completion"]})
        return documents

    @staticmethod
    def _page_labels(rng: random.Random) -> tuple[str, str]:
        """A page's (question label, answer label): none 15%, conventional 30%, else two words."""
        draw = rng.random()
        if draw < 0.15:
            return "", ""
        if draw < 0.45:
            return rng.choice(CONVENTIONAL_LABELS)

        def word() -> str:
            if rng.random() < 0.7:
                return rng.choice(LABEL_WORDS)
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 4))).capitalize()

        return word(), word()

    def _row(self, a: int, b: int) -> dict:
        return {
            "prompt": f"What is {a} + {b}?",
            "completion": solve(a, b, self.digits),
            "answer": a + b,
            "a": a,
            "b": b,
        }

    def make_pairs(self, split: str, n: int | None = None) -> list[dict]:
        """Pairs whose ``rejected`` is the reference solution with one typical mistake (a dropped
        carry, an off-by-one column sum, or a final answer that disagrees with the steps); the
        verifier confirms chosen is right and rejected is wrong."""
        rng = random.Random(self.seed + 1)
        pairs = []
        for row in self.make_dataset(split, n):
            rejected = self.mistake(row["a"], row["b"], rng)
            pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected, "answer": row["answer"]})
        return pairs

    def mistake(self, a: int, b: int, rng: random.Random, late: bool = False) -> str:
        """A wrong scratchpad for ``a + b`` with one plausible error, propagated to the answer;
        ``late``: an error in the last column's sum or the final answer only, so that everything
        the answer needs stands before it."""
        kind = rng.choice(["column sum", "final answer"] if late else ["dropped carry", "column sum", "final answer"])
        steps, carry, digits = [], 0, []
        column = self.digits - 1 if late else rng.randrange(self.digits)
        for position in range(self.digits):
            da, db = (a // 10**position) % 10, (b // 10**position) % 10
            carry_in = 0 if kind == "dropped carry" and position == column + 1 else carry
            total = da + db + carry_in
            if kind == "column sum" and position == column:
                total += rng.choice([-1, 1]) if total > 0 else 1
            lhs = f"{da}+{db}" if position == 0 else f"{da}+{db}+{carry_in}"
            carry = total // 10
            steps.append(f"{lhs}={total} carry {carry}.")
            digits.append(total % 10)
        answer = int(str(carry) + "".join(str(d) for d in reversed(digits))) if carry else int("".join(str(d) for d in reversed(digits)))
        if answer == a + b:  # e.g. no carry to drop: fall back to a wrong final answer
            answer = a + b + rng.choice([-10, -1, 1, 10])
        if kind == "final answer":
            answer = a + b + rng.choice([-10, -1, 1, 10])
        return " ".join(steps) + f" Answer: {answer}"

    def masked_question(self, rng: random.Random) -> str:
        """A question with other, random numbers: beside the row's solution, the answer can only be
        read from the context (a visible marker such as ``??`` would let the model copy only then)."""
        a, b = rng.randint(self._low, self._high), rng.randint(self._low, self._high)
        return f"What is {a} + {b}?"

    def hinted_prompt(self, row: dict) -> str:
        """The prompt as SDPO's teacher sees it with a correct solution in context."""
        return reprompt_text(row["prompt"], solve(row["a"], row["b"], self.digits), None, RepromptSettings())

    def feedback_prompt(self, row: dict, rng: random.Random, masked: bool = False) -> str:
        """The prompt as SDPO's teacher sees it with the feedback on a typical mistake.

        ``masked`` (``feedback_style: prefix`` only): the question asks about other numbers and the
        mistake is a late one, so the quoted solution holds every step and the answer can only be
        read from the feedback, as a masked solution row teaches reading a solution."""
        wrong = self.mistake(row["a"], row["b"], rng, late=masked)
        feedback = self.feedback(row["a"], row["b"], wrong, extract_answer(wrong))
        return reprompt_text(self.masked_question(rng) if masked else row["prompt"], None, feedback, RepromptSettings())

    def score(self, prompt: str, completion: str, /, **row) -> tuple[float, str | None]:
        if "a" in row and "b" in row:
            a, b = int(row["a"]), int(row["b"])
        else:
            match = _PROBLEM.search(prompt)
            if match is None:
                raise ValueError(f"arithmetic task cannot parse the problem in prompt {prompt!r}")
            a, b = int(match.group(1)), int(match.group(2))
        answer, solution = extract_answer(completion), solve(a, b, self.digits)
        steps_right = not self.check_steps or scratchpad_steps(completion) == scratchpad_steps(solution)
        if answer == a + b and steps_right:
            return 1.0, None
        # the first character where it leaves the solution (one that stops inside it errs where it stops)
        error_at = first_divergence(completion, solution)
        return 0.0, Feedback(self.feedback(a, b, completion, answer), len(completion) if error_at is None else error_at)

    def feedback(self, a: int, b: int, completion: str, answer: int | None) -> str:
        """Say what is wrong and what is right: the first wrong, missing or extra scratchpad step
        and what it should be, else the missing or wrong final answer and the right one; with
        ``feedback_style: prefix``, the right solution up to and including that first error."""
        solution = solve(a, b, self.digits)
        reference, written = scratchpad_steps(solution), scratchpad_steps(completion)
        for position, want in enumerate(reference):
            if position >= len(written) or written[position] != want:
                if self.feedback_style == "prefix":
                    return f"Your attempt goes wrong at step {position + 1}. It should begin: {' '.join(reference[: position + 1])}"
                if position >= len(written):
                    return f"Step {position + 1} is missing. Step {position + 1} should be: {want}"
                return f"Step {position + 1} should be: {want} You wrote: {written[position]}"
        if self.feedback_style == "prefix":  # the steps are right: the error is in what follows them
            return f"Your steps are right; what follows them goes wrong. It should begin: {solution}"
        if len(written) > len(reference):
            return f"There are {len(reference)} steps, then the answer. You wrote more: {written[len(reference)]}"
        if answer is None:
            return f"No final answer. It should end with: Answer: {a + b}"
        return f"The steps are right, so the answer is {a + b}, not {answer}."
