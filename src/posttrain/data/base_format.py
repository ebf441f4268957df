"""The base-model text format, in one place: ``Instruction: X\\nResponse: Y\\nEND``.

A base model (never chat-tuned) is trained and prompted with plain text in this shape: SFT masks
everything through ``Response:``, generation stops at ``END``, preference pairs and few-shot
prompts are built from the same pieces. Everything that writes or reads the format uses these.
"""

RESPONSE_MARKER = "Response:"
END = "END"


def base_prompt(instruction: str) -> str:
    """``Instruction: X\\nResponse:`` — what the model continues."""
    return f"Instruction: {instruction}\n{RESPONSE_MARKER}"


def base_response(response: str) -> str:
    """`` Y\\nEND`` — the continuation, ending at the stop marker. ``Y`` is stripped: a sampled
    continuation of ``Response:`` carries the format's own space before it and newline after it,
    and SFT, DPO and few-shot examples must all put exactly one of each around the same text."""
    return f" {response.strip()}\n{END}"


def base_format(instruction: str, response: str) -> str:
    """The whole example: ``Instruction: X\\nResponse: Y\\nEND``."""
    return base_prompt(instruction) + base_response(response)
