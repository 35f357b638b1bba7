"""`resc schema`: the config's JSON Schema, for editors."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import run_resc


def test_schema_describes_the_config_and_accepts_every_spelling_of_a_rules_fields():
    done = run_resc("schema")
    assert (done.returncode, done.stderr) == (0, "")
    schema = json.loads(done.stdout)
    assert (schema["$schema"], schema["title"], schema["required"]) == (
        "https://json-schema.org/draft/2020-12/schema",
        "resc config",
        ["redis", "watchers"],
    )
    assert {"redis", "listener_channel", "watchers", "tests"} <= set(schema["properties"])
    rule = schema["$defs"]["Rule"]
    properties = rule["properties"]
    assert list(properties) == [
        "name", "on", "fetch", "make", "on_regex", "fetchers", "makers", "todo"
    ]  # fmt: skip
    assert properties["on_regex"] == properties["on"]
    assert properties["fetchers"] == properties["fetch"]
    assert properties["makers"] == properties["todo"] == properties["make"]
    # Each field once, under one of its spellings: `on` and `make` required.
    assert "required" not in rule
    assert rule["allOf"] == [
        {"oneOf": [{"required": ["on"]}, {"required": ["on_regex"]}]},
        {"not": {"anyOf": [{"required": ["fetch", "fetchers"]}]}},
        {"oneOf": [{"required": ["make"]}, {"required": ["makers"]}, {"required": ["todo"]}]},
    ]
    assert rule["additionalProperties"] is False


def test_schema_into_a_pipe_already_closed_ends_quietly():
    process = subprocess.Popen(
        [sys.executable, "-m", "resc", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before resc writes a byte
    _, stderr = process.communicate(timeout=30)
    assert (process.returncode, stderr) == (0, "")
