"""rigctl rules list|show ID: the rule set and each rule's documentation."""

from __future__ import annotations

import sys

from ..diagnostics import EXIT_USAGE


def register(sub) -> None:
    p = sub.add_parser("rules", help="list rules or show one rule's documentation")
    rs = p.add_subparsers(dest="rules_cmd", metavar="list|show")
    lp = rs.add_parser("list", help="list every rule with severity and summary")
    lp.add_argument("--format", choices=("text", "json"), default="text")
    sp = rs.add_parser("show", help="show a rule's documentation with failing and passing examples")
    sp.add_argument("rule_id")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..rules.engine import load_rules

    rules = load_rules()
    if args.rules_cmd == "show":
        r = rules.get(args.rule_id.split("[", 1)[0])
        if r is None:
            import difflib

            close = difflib.get_close_matches(args.rule_id, list(rules), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            sys.stderr.write(f"rigctl rules: unknown rule '{args.rule_id}'{hint}\n")
            return EXIT_USAGE
        sys.stdout.write(r.doc())
        return 0
    if getattr(args, "format", "text") == "json":
        import json

        items = [{"id": r.id, "severity": r.severity.value, "family": r.family, "tags": list(r.tags), "summary": r.summary}
                 for r in sorted(rules.values(), key=lambda r: (r.family, r.id))]
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return 0
    width = max(len(r) for r in rules)
    for r in sorted(rules.values(), key=lambda r: (r.family, r.id)):
        sys.stdout.write(f"{r.id:<{width}}  {r.severity.value:<7}  {r.family:<9}  {r.summary}\n")
    return 0
