"""rigctl schema: the rig spec's JSON Schema, for editors (yaml-language-server) and CI.

The same document is committed as `schema/rig.schema.json` (a meta-test keeps it equal to
this output), so a spec can start with
`# yaml-language-server: $schema=<relative path>/schema/rig.schema.json`.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("schema", help="print the rig spec JSON Schema")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


SCHEMA_ID_PREFIX = "urn:rigctl:rig-spec:v"
SCHEMA_FILE = "schema/rig.schema.json"  # relative to the repository root


def schema() -> dict:
    from ..spec.models import SPEC_VERSION, Rig

    s = Rig.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    # The project has no web address of its own, so the id is a URN: stable, a valid
    # absolute URI as JSON Schema requires, and never mistaken for a place to fetch from.
    # It changes only with the spec's `version`.
    s["$id"] = f"{SCHEMA_ID_PREFIX}{SPEC_VERSION}"
    s["title"] = "rigctl rig spec"
    return s


def schema_text() -> str:
    """The schema exactly as `rigctl schema` prints it (and as schema/rig.schema.json holds it)."""
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def run(args) -> int:
    from .validate import emit

    emit(schema_text(), args.output)
    return 0
