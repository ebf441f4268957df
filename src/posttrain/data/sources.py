"""Rows of a local JSONL file or a Hugging Face Hub dataset, and the slice a split selects.

Every row is paired with a *location* ("data.jsonl:12", "hub:org/name[7]") so later validation
errors can point at it. Built-in tasks (``task:<name>``) are a source too; they are resolved
beside the tasks, in :func:`posttrain.tasks.sources.load_rows`, the one entry point that reads
any source.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from posttrain.data.jsonl import iter_jsonl
from posttrain.config import config_field
from posttrain.errors import ConfigError, DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)

_SLICE = re.compile(r"^(?P<name>\w+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def split_slice(split: str) -> tuple[str, slice]:
    """``"train[:1%]"`` -> ``("train", slice)`` resolved later against the row count."""
    match = _SLICE.match(split.strip())
    if match is None:
        raise DataError(f"cannot read split '{split}' (expected e.g. train, train[:100], train[10%:20%])")
    return match["name"], slice(match["start"], match["stop"])


def _resolve(bound: str | None, total: int) -> int | None:
    if bound is None:
        return None
    if bound.endswith("%"):
        return round(total * int(bound[:-1]) / 100)
    return int(bound)


def read_rows(
    dataset_name: str, split: str, dataset_config: str | None = None, data_files: str | list[str] | dict | None = None
) -> list[tuple[str, dict]]:
    """The rows of ``dataset_name`` that ``split`` (``train[:1%]``) selects, as ``(location, row)``
    pairs: a local ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file (one file is one split: the
    split name only carries the slice), a ``save_to_disk`` directory (a saved DatasetDict's split is
    the split name), or a hub dataset id (its split loaded with ``datasets.load_dataset``). A hub split sliced from the
    top by row counts (``train[:1000]``, ``train[100:200]``) is streamed, and only the rows up to
    the slice's end are read rather than the whole split downloaded (a dataset that cannot be
    streamed is loaded whole); offline, where nothing can be streamed, the split comes from the
    local cache as before. ``dataset_config`` names a hub dataset's subset (``openai/gsm8k``:
    ``main``) and ``data_files`` its files, as ``datasets.load_dataset`` takes them."""
    name, part = split_slice(split)
    if Path(dataset_name).is_dir():
        return slice_rows(_saved_rows(dataset_name, name), dataset_name, split)
    if dataset_name.endswith(tuple(LOCAL_FORMATS)):
        return slice_rows(_local_file_rows(dataset_name), dataset_name, split)
    if dataset_name.endswith(".jsonl") or Path(dataset_name).exists():
        located = [(f"{dataset_name}:{number}", row) for number, row in iter_jsonl(dataset_name)]
        return slice_rows(located, dataset_name, split)
    import datasets

    hub = HubSource(dataset_name, dataset_config or None, data_files or None)
    head = _head_stop(part)
    if head is None or datasets.config.HF_HUB_OFFLINE:
        located = _hub_rows(hub, name, stop=None)
        return slice_rows(located, dataset_name, split)
    located = _hub_rows(hub, name, stop=head)[_resolve(part.start, head) :]
    if not located:
        raise DataError(f"{dataset_name}: split '{split}' selects no rows")
    return located


LOCAL_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json"}  # suffix -> how it is read


def _local_file_rows(path: str) -> list[tuple[str, dict]]:
    """The rows of a local ``.parquet``, ``.csv`` or ``.json`` file (a JSON array, or JSON lines).
    A CSV row is located by its line and keeps every cell as text (``"2"`` stays the string an
    answer needs); parquet and JSON are read with ``datasets``, row N (from 1) as ``path:N``."""
    if not Path(path).exists():
        raise DataError(f"{path}: no such file")
    builder = next(b for suffix, b in LOCAL_FORMATS.items() if path.endswith(suffix))
    if builder == "csv":
        import csv

        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            located, start = [], 2  # the line a row starts on: a quoted cell may hold newlines
            for row in reader:
                located.append((f"{path}:{start}", dict(row)))
                start = reader.line_num + 1
            return located
    from datasets import load_dataset

    try:
        rows = load_dataset(builder, data_files=path, split="train")
    except Exception as err:  # pyarrow and datasets raise many types; all mean "cannot read this file"
        raise DataError(f"{path}: cannot read it as {builder} ({str(err).splitlines()[0]})") from None
    return [(f"{path}:{number}", dict(row)) for number, row in enumerate(rows, start=1)]


def _saved_rows(path: str, split_name: str) -> list[tuple[str, dict]]:
    """The rows of a ``Dataset.save_to_disk`` directory, or of the named split of a saved ``DatasetDict``."""
    from datasets import DatasetDict, load_from_disk

    try:
        saved = load_from_disk(path)
    except FileNotFoundError:
        raise DataError(f"{path} is a directory but not a dataset saved with save_to_disk") from None
    if isinstance(saved, DatasetDict):
        if split_name not in saved:
            raise DataError(f"{path}: no split '{split_name}' (it has {', '.join(saved)})")
        saved = saved[split_name]
    return [(f"{path}[{index}]", dict(row)) for index, row in enumerate(saved)]


def _head_stop(part: slice) -> int | None:
    """The row count a slice reads from the top of its split (``[:1000]``, ``[100:200]``), or
    None when it needs the split's length first (percentages, negative or open-ended bounds)."""
    bounds = [b for b in (part.start, part.stop) if b is not None]
    if part.stop is None or any(b.startswith("-") or b.endswith("%") for b in bounds):
        return None
    return int(part.stop)


