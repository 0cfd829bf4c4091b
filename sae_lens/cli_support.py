"""What every command line of the package shares (`python -m sae_lens.sae_training_runner`,
`.cache_activations_runner`, `.pretokenize_runner`, `.evals`).

- A parser whose mistakes raise `CLIError` (one line, no usage dump), whose unknown flags
  get the closest valid flag suggested, and which generates one `--field` flag per field of a
  config dataclass, described in `--help` by `sae_lens.config_help`.
- `--config FILE` (.json, .yaml or .yml) read the same way everywhere: a missing file, a bad
  suffix, malformed YAML or JSON (with its line), something other than a mapping and unknown
  keys (with the closest valid key) are each one clear line; values are checked against the
  field's type and named by their key in that file. Flags override the file's values.
- Numbers: an int field takes any exact integer, also written as `2e5`, `2.0e+5` or
  `2_000_000` (YAML reads `2e5` as a string: it is accepted where it names an integer); a
  float field takes `3e-4` written either way.
- `report_user_errors`: runs a command and turns the library's user-error exceptions
  (ValueError, OSError) into `error: <one line>` and exit code 2. Set
  `SAE_LENS_TRACEBACK=1` to see the traceback instead.
- Checks that need no model: devices (`sae_lens.errors.check_device`), local paths, output
  folders, model names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from sae_lens.dataset_sources import looks_like_local_path
from sae_lens.embedded import is_embedded_dataset, is_embedded_model
from sae_lens.errors import check_device as check_device  # the library's device check
from sae_lens.errors import closest_names

TRACEBACK_ENV = "SAE_LENS_TRACEBACK"
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
# The library's errors for bad input (an unknown hook is a HookNameError, a KeyError and a
# ValueError); a bare KeyError is more likely a bug, which keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
_MAX_MESSAGE = 1200
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_NONE = ("none", "null")

R = TypeVar("R")


class CLIError(ValueError):
    """A mistake in a command line or its `--config` file (one line, naming the culprit)."""


def did_you_mean(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    """' (did you mean <prefix><closest>?)', or '' when no candidate is close."""
    close = closest_names(name, candidates, n=1)
    if not close:
        return ""
    return f" (did you mean {prefix}{close[0]}?)" if prefix else f" (did you mean {close[0]!r}?)"


# --- values: one converter per annotation --------------------------------------------------------
class FieldValue:
    """Reads one field's value from a command-line string (`parse`, argparse's `type`) and
    from a config file's typed value (`accept`). Both raise ValueError on a bad value."""

    def __init__(
        self,
        describe: str,
        parse: Callable[[str], Any],
        accept: Callable[[Any], Any],
        metavar: str,
    ) -> None:
        self.describe, self.parse, self.accept, self.metavar = describe, parse, accept, metavar
        self.__name__ = describe  # argparse: "invalid <name> value: 'x'"

    def __call__(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as error:
            message = str(error)
            if not message.startswith("expected"):
                message = f"expected {self.describe}, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None


def _bad(describe: str, value: Any) -> ValueError:
    return ValueError(f"expected {describe}, got {value!r}")


def exact_int(text: str) -> int:
    """An int from `12`, `2_000`, `2e5` or `2.0e+5` (an exact integer), else ValueError."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        number = parse_float(text, "an integer")
        if not math.isfinite(number) or number != int(number):
            raise _bad("an integer", text) from None
        return int(number)


def parse_float(text: str, describe: str = "a number") -> float:
    try:
        return float(text)
    except ValueError:
        raise _bad(describe, text) from None


def _accept_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _bad("an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str):
        return exact_int(value)
    raise _bad("an integer", value)


def _accept_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_float(value)
    raise _bad("a number", value)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _bad("true or false", text)


def _accept_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return parse_bool(value)
    raise _bad("true or false", value)


def _accept_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _bad("a string", value)


def _parse_json(text: str, describe: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise _bad(describe, text) from None
    if not isinstance(value, kind):
        raise _bad(describe, text)
    return value


def _dict_value() -> FieldValue:
    def accept(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            return _parse_json(value, "a JSON object", dict)
        if not isinstance(value, dict):
            raise _bad("a mapping (a JSON object)", value)
        return value

    return FieldValue(
        "a JSON object", lambda t: _parse_json(t, "a JSON object", dict), accept, "JSON"
    )


def _literal_value(choices: Sequence[Any]) -> FieldValue:
    names = [str(c) for c in choices]

    def parse(text: str) -> Any:
        for choice in choices:
            if text == str(choice):
                return choice
        raise ValueError(f"expected one of {names}, got {text!r}{did_you_mean(text, names)}")

    def accept(value: Any) -> Any:
        if value in choices:
            return value
        return parse(str(value))

    return FieldValue(f"one of {names}", parse, accept, "{" + ",".join(names) + "}")


def _optional(inner: FieldValue) -> FieldValue:
    def parse(text: str) -> Any:
        return None if text.strip().lower() in _NONE else inner.parse(text)

    def accept(value: Any) -> Any:
        return None if value is None else inner.accept(value)

    return FieldValue(f"{inner.describe} or None", parse, accept, inner.metavar)


def _union(members: list[FieldValue]) -> FieldValue:
    describe = " or ".join(m.describe for m in members)

    def first_that_reads(read: Callable[[FieldValue], Any], value: Any) -> Any:
        hints = []
        for member in members:
            try:
                return read(member)
            except ValueError as error:
                hints += re.findall(r" \(did you mean [^)]*\)", str(error))
        raise ValueError(f"expected {describe}, got {value!r}{''.join(hints[:1])}")

    return FieldValue(
        describe,
        lambda text: first_that_reads(lambda m: m.parse(text), text),
        lambda value: first_that_reads(lambda m: m.accept(value), value),
        "|".join(m.metavar for m in members),
    )


def _json_list(inner: FieldValue) -> FieldValue:
    """A list inside a union (e.g. `bool | list[int]`): a JSON list on the command line."""
    describe = f"a JSON list of {re.sub(r'^an? ', '', inner.describe)}s"

    def accept(value: Any) -> list[Any]:
        if isinstance(value, str):
            value = _parse_json(value, describe, list)
        if not isinstance(value, (list, tuple)):
            raise _bad(describe, value)
        return [inner.accept(v) for v in value]

    return FieldValue(describe, accept, accept, "JSON_LIST")


_SCALARS: dict[Any, Callable[[], FieldValue]] = {
    int: lambda: FieldValue("an integer", exact_int, _accept_int, "INT"),
    float: lambda: FieldValue("a number", parse_float, _accept_float, "FLOAT"),
    bool: lambda: FieldValue("true or false", parse_bool, _accept_bool, "{true,false}"),
    str: lambda: FieldValue("a string", str, _accept_str, "STR"),
    Any: lambda: FieldValue("a string", str, lambda v: v, "VALUE"),
}


def value_for(annotation: Any, in_union: bool = False) -> FieldValue:
    """The converter of a field annotated `annotation` (int, float, bool, str, dicts, lists,
    Literals, unions with None)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]()
    if origin is Literal:
        return _literal_value(args)
    if origin is dict or annotation is dict:
        return _dict_value()
    if origin in (list, tuple) and in_union:
        return _json_list(value_for(args[0]))
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        # Literals merge, so "bos" is offered beside the int of `int | Literal[...]`.
        values = [value_for(m, in_union=True) for m in members]
        inner = values[0] if len(values) == 1 else _union(values)
        return _optional(inner) if type(None) in args else inner
    raise TypeError(f"no command-line reading for the annotation {annotation!r}")


