"""Hub splits sliced from the top (``train[:N]``) are streamed and only N rows read; every other
slice, local files and offline runs keep the whole-split path. ``datasets.load_dataset`` is a fake
here: nothing reaches the network."""

from __future__ import annotations

import datasets
import pytest

from posttrain.data.jsonl import write_jsonl
from posttrain.errors import ConfigError, DataError
from posttrain.tasks.sources import load_rows


class FakeHub:
    """Stands in for ``datasets.load_dataset``: records its calls, and what a stream yielded."""

    def __init__(self, rows: int = 1000, fail_while_streaming: bool = False):
        self.rows, self.fail = rows, fail_while_streaming
        self.calls: list[dict] = []
        self.taken: list[int] = []
        self.yielded = 0

    def __call__(self, name, split, **kwargs):
        self.calls.append({"name": name, "split": split, **kwargs})
        return self if kwargs.get("streaming") else [{"i": i} for i in range(self.rows)]

    def take(self, n):
        self.taken.append(n)
        return self._stream(n)

    def _stream(self, n):
        for i in range(min(n, self.rows)):
            if self.fail:
                raise ConnectionError("stream interrupted")
            self.yielded += 1
            yield {"i": i}


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    return fake


def test_a_top_slice_streams_only_its_rows(hub):
    rows = load_rows("org/big", "train[:5]")
    assert hub.calls == [{"name": "org/big", "split": "train", "streaming": True}]
    assert hub.taken == [5] and hub.yielded == 5
    assert rows == [(f"org/big[{i}]", {"i": i}) for i in range(5)]


def test_a_slice_from_an_offset_streams_up_to_its_end(hub):
    rows = load_rows("org/big", "test[3:6]")
    assert hub.calls[0]["split"] == "test" and hub.taken == [6]
    assert rows == [(f"org/big[{i}]", {"i": i}) for i in (3, 4, 5)]


@pytest.mark.parametrize("split, first, count", [("train", 0, 1000), ("train[:1%]", 0, 10), ("train[-5:]", 995, 5),
                                                 ("train[990:]", 990, 10)])
def test_slices_that_need_the_split_length_read_the_whole_split(hub, split, first, count):
    rows = load_rows("org/big", split)
    assert hub.calls == [{"name": "org/big", "split": "train"}] and not hub.taken
    assert rows[0] == (f"org/big[{first}]", {"i": first}) and len(rows) == count


def test_offline_the_cached_split_is_read_whole(hub, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert len(load_rows("org/big", "train[:5]")) == 5
    assert hub.calls == [{"name": "org/big", "split": "train"}]


def test_local_files_never_reach_the_hub(hub, tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [{"i": i} for i in range(4)])
    assert [row["i"] for _, row in load_rows(str(path), "train[:2]")] == [0, 1]
    assert not hub.calls


def test_an_empty_streamed_slice_is_a_data_error(hub):
    with pytest.raises(DataError, match=r"org/big: split 'train\[4:4\]' selects no rows"):
        load_rows("org/big", "train[4:4]")


def test_a_split_that_cannot_stream_is_loaded_whole_with_a_warning(monkeypatch, caplog):
    fake = FakeHub(fail_while_streaming=True)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    assert load_rows("org/big", "train[:5]") == [(f"org/big[{i}]", {"i": i}) for i in range(5)]
    assert fake.calls[-1] == {"name": "org/big", "split": "train"}  # the whole split, after the stream failed
    assert "cannot stream split train (stream interrupted)" in caplog.text


def test_a_split_that_cannot_be_loaded_at_all_is_a_data_error(monkeypatch):
    def unreachable(name, split, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError, match="cannot load dataset org/big split train: no route to host"):
        load_rows("org/big", "train[:5]")


def test_a_hub_subset_and_data_files_reach_load_dataset(monkeypatch, tmp_path):
    """openai/gsm8k needs its subset: dataset_config (and data_files) go to load_dataset, from
    every training job's config, a dataset_mixture entry and rollout's config."""
    from posttrain.commands.rollout import RolloutConfig
    from posttrain.commands.sft import SFTJobConfig
    from posttrain.config import load_config
    from posttrain.tasks.sources import load_mixture, load_train_rows

    calls = []

    def fake(path, name=None, split=None, **kwargs):
        calls.append({"path": path, "name": name, "split": split, **kwargs})
        return [{"question": "q", "answer": "#### 1"}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # the whole-split path: nothing is streamed
    config = load_config(SFTJobConfig, values={"model_name_or_path": str(tmp_path), "dataset_name": "openai/gsm8k",
                                               "dataset_config": "main", "data_files": {"train": "main/train-*.parquet"}})
    assert load_train_rows(config) == [("openai/gsm8k (main)[0]", {"question": "q", "answer": "#### 1"})]
    assert calls[-1] == {"path": "openai/gsm8k", "name": "main", "split": "train", "data_files": {"train": "main/train-*.parquet"}}
    load_mixture([{"name": "openai/gsm8k", "config": "socratic", "split": "test"}], seed=0)
    assert calls[-1] == {"path": "openai/gsm8k", "name": "socratic", "split": "test"}
    rollout = load_config(RolloutConfig, values={"model_name_or_path": str(tmp_path), "dataset_name": "openai/gsm8k",
                                                 "dataset_config": "main", "output_dir": str(tmp_path / "r")})
    assert (rollout.dataset_config, rollout.data_files) == ("main", None)
    with pytest.raises(ConfigError, match=r"dataset_mixture\[0\].config': expected a hub dataset's subset name"):
        load_mixture([{"name": "openai/gsm8k", "config": 3}], seed=0)
