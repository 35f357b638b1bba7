"""`resc schema`: the JSON Schema of the config, for editors."""

from __future__ import annotations

import argparse
from itertools import combinations
from typing import Any

NAME = "schema"
HELP = "print the JSON Schema of config files (for editors: see the README)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _with_every_spelling(rule: dict[str, Any], spellings: dict[str, tuple[str, ...]]) -> None:
    """Let the Rule schema accept each field under all its spellings (pydantic lists only
    the first one, so an editor would flag `on_regex`, `makers` or `todo`), one at a time."""
    groups: list[dict[str, Any]] = []
    for first, *others in spellings.values():
        for other in others:
            rule["properties"][other] = rule["properties"][first]
        names = [first, *others]
        if first in rule.get("required", []):
            rule["required"].remove(first)
            if not rule["required"]:
                del rule["required"]
            groups.append({"oneOf": [{"required": [name]} for name in names]})
        else:
            pairs = [{"required": list(pair)} for pair in combinations(names, 2)]
            groups.append({"not": {"anyOf": pairs}})
    rule["allOf"] = groups


def main(args: argparse.Namespace) -> int:
    import json

    from resc.config.models import SPELLINGS, Config

    schema = Config.model_json_schema()
    _with_every_spelling(schema["$defs"]["Rule"], SPELLINGS)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "resc config",
        **{key: value for key, value in schema.items() if key != "title"},
    }
    print(json.dumps(schema, indent=2))
    return 0
