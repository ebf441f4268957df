"""Unit tests for posttrain.config: YAML + values + CLI overrides, coercion, checks, hashing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from posttrain.config import config_field, config_hash, describe_fields, load_config, parse_overrides
from posttrain.errors import ConfigError


@dataclass
class DemoConfig:
    """A small config exercising every supported field type and bound."""

    learning_rate: float = config_field(2e-4, help="Peak learning rate.", gt=0)
    epochs: int = config_field(1, help="Passes over the data.", ge=1)
    warmup_ratio: float = config_field(0.0, help="Warmup fraction.", ge=0, le=1)
    use_peft: bool = config_field(False, help="Train LoRA adapters.")
    name: str = config_field("run", help="Run name.")
    tags: list = config_field(["a"], help="Free-form tags.")
    options: dict = config_field({}, help="Extra options.")
    mode: Literal["fast", "slow"] = config_field("fast", help="Speed mode.")
    max_steps: Optional[int] = config_field(None, help="Stop after this many steps.", ge=1)
    seed: int | None = config_field(0, help="Seed.")


@dataclass
class WithPostInit:
    """A config whose __post_init__ raises ValueError for an invalid combination."""

    low: int = config_field(0, help="Lower end.")
    high: int = config_field(1, help="Upper end.")
    derived: int = field(default=0, init=False)

    def __post_init__(self):
        if self.low > self.high:
            raise ValueError("low must be <= high")
        self.derived = self.high - self.low


def _yaml(tmp_path, text: str, name: str = "cfg.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# load_config: sources and precedence


def test_defaults_when_no_sources():
    """With no file, values or overrides, every field keeps its declared default."""
    config = load_config(DemoConfig)
    assert config.learning_rate == 2e-4
    assert config.epochs == 1
    assert config.use_peft is False
    assert config.tags == ["a"]
    assert config.options == {}
    assert config.mode == "fast"
    assert config.max_steps is None


def test_list_and_dict_defaults_are_not_shared():
    """config_field copies mutable defaults, so two configs never share one list/dict."""
    first, second = load_config(DemoConfig), load_config(DemoConfig)
    first.tags.append("b")
    first.options["x"] = 1
    assert second.tags == ["a"]
    assert second.options == {}


def test_load_from_yaml_file(tmp_path):
    """Values in a YAML file are loaded and coerced to the field types."""
    path = _yaml(tmp_path, "learning_rate: 1e-4\nepochs: 3\nuse_peft: true\ntags: [x, y]\noptions: {k: 1}\n")
    config = load_config(DemoConfig, path=path)
    assert config.learning_rate == pytest.approx(1e-4)
    assert isinstance(config.learning_rate, float)
    assert config.epochs == 3
    assert config.use_peft is True
    assert config.tags == ["x", "y"]
    assert config.options == {"k": 1}


def test_load_from_values_mapping():
    """A values mapping (a pipeline stage's config:) sets fields."""
    config = load_config(DemoConfig, values={"epochs": 5, "name": "stage1"})
    assert config.epochs == 5
    assert config.name == "stage1"


def test_precedence_yaml_then_values_then_command_line(tmp_path):
    """YAML < values < command line: the later source wins per key, others are kept."""
    path = _yaml(tmp_path, "epochs: 2\nname: from_yaml\nwarmup_ratio: 0.5\n")
    config = load_config(
        DemoConfig,
        path=path,
        values={"epochs": 3, "name": "from_values"},
        overrides={"epochs": "4"},
    )
    assert config.epochs == 4  # command line beats values and YAML
    assert config.name == "from_values"  # values beat YAML
    assert config.warmup_ratio == 0.5  # only in YAML


def test_empty_yaml_file_gives_defaults(tmp_path):
    """An empty YAML file is an empty mapping, not an error."""
    config = load_config(DemoConfig, path=_yaml(tmp_path, ""))
    assert config == DemoConfig()


# ---------------------------------------------------------------------------------------------
# parse_overrides


def test_parse_overrides_space_and_equals_forms():
    """`--k v` and `--k=v` both give string values."""
    assert parse_overrides(["--lr", "1e-4", "--x=3"]) == {"lr": "1e-4", "x": "3"}


def test_parse_overrides_bare_flag_is_true():
    """A flag followed by another flag or by nothing is True."""
    assert parse_overrides(["--use_peft", "--lr", "1", "--last"]) == {"use_peft": True, "lr": "1", "last": True}


def test_parse_overrides_dashes_become_underscores():
    """`--learning-rate` is the key learning_rate (both forms)."""
    assert parse_overrides(["--learning-rate", "0.1", "--max-steps=5"]) == {"learning_rate": "0.1", "max_steps": "5"}


def test_parse_overrides_equals_keeps_value_with_equals_and_empty():
    """Only the first '=' splits; `--k=` gives an empty string, not True."""
    assert parse_overrides(["--expr=a=b", "--empty="]) == {"expr": "a=b", "empty": ""}


def test_parse_overrides_negative_number_value():
    """A value starting with a single dash (a negative number) is a value, not a flag."""
    assert parse_overrides(["--offset", "-3"]) == {"offset": "-3"}


def test_parse_overrides_empty():
    """No arguments give no overrides."""
    assert parse_overrides([]) == {}


@pytest.mark.parametrize("argv", [["stray"], ["--a", "1", "2"], ["--"], ["-x", "1"]])
def test_parse_overrides_stray_positional_is_error(argv):
    """A token that is not `--key` (and not a flag's value) raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_overrides(argv)


def test_parse_overrides_error_names_the_token():
    """The error quotes the offending token."""
    with pytest.raises(ConfigError, match="'stray'"):
        parse_overrides(["--a", "1", "stray"])


def test_parse_overrides_feed_load_config():
    """parse_overrides output goes straight into load_config and is converted by field type."""
    config = load_config(DemoConfig, overrides=parse_overrides(["--epochs", "7", "--use-peft", "--mode=slow"]))
    assert (config.epochs, config.use_peft, config.mode) == (7, True, "slow")


# ---------------------------------------------------------------------------------------------
# type coercion


@pytest.mark.parametrize("raw, expected", [("1e-4", 1e-4), ("0.5", 0.5), ("3", 3.0)])
def test_float_from_string(raw, expected):
    """A string such as YAML's "1e-4" converts into a float field."""
    config = load_config(DemoConfig, values={"learning_rate": raw})
    assert isinstance(config.learning_rate, float)
    assert config.learning_rate == pytest.approx(expected)


def test_float_from_int():
    """An int is accepted for a float field and becomes a float."""
    config = load_config(DemoConfig, values={"learning_rate": 1})
    assert config.learning_rate == 1.0
    assert isinstance(config.learning_rate, float)


def test_float_yaml_scientific_notation_without_dot(tmp_path):
    """YAML 1.1 reads `5e-5` as a string; it still lands as a float."""
    config = load_config(DemoConfig, path=_yaml(tmp_path, "learning_rate: 5e-5\n"))
    assert config.learning_rate == pytest.approx(5e-5)


@pytest.mark.parametrize("raw", ["abc", True, [1.0]])
def test_float_rejects_non_numbers(raw):
    """Non-numeric strings, bools and lists are rejected for a float field."""
    with pytest.raises(ConfigError, match="'learning_rate'.*expected float"):
        load_config(DemoConfig, values={"learning_rate": raw})


@pytest.mark.parametrize("raw, expected", [("true", True), ("True", True), ("1", True), ("yes", True),
                                           ("false", False), ("0", False), ("no", False), ("FALSE", False)])
def test_bool_from_string(raw, expected):
    """Command-line strings true/1/yes and false/0/no convert into a bool field."""
    config = load_config(DemoConfig, overrides={"use_peft": raw})
    assert config.use_peft is expected


def test_bool_rejects_other_strings():
    """An unrecognised string for a bool field is an error naming key and value."""
    with pytest.raises(ConfigError, match="'use_peft' in command line: expected bool, got 'maybe'"):
        load_config(DemoConfig, overrides={"use_peft": "maybe"})


@pytest.mark.parametrize("raw", [True, False])
def test_int_rejects_bool(raw):
    """A bool is not accepted for an int field (even though bool subclasses int)."""
    with pytest.raises(ConfigError, match="'epochs'.*expected int"):
        load_config(DemoConfig, values={"epochs": raw})


@pytest.mark.parametrize("raw", ["2.5", "x", 2.5])
def test_int_rejects_non_integers(raw):
    """Floats and non-integer strings are rejected for an int field."""
    with pytest.raises(ConfigError, match="expected int"):
        load_config(DemoConfig, values={"epochs": raw})


def test_int_from_string():
    """A numeric string converts into an int field."""
    assert load_config(DemoConfig, overrides={"epochs": "12"}).epochs == 12


def test_str_from_number_in_yaml_but_not_bool(tmp_path):
    """A YAML number for a str field becomes its string; a bool does not."""
    assert load_config(DemoConfig, values={"name": 3}).name == "3"
    assert load_config(DemoConfig, values={"name": 1.5}).name == "1.5"
    with pytest.raises(ConfigError, match="'name'.*expected str"):
        load_config(DemoConfig, values={"name": True})


def test_bare_flag_on_str_field_is_error():
    """`--name` with no value (True) cannot fill a str field."""
    with pytest.raises(ConfigError, match="'name' in command line: expected str"):
        load_config(DemoConfig, overrides={"name": True})


def test_list_from_command_line_comma_and_yaml_forms():
    """On the command line a list is `a,b` or a YAML flow list `[1, 2]`."""
    assert load_config(DemoConfig, overrides={"tags": "x,y"}).tags == ["x", "y"]
    assert load_config(DemoConfig, overrides={"tags": "[1, 2]"}).tags == [1, 2]


def test_list_rejects_scalar_in_yaml():
    """A scalar for a list field in a mapping (not the command line) is an error."""
    with pytest.raises(ConfigError, match="'tags' in config: expected list"):
        load_config(DemoConfig, values={"tags": "x,y"})


def test_dict_from_command_line_flow_mapping():
    """On the command line a dict is a YAML flow mapping."""
    assert load_config(DemoConfig, overrides={"options": "{digits: 3, seed: 1}"}).options == {"digits": 3, "seed": 1}


@pytest.mark.parametrize("raw", ["a,b", "[1, 2]", "{bad: [}"])
def test_dict_rejects_non_mappings_from_command_line(raw):
    """A list, a comma string or broken YAML is rejected for a dict field."""
    with pytest.raises(ConfigError, match="'options' in command line: expected dict"):
        load_config(DemoConfig, overrides={"options": raw})


def test_literal_accepts_allowed_value():
    """A Literal field takes one of its values."""
    assert load_config(DemoConfig, values={"mode": "slow"}).mode == "slow"


def test_literal_rejects_other_value_listing_choices():
    """Anything else names the key, the source and the allowed values."""
    with pytest.raises(ConfigError, match=r"'mode' in command line: must be one of fast, slow, got 'medium'"):
        load_config(DemoConfig, overrides={"mode": "medium"})


@pytest.mark.parametrize("raw", ["None", "null"])
def test_optional_none_from_command_line(raw):
    """`None`/`null` on the command line sets an Optional field to None."""
    assert load_config(DemoConfig, values={"max_steps": 5}, overrides={"max_steps": raw}).max_steps is None


def test_optional_none_from_mapping_and_value_coerced():
    """None in a mapping gives None; a string number is converted to the inner type."""
    assert load_config(DemoConfig, values={"seed": None}).seed is None
    assert load_config(DemoConfig, overrides={"seed": "42"}).seed == 42
    assert load_config(DemoConfig, overrides={"max_steps": "10"}).max_steps == 10


def test_optional_rejects_wrong_inner_type():
    """A non-int for `int | None` is an error naming the union type."""
    with pytest.raises(ConfigError, match=r"'max_steps'.*expected int \| NoneType, got 'ten'"):
        load_config(DemoConfig, overrides={"max_steps": "ten"})


def test_none_for_non_optional_field_is_error():
    """None for a non-Optional field is rejected, not stored."""
    with pytest.raises(ConfigError, match="'epochs'"):
        load_config(DemoConfig, values={"epochs": None})


# ---------------------------------------------------------------------------------------------
# unknown keys, bounds, post_init


def test_unknown_key_with_suggestion_names_source():
    """A misspelt key names itself, its source and the closest field."""
    with pytest.raises(ConfigError) as info:
        load_config(DemoConfig, overrides={"learning_rat": "0.1"})
    message = str(info.value)
    assert "unknown config key 'learning_rat'" in message
    assert "in command line" in message
    assert "did you mean 'learning_rate'?" in message


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    """For a YAML file the source in the error is the file path."""
    path = _yaml(tmp_path, "epoch: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(DemoConfig, path=path)
    assert f"unknown config key 'epoch' in {path}" in str(info.value)
    assert "did you mean 'epochs'?" in str(info.value)


def test_unknown_key_in_values_without_suggestion():
    """With no close match there is no did-you-mean; the source is 'config'."""
    with pytest.raises(ConfigError) as info:
        load_config(DemoConfig, values={"zzzzzz": 1})
    assert str(info.value) == "unknown config key 'zzzzzz' in config"


def test_init_false_field_is_not_a_config_key():
    """Fields with init=False cannot be set from a config."""
    with pytest.raises(ConfigError, match="unknown config key 'derived'"):
        load_config(WithPostInit, values={"derived": 3})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": 0}, "config key 'epochs' must be >= 1, got 0"),
        ({"learning_rate": 0}, "config key 'learning_rate' must be > 0, got 0.0"),
        ({"learning_rate": -1e-3}, "config key 'learning_rate' must be > 0, got -0.001"),
        ({"warmup_ratio": 1.5}, "config key 'warmup_ratio' must be <= 1, got 1.5"),
        ({"warmup_ratio": -0.1}, "config key 'warmup_ratio' must be >= 0, got -0.1"),
        ({"max_steps": 0}, "config key 'max_steps' must be >= 1, got 0"),
    ],
)
def test_bounds_violations_name_the_key(values, message):
    """ge/gt/le metadata are enforced with an error naming the key, the bound and the value."""
    with pytest.raises(ConfigError) as info:
        load_config(DemoConfig, values=values)
    assert str(info.value) == message


