"""`resc schema`: the JSON Schema of the config, for editors."""

from __future__ import annotations

import argparse

NAME = "schema"
HELP = "print the JSON Schema of config files (for editors: see the README)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    import json

    from resc.config.models import Config

    schema = Config.model_json_schema()
    rule = schema["$defs"]["Rule"]
    # The original's README spells `make` as `todo`, which resc accepts; pydantic lists
    # only the first alias, so an editor would flag such configs without this.
    rule["properties"]["todo"] = rule["properties"]["make"]
    rule["required"] = [name for name in rule["required"] if name != "make"]
    rule["oneOf"] = [{"required": ["make"]}, {"required": ["todo"]}]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "resc config",
        **{key: value for key, value in schema.items() if key != "title"},
    }
    print(json.dumps(schema, indent=2))
    return 0
