"""``robobus schema``: JSON Schema of every public message."""

from __future__ import annotations

import json
from typing import Annotated

import msgspec
import typer

from robobus.schemas.contract import MESSAGE_TYPES


def schema(
    name: Annotated[str | None, typer.Argument(help="One message type; all when omitted")] = None,
) -> None:
    """Print the JSON Schema of the message types, for clients in other languages."""
    if name is not None and name not in MESSAGE_TYPES:
        raise typer.BadParameter(f"unknown message {name!r}; known: {', '.join(MESSAGE_TYPES)}")
    types = [MESSAGE_TYPES[name]] if name else list(MESSAGE_TYPES.values())
    _, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": components}
    if name:
        doc["$ref"] = f"#/$defs/{name}"
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
