"""Settings as people type them: ``--opt NAME.KEY=VALUE`` and ``--config run.toml``.

- :func:`parse_value` — ``0.9`` → 0.9, ``5`` → 5, ``true``/``false``, ``none``,
  ``0.9,0.99`` → (0.9, 0.99), anything else a string (``strong_wolfe``);
- :func:`parse_optimizer_setting` — ``"sgd.momentum=0.9"`` → ``("sgd", ("momentum",), 0.9)``;
  ``"muon.adamw.lr=0.003"`` reaches the AdamW that trains the rest beside Muon;
- :func:`optimizer_options` — many such settings as ``{name: {key: value}}``, later ones
  overriding earlier ones (a config file's, then the command line's);
- :func:`read_config` — a TOML file whose keys are ``handgrad train``'s long options
  (``batch-size`` or ``batch_size``), with ``[opt.NAME]`` tables for the optimizers'
  arguments and ``model`` as a string or a table; the command line overrides it.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Scalar = bool | int | float | str | None

_WORDS: dict[str, Scalar] = {"true": True, "false": False, "none": None}


def parse_scalar(text: str) -> Scalar:
    """One value: an integer, a float (``1e-3``, ``inf``), ``true``/``false``, ``none``, or
    the text itself."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in _WORDS:
        return _WORDS[lowered]
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        value = float(stripped)
    except ValueError:
        return stripped
    return value if not math.isnan(value) else stripped


def parse_value(text: str) -> Scalar | tuple[Scalar, ...]:
    """A setting's value: one :func:`parse_scalar`, or a comma-separated tuple of them."""
    if "," in text:
        return tuple(parse_scalar(item) for item in text.split(","))
    return parse_scalar(text)


def parse_optimizer_setting(text: str) -> tuple[str, tuple[str, ...], Any]:
    """``"NAME.KEY=VALUE"`` → ``(name, key path, value)``; a ``ValueError`` saying the form
    otherwise. NAME is lowercased (``Adam.lr`` is ``adam.lr``)."""
    target, equals, value = text.partition("=")
    parts = [part.strip() for part in target.split(".")]
    if not equals or len(parts) < 2 or not all(parts) or not value.strip():
        raise ValueError(
            f"--opt {text!r}: expected NAME.KEY=VALUE, e.g. sgd.momentum=0.9 or "
            "adam.betas=0.9,0.99"
        )
    return parts[0].lower(), tuple(parts[1:]), parse_value(value)


def optimizer_options(
    settings: Iterable[str | tuple[str, tuple[str, ...], Any]],
    base: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{name: {key: value}}`` from ``base`` (e.g. a config file's ``[opt]`` tables) and
    then ``settings`` (``"NAME.KEY=VALUE"`` strings or parsed triples), a later value of a
    key replacing an earlier one. A key path of two (``muon.adamw.lr``) makes a nested
    table."""
    options: dict[str, dict[str, Any]] = {
        name: _copy_table(table) for name, table in (base or {}).items()
    }
    for setting in settings:
        name, path, value = (parse_optimizer_setting(setting) if isinstance(setting, str)
                             else setting)
        table = options.setdefault(name, {})
        for key in path[:-1]:
            inner = table.setdefault(key, {})
            if not isinstance(inner, dict):
                raise ValueError(f"--opt {name}.{'.'.join(path)}: {key} is a value, not a table")
            table = inner
        table[path[-1]] = value
    return options


def _copy_table(table: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _copy_table(value) if isinstance(value, Mapping) else _tuple(value)
            for key, value in table.items()}


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# --- the config file ---------------------------------------------------------------------------


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings in the TOML file ``path``, keyed as argparse names the long options
    (``batch-size`` and ``batch_size`` both become ``batch_size``); ``opt`` becomes
    ``{name: {key: value}}`` with TOML arrays as tuples. Which keys exist and what values they
    take is the command's to check (:func:`handgrad.cli.train.apply_config`).

    A missing file is ``FileNotFoundError``; a directory, a TOML syntax error, text that is
    not UTF-8 or an ``opt`` entry that is not a table is a ``ValueError`` naming the file.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as a package
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ValueError("--config needs Python 3.11, or the package tomli") from None
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"config file not found: {source}")
    if not source.is_file():
        raise ValueError(f"config {source} is not a file")
    try:
        with source.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config {source}: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"config {source} is not UTF-8 text: {error}") from None
    settings: dict[str, Any] = {}
    for raw_key, value in document.items():
        key = raw_key.strip().lower().replace("-", "_")
        if key in settings:
            raise ValueError(f"config {source}: {raw_key} is given twice")
        if key == "opt":
            if not isinstance(value, Mapping):
                raise ValueError(f"config {source}: opt must be tables ([opt.NAME])")
            value = _opt_tables(source, value)
        settings[key] = value
    return settings


def _opt_tables(source: Path, tables: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise ValueError(
                f"config {source}: opt.{name} must be a table ([opt.{name}] with KEY = VALUE)"
            )
        result[name.lower()] = _copy_table(table)
    return result


__all__ = [
    "optimizer_options",
    "parse_optimizer_setting",
    "parse_scalar",
    "parse_value",
    "read_config",
]
