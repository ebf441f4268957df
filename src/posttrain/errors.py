"""User-facing errors.

Anything a user can fix (a bad config key, a malformed JSONL line, a missing model directory)
raises a :class:`PosttrainError`. The CLI prints its message on one line and exits with status 2;
every other exception is a bug and keeps its traceback.
"""


class PosttrainError(Exception):
    """An error caused by the user's input, with a message that says where and what."""


class ConfigError(PosttrainError):
    """A config file or override is invalid (unknown key, wrong type, value out of range)."""


class DataError(PosttrainError):
    """A data file is invalid; the message names the file, the line and the field."""