@dataclasses.dataclass
class FieldOption:
    """How one config field is read: its converter, and whether it takes several tokens
    (a list or tuple field: `--seqpos_slice 1 9`)."""

    name: str
    value: FieldValue
    sequence: type | None = None  # list or tuple: the flag takes one or more tokens
    optional: bool = False  # a sequence that may be None: `--flag None`

    def accept(self, value: Any) -> Any:
        if self.sequence is None:
            return self.value.accept(value)
        if value is None:
            return None
        items = value if isinstance(value, (list, tuple)) else [value]
        return self.sequence(self.value.accept(v) for v in items)

    def from_tokens(self, values: list[Any]) -> Any:
        """The value of a sequence flag from its tokens' values (a token holding a JSON
        list gives all its items: `--widths 64 128` or `--widths '[64, 128]'`)."""
        flat = [v for value in values for v in (value if isinstance(value, _Items) else [value])]
        if self.optional and flat == [None]:
            return None
        return self.sequence(flat) if self.sequence is not None else flat


class _Items(list):  # type: ignore[type-arg]
    """The items of one command-line token that held a JSON list."""


def _sequence_element(element: FieldValue) -> FieldValue:
    """One token of a list or tuple flag: an item, or a JSON list of items."""

    def parse(text: str) -> Any:
        if text.lstrip().startswith("["):
            items = _parse_json(text, f"a JSON list of {element.describe}", list)
            return _Items(element.accept(item) for item in items)
        return element.parse(text)

    return FieldValue(element.describe, parse, element.accept, element.metavar)


