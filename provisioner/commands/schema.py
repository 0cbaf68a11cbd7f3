"""rigctl schema: the rig spec's JSON Schema, for editors (yaml-language-server)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("schema", help="print the rig spec JSON Schema")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def schema() -> dict:
    from ..spec.models import SPEC_VERSION, Rig

    s = Rig.model_json_schema()
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["$id"] = f"https://rigctl.invalid/schema/rig-v{SPEC_VERSION}.json"
    s["title"] = "rigctl rig spec"
    return s


def run(args) -> int:
    from .validate import emit

    emit(json.dumps(schema(), indent=2, sort_keys=True) + "\n", args.output)
    return 0