@dataclass(frozen=True)
class HubSource:
    """A hub dataset as ``datasets.load_dataset`` names it: id, subset (config) and files."""

    name: str
    config: str | None = None
    data_files: str | list[str] | dict | None = None

    def load(self, split: str, streaming: bool = False):
        from datasets import load_dataset

        chosen = {"name": self.config, "data_files": self.data_files, "streaming": streaming or None}
        return load_dataset(self.name, split=split, **{key: value for key, value in chosen.items() if value is not None})


def _hub_rows(hub: HubSource, split_name: str, stop: int | None) -> list[tuple[str, dict]]:
    """Every row of a hub split, or (``stop``) only its first ``stop`` rows, streamed; a dataset
    that cannot be streamed (some script or archive formats) is loaded whole, with a warning."""
    dataset_name = hub.name + (f" ({hub.config})" if hub.config else "")

    def located(rows) -> list[tuple[str, dict]]:
        return [(f"{dataset_name}[{i}]", dict(row)) for i, row in enumerate(rows)]

    try:
        if stop is not None:
            try:
                return located(hub.load(split_name, streaming=True).take(stop))
            except Exception as err:  # datasets raises many types while streaming
                log.warning(f"{dataset_name}: cannot stream split {split_name} ({str(err).splitlines()[0]}); "
                            f"loading it whole for its first {stop} rows")
        rows = hub.load(split_name)
        return located(rows if stop is None else itertools.islice(rows, stop))
    except Exception as err:  # datasets raises many types; all mean "cannot load this"
        raise DataError(f"cannot load dataset {dataset_name} split {split_name}: {str(err).splitlines()[0]}") from None


def slice_rows(located: list[tuple[str, dict]], dataset_name: str, split: str) -> list[tuple[str, dict]]:
    """The rows the slice of ``split`` (``train[:1%]``) selects; no rows, or none selected, is an error."""
    _, part = split_slice(split)
    total = len(located)
    if not total:
        raise DataError(f"{dataset_name} ({split}): no rows (the dataset is empty)")
    located = located[slice(_resolve(part.start, total), _resolve(part.stop, total))]
    if not located:
        raise DataError(f"{dataset_name}: split '{split}' selects none of its {total} rows")
    return located


COLUMNS_HELP = (
    "Column names of a dataset whose columns are named otherwise, as {posttrain field: dataset column}: e.g. "
    "{prompt: question, completion: answer} (openai/gsm8k), {reference: answer} for a reward or scorer."
)


@dataclass
class DatasetReadArguments:
    """How a command's ``dataset_name`` is read beyond its name and split (every training job and
    ``rollout``): a hub dataset's subset and files, and the dataset's own column names."""

    dataset_config: str = config_field(
        "", help="The subset (config) of a hub dataset_name, as TRL names it: e.g. main for openai/gsm8k."
    )
    data_files: str | list[str] | dict | None = config_field(
        None, help="Files of a hub or local dataset_name to read, as datasets.load_dataset takes them."
    )
    dataset_columns: dict = config_field({}, help=COLUMNS_HELP)

    def __post_init__(self):
        self.dataset_columns = check_columns(self.dataset_columns)
        later = getattr(super(), "__post_init__", None)  # the next config base's own checks, if it has any
        if later:
            later()


def check_columns(columns: dict | None, key: str = "dataset_columns") -> dict[str, str]:
    """A ``dataset_columns`` value, checked: a mapping of field names to distinct column names."""
    if not columns:
        return {}
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in columns.items()):
        raise ConfigError(f"config key '{key}': expected a mapping of field names to column names, e.g. "
                          f"{{prompt: question, completion: answer}}, got {columns!r}")
    repeated = sorted({v for v in columns.values() if list(columns.values()).count(v) > 1})
    if repeated:
        raise ConfigError(f"config key '{key}': column '{repeated[0]}' is mapped to more than one field")
    return dict(columns)


def rename_columns(located: list[tuple[str, dict]], columns: dict[str, str]) -> list[tuple[str, dict]]:
    """Each row with its mapped columns under posttrain's field names (``columns``: field -> the
    dataset's column); the other columns stay as they are. A row without a mapped column, or one
    that also has a column of the field's own name (which of the two is meant?), is a DataError
    naming the row, the column and the columns the row has."""
    if not columns:
        return located
    renamed = []
    for where, row in located:
        for field, column in columns.items():
            if column not in row:
                raise DataError(f"{where}: no column '{column}' (dataset_columns maps {field} to it); "
                                f"the row's columns are {', '.join(row) or 'none'}")
            if field in row and field not in columns.values():
                raise DataError(f"{where}: has both '{field}' and '{column}', which dataset_columns maps to {field}: "
                                f"rename or drop one of them")
        moved = {field: row[column] for field, column in columns.items()}
        renamed.append((where, {**{k: v for k, v in row.items() if k not in columns.values()}, **moved}))
    return renamed