def field_option(name: str, annotation: Any) -> FieldOption:
    """The `FieldOption` of a field annotated `annotation`: lists and tuples (optionally
    with None) take several tokens, each read by the element's converter."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    optional = False
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and typing.get_origin(members[0]) in (list, tuple):
            origin, args = typing.get_origin(members[0]), typing.get_args(members[0])
            optional = True
    if origin in (list, tuple):
        element = _optional(value_for(args[0])) if optional else value_for(args[0])
        return FieldOption(name, _sequence_element(element), sequence=origin, optional=optional)
    return FieldOption(name, value_for(annotation))


# --- parser ----------------------------------------------------------------------------------------
def plain_text(markdown: str) -> str:
    """Markdown of `sae_lens.config_help` as terminal text: no backticks, links as text."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", markdown)
    return text.replace("`", "")


class CommandLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes raise `CLIError` (no usage dump, no exit), without
    prefix abbreviations, that remembers its flags to suggest the closest one."""

    def __init__(self, prog: str, description: str, **kwargs: Any) -> None:
        self.flag_names: list[str] = []
        self.field_options: dict[str, FieldOption] = {}
        self.recorded: list[argparse.Action] = []
        super().__init__(prog=prog, description=description, allow_abbrev=False, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        action = super().add_argument(*args, **kwargs)
        self._record(action)
        return action

    def _record(self, action: argparse.Action) -> None:
        self.flag_names += [s for s in action.option_strings if s.startswith("--")]
        self.recorded.append(action)

    def add_group(self, title: str) -> Any:
        """An argument group (a titled section of `--help`) whose flags this parser knows."""
        group = self.add_argument_group(title)
        add = group.add_argument

        def add_and_record(*args: Any, **kwargs: Any) -> argparse.Action:
            action = add(*args, **kwargs)
            self._record(action)
            return action

        group.add_argument = add_and_record  # type: ignore[method-assign]
        return group

    def error(self, message: str) -> typing.NoReturn:
        raise CLIError(message)

    def add_config_option(self) -> None:
        self.add_argument(
            "--config",
            metavar="FILE",
            help="A .json, .yaml or .yml file of settings (keys as the flags, without --); "
            "flags given on the command line override its values.",
        )

    def add_fields(
        self,
        config_cls: type,
        descriptions: Mapping[str, str],
        groups: Sequence[tuple[str, Iterable[str]]] = (),
        shown_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """One `--<field>` flag per field of the dataclass `config_cls`, described by
        `descriptions`, in titled sections `groups` (topic, field names) where given."""
        self.usage = "%(prog)s [-h] [--config FILE] [--<field> VALUE ...]"
        hints = typing.get_type_hints(config_cls)
        fields = {f.name: f for f in dataclasses.fields(config_cls)}
        sections: list[tuple[str | None, list[str]]] = [(t, list(n)) for t, n in groups]
        placed = {name for _, names in sections for name in names}
        sections.append((None, [n for n in fields if n not in placed]))
        for title, names in sections:
            target = self if title is None else self.add_group(title)
            for name in names:
                if name in fields:
                    shown = (shown_defaults or {}).get(name, _default_of(fields[name]))
                    self._add_field(target, fields[name], hints[name], descriptions, shown)

    def _add_field(
        self,
        target: Any,
        field: dataclasses.Field[Any],
        annotation: Any,
        descriptions: Mapping[str, str],
        shown_default: Any,
    ) -> None:
        option = field_option(field.name, annotation)
        custom = field.metadata.get("custom_args", {})
        if custom.get("choices") is not None:  # e.g. the registered architectures, read now
            option.value = _literal_value(list(custom["choices"]))
        elif custom.get("type") is not None and option.value.describe != "a JSON object":
            option = _custom_option(option, custom["type"])  # e.g. "--widths 64,128,256"
        self.field_options[field.name] = option
        is_bool = annotation is bool or set(typing.get_args(annotation)) == {bool, type(None)}
        kwargs: dict[str, Any] = {
            "type": option.value,
            "default": argparse.SUPPRESS,
            "metavar": option.value.metavar,
            "help": _help_text(descriptions.get(field.name, ""), shown_default),
        }
        if "nargs" in custom:
            kwargs["nargs"] = custom["nargs"]
        elif option.sequence is not None:
            kwargs["nargs"] = "+"
        elif is_bool:
            kwargs.update(nargs="?", const=True)  # `--resume` alone means true
        target.add_argument(f"--{field.name}", **kwargs)


def _custom_option(annotated: FieldOption, parse: Callable[[str], Any]) -> FieldOption:
    """A field whose config gives its own command-line reader `parse` (one token); a
    config file's non-string value is still read by the field's annotation."""

    def accept(value: Any) -> Any:
        return parse(value) if isinstance(value, str) else annotated.accept(value)

    return FieldOption(annotated.name, FieldValue("a valid value", parse, accept, "VALUE"))


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return "required"


def _help_text(description: str, default: Any) -> str:
    shown = default if isinstance(default, str) else json.dumps(default, default=str)
    text = f"{plain_text(description)} (default: {shown})"
    return text.replace("%", "%%")


def read_config_file(
    path: str | Path, known_keys: Iterable[str], ignored_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """The settings in a .json/.yaml/.yml file (safe loaders only), keys checked against
    `known_keys` (`ignored_keys` are dropped: values a run writes but does not read)."""
    path = Path(path)
    label = f"--config file {str(path)!r}"
    if not path.exists():
        raise CLIError(f"{label} does not exist")
    if path.is_dir():
        raise CLIError(f"{label} is a folder: give a .json, .yaml or .yml file")
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise CLIError(f"{label} must end in .json, .yaml or .yml")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise CLIError(f"{label} is not a text file") from None
    data = _parse_config_text(text, path.suffix.lower() == ".json", label)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(
            f"{label} must hold a mapping of setting: value, not a {type(data).__name__}"
        )
    known, ignored = list(known_keys), set(ignored_keys)
    unknown = [str(k) for k in data if str(k) not in known and str(k) not in ignored]
    if unknown:
        listed = ", ".join(f"{k!r}{did_you_mean(k, known)}" for k in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise CLIError(f"{label} has unknown key{plural} {listed}; see --help for the valid ones")
    return {str(k): v for k, v in data.items() if str(k) not in ignored}


def _parse_config_text(text: str, is_json: bool, label: str) -> Any:
    if is_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise CLIError(
                f"{label} is not valid JSON: line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise CLIError(f"{label} is not valid YAML: {where}{problem}") from None


def _file_value(
    key: str, value: Any, option: FieldOption | None, action: argparse.Action | None, label: str
) -> Any:
    """A config file's `value` for `key`, read as its flag reads it."""
    try:
        if option is not None:
            return option.accept(value)
        if action is not None:
            return _value_for_action(action, value)
    except ValueError as error:
        raise CLIError(f"key {key!r} in {label}: {error}") from None
    return value


