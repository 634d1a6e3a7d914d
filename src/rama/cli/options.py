"""Dataclass configs double as command-line options: one field, one flag, its help from metadata."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any, help: str, **metadata: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def help_text(field: dataclasses.Field[Any]) -> str:
    """The field's help, plus its default when that tells the user something: not for a required or
    positional field, not for None or "" (the help says what an absent value means), and not when the
    help already names the default (one "(default: …)" per option)."""
    text = str(field.metadata.get("help", ""))
    default = field.default
    if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    shown = default not in (dataclasses.MISSING, None, "") and default != []
    if field.metadata.get("positional") or not shown or "default" in text:
        return text
    return f"{text} (default: {default})"


def add_options(parser: argparse.ArgumentParser, cls: type[Any], skip: tuple[str, ...] = ()) -> None:
    """One option per field of the dataclass `cls` (but those in `skip`)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name not in skip:
            add_field(parser, field, hints[field.name])


def comma_ints(name: str) -> Any:
    """The parser of a list-of-ints option given as one value: `--widths 72,288,1152`."""

    def parse(text: str) -> list[int]:
        try:
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--{name.replace('_', '-')} takes comma-separated integers, such as 72,288,1152,4608; got {text!r}"
            ) from None

    return parse


def add_field(
    parser: argparse.ArgumentParser,
    field: dataclasses.Field[Any],
    hint: Any,
    default: Any = dataclasses.MISSING,
) -> None:
    """The option for one dataclass field: `--field-name`, and `--alias` for each name in its
    metadata's `aliases` (older spellings that keep working); `default` overrides the field's."""
    if field.metadata.get("positional"):
        parser.add_argument(field.name, help=help_text(field))
        return
    flags = ["--" + name.replace("_", "-") for name in (field.name, *field.metadata.get("aliases", ()))]
    kind = _base_type(hint)
    text = help_text(field)
    default = field.default if default is dataclasses.MISSING else default
    if kind is bool:
        parser.add_argument(
            *flags, dest=field.name, action=argparse.BooleanOptionalAction, default=default, help=text
        )
    elif typing.get_origin(kind) is list and "nargs" in field.metadata:
        parser.add_argument(*flags, dest=field.name, nargs=field.metadata["nargs"], default=None, help=text)
    elif typing.get_origin(kind) is list and field.metadata.get("comma"):
        parser.add_argument(*flags, dest=field.name, type=comma_ints(field.name), default=None, help=text)
    elif typing.get_origin(kind) is list:
        parser.add_argument(*flags, dest=field.name, action="append", default=None, help=text)
    else:
        parser.add_argument(*flags, dest=field.name, type=kind, default=default, help=text)


def from_args(cls: type[T], namespace: argparse.Namespace) -> T:
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if values[f.name] is None and f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return cls(**values)
