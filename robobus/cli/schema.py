"""``robobus schema``: JSON Schema of every public message, or the AsyncAPI document."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from robobus import __version__
from robobus.cli.common import PrefixOpt
from robobus.schemas.topics import DEFAULT_PREFIX


def schema(
    name: Annotated[str | None, typer.Argument(help="One message type; all when omitted")] = None,
    asyncapi: Annotated[bool, typer.Option(
        "--asyncapi", help="Print the AsyncAPI 3.0 document of the whole bus instead")] = False,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Print the JSON Schema of the message types and the topic -> type map, for clients in
    other languages (--asyncapi: channels, messages, retain and QoS as one AsyncAPI document)."""
    from robobus.asyncapi import document, payload_schemas, topic_table

    if asyncapi:
        if name is not None:
            raise typer.BadParameter("--asyncapi prints the whole bus; leave NAME out")
        typer.echo(json.dumps(document(prefix), indent=2))
        return
    defs = payload_schemas("#/$defs/{name}")
    if name is not None and name not in defs:
        raise typer.BadParameter(f"unknown message {name!r}; known: {', '.join(defs)}")
    doc: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                           "title": "robobus messages", "version": __version__}
    if name:
        doc["$ref"] = f"#/$defs/{name}"
    else:
        doc["topics"] = topic_table(prefix)
    doc["$defs"] = defs
    typer.echo(json.dumps(doc, indent=2))


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
