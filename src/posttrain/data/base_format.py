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
    """`` Y\\nEND`` — the continuation, ending at the stop marker."""
    return f" {response}\n{END}"


def base_format(instruction: str, response: str) -> str:
    """The whole example: ``Instruction: X\\nResponse: Y\\nEND``."""
    return base_prompt(instruction) + base_response(response)
