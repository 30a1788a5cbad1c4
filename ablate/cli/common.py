"""What every command shares: the user-error boundary and the common options."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.markup import escape  # help is rich markup: an unescaped [...] vanishes

from ablate.config import ConfigError
from ablate.store import StoreError, StoreFailure

# Errors that mean "the input is wrong" (a bad key or value, study, data path, figure number
# or database): one line, exit code 2, nothing written.
USER_ERRORS = (ConfigError, StoreError)

DbOption = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="ABLATE_DB",
        help=escape("Database: a SQLAlchemy URL or a file path [default: sqlite:///results.db]."),
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
VariantOption = Annotated[
    Optional[str],
    typer.Option(
        "--variant",
        metavar="KEY|K=V,...",
        help=escape(
            "Which variant of the study (runs sharing one config apart from its axes and the seed): a key as "
            "'ablate status STUDY' lists them, or KEY=VALUE pairs such as epochs=2,train_subset=256 "
            "[default: the variant with the most finished runs]."
        ),
    ),
]


def selection(variant: str | None, sets: list[str] | None = None, epochs: int | None = None):
    """``--variant``, or the ``--set``/``--epochs`` a variant was run with, as ``variants.select`` takes them."""
    from ablate.config import parse_assignment
    from ablate.variants import VariantError, parse_selector

    if variant is not None and (sets or epochs is not None):
        raise VariantError("give --variant, or --set/--epochs, not both")
    if variant is not None:
        return parse_selector(variant)
    wanted = dict(parse_assignment(s) for s in sets or [])
    if epochs is not None:
        wanted["epochs"] = epochs
    return wanted or None


def axis_values(values: list[Any], most: int = 8) -> str:
    """An axis's values for a listing: all of them up to ``most``, else its ends and a count
    (a study may sweep a thousand learning rates; ``--json`` gives every value)."""
    if len(values) <= most:
        return str(values)
    return f"[{', '.join(map(repr, values[:3]))}, ..., {', '.join(map(repr, values[-2:]))}] ({len(values):,} values)"


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        fail(str(e))
    except StoreFailure as e:  # the environment's fault (a full disk): exit 1, as a failed point
        fail(str(e), code=1)


def print_json(obj: Any) -> None:
    def default(o):
        if isinstance(o, datetime):
            return o.isoformat() + "Z"  # stored as naive UTC
        raise TypeError(type(o).__name__)

    typer.echo(json.dumps(obj, indent=2, default=default))
