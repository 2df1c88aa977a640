"""The Slack CLI's `get-manifest` hook: manifest.yml as JSON (slack-cli-hooks' own hook reads only
manifest.json), answered in the protocol the CLI asked for (message boundaries or plain stdout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from slack_cli_hooks.protocol import build_protocol

MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yml"


def manifest_json() -> str:
    return json.dumps(yaml.safe_load(MANIFEST.read_text(encoding="utf-8")))


if __name__ == "__main__":
    build_protocol(argv=sys.argv).respond(manifest_json())