def test_bounds_edges_are_inclusive_or_exclusive_as_declared():
    """ge and le accept the bound itself."""
    config = load_config(DemoConfig, values={"epochs": 1, "warmup_ratio": 1, "max_steps": 1})
    assert (config.epochs, config.warmup_ratio, config.max_steps) == (1, 1.0, 1)


def test_bounds_skip_none_for_optional():
    """An Optional field left at None is not bound-checked."""
    assert load_config(DemoConfig, values={"max_steps": None}).max_steps is None


def test_post_init_value_error_becomes_config_error():
    """A ValueError from __post_init__ is a ConfigError naming the class."""
    with pytest.raises(ConfigError, match="invalid WithPostInit: low must be <= high"):
        load_config(WithPostInit, values={"low": 3, "high": 1})
    assert load_config(WithPostInit, values={"low": 1, "high": 4}).derived == 3


# ---------------------------------------------------------------------------------------------
# YAML file errors


def test_invalid_yaml_names_file_and_line(tmp_path):
    """A YAML syntax error names the file and the (1-based) line of the problem."""
    path = _yaml(tmp_path, "epochs: 2\nname: run\ntags: [a, b\nseed: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(DemoConfig, path=path)
    message = str(info.value)
    assert "invalid YAML" in message
    assert message.startswith(f"{path}:")
    # the list opened on line 3 is unclosed; the parser hits the ':' of line 4
    assert message == f"{path}:4: invalid YAML (expected ',' or ']', but got ':')"


def test_invalid_yaml_bad_indentation_line(tmp_path):
    """A mapping value in the wrong place is reported at its line."""
    path = _yaml(tmp_path, "epochs: 2\nname: a: b\n")
    with pytest.raises(ConfigError, match=rf"^{__import__('re').escape(str(path))}:2: invalid YAML"):
        load_config(DemoConfig, path=path)


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("3\n", "int")])
def test_non_mapping_yaml_is_error(tmp_path, text, kind):
    """A YAML document that is not a mapping is rejected with its type."""
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(DemoConfig, path=path)
    assert str(info.value) == f"{path}: expected a mapping of config keys, got {kind}"


