"""Several datasets in one training set: the ``dataset_mixture`` config key and its weights.

A mixture is a list of ``{name, split, weight}`` entries (and, for a hub dataset, its subset
``config`` and ``data_files``); ``name`` is anything ``dataset_name``
accepts (a ``.jsonl`` file, ``task:<name>``, a hub dataset id) and ``split`` is sliced as usual.
The weight multiplies a source's rows: a source with N rows (after its slice) gives
``round(weight × N)`` of them, so 1 takes every row once, 0.5 a random half, 2 every row twice
and 2.5 every row twice plus a random half. The random part is drawn with the job's ``seed``, in
a stream of its own per source: the same config always trains on the same rows, and changing
one source's weight leaves the rows drawn from the others as they were. The sources' rows are
then concatenated in the mixture's order (the trainers shuffle them).

The config is checked when it loads, before any data is read: a malformed entry is a
:class:`ConfigError` naming the entry and its field.
"""

from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass, fields
from typing import TypeVar

from posttrain.data.sources import check_columns, split_slice
from posttrain.errors import ConfigError, DataError

T = TypeVar("T")

MIXTURE_HELP = (
    "Instead of dataset_name: several datasets mixed, a list of {name, split, weight} (split default train, "
    "weight default 1). A source of N rows gives round(weight × N): 1 every row once, 0.5 a seeded random half, "
    "2 every row twice. An entry may name a hub subset (config), data_files and its columns (as dataset_columns)."
)


@dataclass(frozen=True)
class MixtureSource:
    """One entry of a ``dataset_mixture``."""

    name: str
    split: str = "train"
    weight: float = 1.0
    config: str | None = None  # a hub dataset's subset (dataset_config)
    data_files: str | list | dict | None = None
    columns: dict | None = None  # the dataset's column names (dataset_columns)


_FIELDS = [f.name for f in fields(MixtureSource)]


def check_dataset_keys(dataset_name: str, split: str, mixture: list, default: str = "") -> str:
    """The ``dataset_name`` a job reads: as given, or ``default`` when neither it nor a mixture is
    set (so a mixture can replace a command's default dataset). Naming both, a split beside a
    mixture (each entry has its own), a split that does not parse or a malformed entry is a
    ConfigError."""
    if mixture and dataset_name:
        raise ConfigError("config keys 'dataset_name' and 'dataset_mixture' exclude each other: set one of them")
    if mixture and split != "train":
        raise ConfigError("config key 'dataset_train_split' does not apply to a 'dataset_mixture': give each entry its split")
    try:
        split_slice(split)
    except DataError as err:
        raise ConfigError(f"config key 'dataset_train_split': {err}") from None
    mixture_sources(mixture)
    return dataset_name or ("" if mixture else default)


def mixture_sources(mixture: list) -> list[MixtureSource]:
    """The entries of a ``dataset_mixture`` value, checked: a ConfigError names the entry and field."""
    sources = []
    for index, entry in enumerate(mixture):
        key = f"dataset_mixture[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"config key '{key}': expected a mapping with {', '.join(_FIELDS)}, got {entry!r}")
        for field in entry:
            if field not in _FIELDS:
                close = difflib.get_close_matches(str(field), _FIELDS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (fields: {', '.join(_FIELDS)})"
                raise ConfigError(f"config key '{key}': unknown field '{field}'{hint}")
        name, split, weight = entry.get("name"), entry.get("split", "train"), entry.get("weight", 1.0)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"config key '{key}.name': expected a .jsonl file, task:<name> or a hub dataset id, got {name!r}")
        if not isinstance(split, str):
            raise ConfigError(f"config key '{key}.split': expected a split such as train or train[:1000], got {split!r}")
        try:
            split_slice(split)
        except DataError as err:
            raise ConfigError(f"config key '{key}.split': {err}") from None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(f"config key '{key}.weight' must be a number > 0, got {weight!r}")
        config, data_files = entry.get("config"), entry.get("data_files")
        if config is not None and not isinstance(config, str):
            raise ConfigError(f"config key '{key}.config': expected a hub dataset's subset name, got {config!r}")
        if data_files is not None and not isinstance(data_files, (str, list, dict)):
            raise ConfigError(f"config key '{key}.data_files': expected a path, a list or a mapping, got {data_files!r}")
        columns = check_columns(entry.get("columns"), f"{key}.columns") or None
        sources.append(MixtureSource(name, split, float(weight), config, data_files, columns))
    return sources


def weigh_rows(rows: list[T], weight: float, seed: int, index: int) -> list[T]:
    """``round(weight × len(rows))`` of ``rows`` (see the module docstring): every row
    ``⌊weight⌋`` times, then a draw without replacement, kept in row order, for the rest. The
    draw is seeded by ``seed`` and the source's ``index`` in the mixture."""
    count = round(weight * len(rows))
    repeats, rest = divmod(count, len(rows))
    drawn = sorted(random.Random(f"{seed}:{index}").sample(range(len(rows)), rest))
    return rows * repeats + [rows[i] for i in drawn]
