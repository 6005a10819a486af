"""Resolving a recipe into a ``DistillConfig``: YAML file / dict / config, plus ``key=value`` overrides.

A config may name a shipped recipe (``recipe: recommended``; ``ssdistill/recipes/*.yaml``, ``ssdistill distill
--recipe NAME``) or a recipe file: its keys are laid under the config's own, and the overrides over both.

This sits above ``ssdistill.methods`` (the config schema below it knows no method): the ``method`` section is
validated by the config class of the method it names, unknown keys anywhere are rejected with the closest valid key,
and errors are one line (the dotted key, what is wrong). ``describe_options`` lists every option for ``--help``.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ssdistill.config import DistillConfig, MethodConfig, Section
from ssdistill.errors import ConfigError
from ssdistill.methods.registry import METHODS

DEFAULT_METHOD = "feature"
RECIPES = Path(__file__).resolve().parent / "recipes"  # the shipped recipes, by name: recipes/<name>.yaml


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def load_recipe(name: str | Path) -> dict[str, Any]:
    """A shipped recipe by name, or a recipe file by path (it may not name a recipe itself)."""
    path = RECIPES / f"{name}.yaml" if str(name) in recipe_names() else Path(name)
    if not path.is_file():
        raise ConfigError(
            f"unknown recipe '{name}'{_did_you_mean(str(name), recipe_names())}; the shipped recipes are "
            f"{', '.join(recipe_names())} (or give the path of a recipe file)"
        )
    raw = load_yaml(path)
    if "recipe" in raw:
        raise ConfigError(f"recipe {path} names another recipe ({raw['recipe']}); a recipe must be self-contained")
    return raw


def method_config_class(name: str) -> type[MethodConfig]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'{_did_you_mean(name, METHODS)}; `ssdistill list` shows the methods")
    return METHODS[name].config_class


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _section_of(annotation: Any) -> tuple[str, type[Section]] | None:
    """("one" | "mapping" | "list", section class) when a field holds a section, a {name: section} or a [section]."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return "one", annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], Section):
        return "mapping", args[1]
    if origin is list and len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], Section):
        return "list", args[0]
    return None


def _check_keys(raw: dict[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    """Reject unknown keys anywhere in ``raw`` with the closest valid key in the message."""
    for key, value in raw.items():
        fields = model.model_fields
        if key not in fields:
            valid = [f"{prefix}{f}" for f in fields]
            raise ConfigError(f"unknown config key '{prefix}{key}'{_did_you_mean(prefix + key, valid)}")
        if model is DistillConfig and key == "method":
            if isinstance(value, dict):
                _check_keys(value, method_config_class(value.get("name", DEFAULT_METHOD)), "method.")
            continue
        found = _section_of(fields[key].annotation)
        if found is None:
            continue
        shape, section = found
        where = f"{prefix}{key}"
        if shape == "one" and isinstance(value, dict):
            _check_keys(value, section, f"{where}.")
        elif shape == "mapping":
            if not isinstance(value, dict):
                example = "teachers: {lite2: {name: efficientnet_lite2}}" if key == "teachers" else f"{key}: {{name: {{...}}}}"
                raise ConfigError(f"'{where}' must be a mapping of named sections ({example}), got {type(value).__name__}")
            for name, item in value.items():
                if not isinstance(item, dict):
                    raise ConfigError(f"{where}.{name} must be a section (name, weights, ...), got {item!r}")
                _check_keys(item, section, f"{where}.{name}.")
        elif shape == "list" and isinstance(value, list):
            for position, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ConfigError(f"{where}[{position}] must be a section, got {item!r}")
                _check_keys(item, section, f"{where}[{position}].")


def merge_nested(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["trainer.epochs=5", "data.train=/x"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (for example trainer.epochs=5)")
        key, text = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' has an empty key part")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' sets a key inside a value that is not a section")
        node[parts[-1]] = value
    return nested


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass --config PATH to a YAML recipe (see configs/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    return raw


def build_config(
    base: str | Path | dict[str, Any] | DistillConfig | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> DistillConfig:
    """Resolve a config from a YAML path / dict / config plus overrides (dotted ``key=value`` strings or a nested dict)."""
    if isinstance(base, DistillConfig):
        raw = base.to_dict()
    elif isinstance(base, (str, Path)):
        raw = load_yaml(base)
    else:
        raw = dict(base or {})
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw = merge_nested(raw, overrides or {})
    recipe = raw.pop("recipe", None)
    if recipe is not None:  # the recipe's keys under the config's and the overrides'
        raw = merge_nested(load_recipe(recipe), raw)
    method = raw.get("method")
    if isinstance(method, str):
        method = {"name": method}
    if method is None:
        method = {}
    if not isinstance(method, dict):
        raise ConfigError(f"'method' must be a method name or a section (name: ..., ...), got {method!r}")
    raw["method"] = method
    raw = DistillConfig.renamed_keys(raw)
    _check_keys(raw, DistillConfig)
    try:
        section = method_config_class(method.get("name", DEFAULT_METHOD)).model_validate(method)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, "method.")) from None
    try:
        return DistillConfig.model_validate({**raw, "method": section})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError, prefix: str = "") -> str:
    error = exc.errors()[0]
    key = prefix + ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    value, message = error.get("input"), error["msg"]
    if error.get("type") == "value_error":  # our own validators' sentences, without pydantic's prefix
        message = message.removeprefix("Value error, ")
    if not key.strip("."):
        return f"invalid config: {message}"
    return f"invalid value for '{key.rstrip('.')}': {message} (got {value!r})"


def describe_options() -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every option, method sections included, for --help."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if annotation is MethodConfig:
                rows.append(("method.name", DEFAULT_METHOD, f"one of: {', '.join(METHODS)}"))
                for method_name, method in METHODS.items():
                    for key, sub in method.config_class.model_fields.items():
                        if key != "name":
                            default = sub.get_default(call_default_factory=True)
                            rows.append((f"method.{key}", repr(default), f"[{method_name}] {sub.description or ''}"))
                continue
            if isinstance(annotation, type) and issubclass(annotation, Section):
                walk(annotation, f"{prefix}{name}.")
                continue
            found = _section_of(annotation)
            if found is not None:
                rows.append((f"{prefix}{name}", "{}", field.description or ""))
                continue
            default = field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name}", repr(default), field.description or ""))

    walk(DistillConfig, "")
    return rows