def test_missing_yaml_file(tmp_path):
    """A config path that does not exist names the path."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(DemoConfig, path=path)
    assert str(path) in str(info.value)


def test_yaml_path_that_is_a_directory(tmp_path):
    """A directory is not a config file."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DemoConfig, path=tmp_path)


def test_non_utf8_yaml_is_error(tmp_path):
    """A YAML file with non-UTF-8 bytes is a ConfigError naming the file."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid UTF-8") as info:
        load_config(DemoConfig, path=path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# config_hash and describe_fields


def test_config_hash_is_stable_and_short():
    """Equal configs hash equally (also across instances); the hash is 16 hex characters."""
    a = load_config(DemoConfig, values={"epochs": 3})
    b = load_config(DemoConfig, overrides={"epochs": "3"})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) == config_hash(a)
    assert len(config_hash(a)) == 16
    int(config_hash(a), 16)


def test_config_hash_known_value():
    """The hash is sha256 of the sorted-key JSON of the values (so it is stable across runs)."""
    import hashlib
    import json

    config = DemoConfig()
    payload = json.dumps(
        {"learning_rate": 2e-4, "epochs": 1, "warmup_ratio": 0.0, "use_peft": False, "name": "run", "tags": ["a"],
         "options": {}, "mode": "fast", "max_steps": None, "seed": 0},
        sort_keys=True,
    )
    assert config_hash(config) == hashlib.sha256(payload.encode()).hexdigest()[:16]


@pytest.mark.parametrize("change", [{"epochs": 2}, {"learning_rate": 1e-3}, {"tags": ["b"]}, {"options": {"k": 1}},
                                    {"use_peft": True}, {"max_steps": 10}])
def test_config_hash_changes_with_any_value(change):
    """Changing any one value changes the hash."""
    assert config_hash(load_config(DemoConfig, values=change)) != config_hash(DemoConfig())


def test_describe_fields_rows():
    """describe_fields gives (name, type, default, help) per field, in declaration order."""
    rows = describe_fields(DemoConfig)
    by_name = {row[0]: row for row in rows}
    assert [row[0] for row in rows] == ["learning_rate", "epochs", "warmup_ratio", "use_peft", "name", "tags",
                                        "options", "mode", "max_steps", "seed"]
    assert by_name["learning_rate"] == ("learning_rate", "float", 2e-4, "Peak learning rate.")
    assert by_name["epochs"] == ("epochs", "int", 1, "Passes over the data.")
    assert by_name["use_peft"] == ("use_peft", "bool", False, "Train LoRA adapters.")
    assert by_name["tags"] == ("tags", "list", ["a"], "Free-form tags.")
    assert by_name["options"] == ("options", "dict", {}, "Extra options.")
    assert by_name["mode"] == ("mode", "{fast,slow}", "fast", "Speed mode.")
    assert by_name["max_steps"] == ("max_steps", "int | NoneType", None, "Stop after this many steps.")


def test_describe_fields_includes_init_false_and_missing_help():
    """Fields without help get '' and init=False fields are still described."""
    rows = {row[0]: row for row in describe_fields(WithPostInit)}
    assert rows["derived"] == ("derived", "int", 0, "")
    assert rows["low"] == ("low", "int", 0, "Lower end.")