def _value_for_action(action: argparse.Action, value: Any) -> Any:
    """A file value for a hand-written flag (store_true, int, str, several of them)."""
    if action.nargs == 0:  # store_true / store_false
        return _accept_bool(value)
    convert = {int: _accept_int, float: _accept_float, None: _accept_str, str: _accept_str}.get(
        action.type,  # type: ignore[arg-type]
        lambda v: v,
    )
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, (list, tuple)) else [value]
        return [convert(v) for v in items]
    if value is None:
        return None
    converted = convert(value)
    if action.choices is not None and converted not in action.choices:
        raise _bad(f"one of {list(action.choices)}", value)
    return converted


def parse_command_line(
    parser: CommandLineParser,
    argv: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
    ignored_file_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """The settings given to `parser`: `defaults`, then the `--config` file's values, then
    the flags, each overriding the one before. Values of config fields come back read by
    their field's converter (a list field as a list, a tuple field as a tuple)."""
    pre = CommandLineParser(prog=parser.prog, description="", add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(list(argv))
    values = dict(defaults or {})
    if known.config is not None:
        actions = {a.dest: a for a in parser.recorded if a.dest not in ("help", "config")}
        label = f"--config file {known.config!r}"
        file_values = read_config_file(known.config, actions, ignored_file_keys)
        for key, value in file_values.items():
            option = parser.field_options.get(key)
            values[key] = _file_value(key, value, option, actions.get(key), label)
    parser.set_defaults(**values)
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise unknown_flag_error(unknown, parser.flag_names)
    parsed = {k: v for k, v in vars(namespace).items() if k != "config"}
    for name, option in parser.field_options.items():
        if option.sequence is not None and isinstance(parsed.get(name), list):
            parsed[name] = option.from_tokens(parsed[name])
    return parsed


def unknown_flag_error(unknown: Sequence[str], flag_names: Iterable[str]) -> CLIError:
    flags = [a.split("=", 1)[0][2:] for a in unknown if a.startswith("--")]
    names = [name[2:] for name in flag_names]
    hint = did_you_mean(flags[0], names, prefix="--") if flags else ""
    return CLIError(f"unrecognized arguments: {' '.join(unknown)}{hint}; see --help")


# --- running a command -------------------------------------------------------------------------
def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError without its quotes), cut if very long."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 20] + " ... (message cut)"
    return text


def report_user_errors(command: Callable[[], R]) -> R | int:
    """Run `command`; a user mistake (`USER_ERRORS`) prints `error: <one line>` on stderr and
    returns exit code 2 instead of a traceback (unless SAE_LENS_TRACEBACK is set)."""
    try:
        return command()
    except USER_ERRORS as error:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
        return 2


def exit_code(result: Any) -> int:
    """The process exit code of a command's result (an int is one; anything else is 0)."""
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# --- checks that need no model -------------------------------------------------------------------
def check_output_folder(path: str | Path, name: str) -> None:
    """Refuse an output folder that is an existing file, or lies under one."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if candidate.is_dir():
                return
            if candidate == path:
                raise CLIError(f"{name} {str(path)!r} is a file: give a folder")
            raise CLIError(
                f"{name} {str(path)!r} lies under {str(candidate)!r}, which is a file: "
                "give a folder"
            )


def check_input_path(value: str, name: str, local: bool | None = None) -> None:
    """Refuse a path that does not exist, suggesting the closest entry of its folder: any
    `value` when `local`, else only one that looks local (./x, /x, ~/x, x.jsonl)."""
    if not (looks_like_local_path(value) if local is None else local):
        return
    path = Path(value).expanduser()
    if path.exists():
        return
    parent = path.parent if path.parent.is_dir() else None
    hint = did_you_mean(path.name, [p.name for p in parent.iterdir()]) if parent else ""
    raise CLIError(f"{name} {value!r} does not exist{hint}")


def check_dataset_path(value: str, name: str = "dataset_path") -> None:
    if not value:
        raise CLIError(f"{name} is empty: give a local path, a Hugging Face name or pydoc-corpus")
    if not is_embedded_dataset(value):
        check_input_path(value, name)


def check_model_name(model_class_name: str, model_name: str, name: str = "model_name") -> None:
    """Refuse a model TransformerLens does not know (suggesting the closest of its names), or a
    local-looking model folder that does not exist. Hugging Face names are left to loading."""
    if is_embedded_model(model_name) or os.path.isdir(model_name):
        return
    check_input_path(model_name, name)
    if model_class_name != "HookedTransformer":
        return
    try:
        from transformer_lens import loading_from_pretrained as loading

        names = list(loading.OFFICIAL_MODEL_NAMES)
        names += [alias for aliases in loading.MODEL_ALIASES.values() for alias in aliases]
    except (ImportError, AttributeError):  # another transformer-lens layout: leave it to it
        return
    if model_name.lower() not in {name.lower() for name in names}:
        hint = did_you_mean(model_name, [*names, "tiny-pydoc-gpt2"])
        raise CLIError(
            f"{name} {model_name!r} is not a model HookedTransformer knows, nor a local "
            f"folder{hint}; Hugging Face models load with model_class_name AutoModelForCausalLM"
        )


def layer_of_hook(hook_name: str) -> int:
    """The first number in a hook name (`blocks.3.hook_resid_pre` -> 3), 0 if none."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", hook_name)
    return int(match.group(1)) if match else 0
