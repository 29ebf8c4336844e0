"""The JSON Schema of one output record, generated from the result types (never written by hand).

``python -m scanner.schema`` (or ``fingerprint schema``) prints it; the copy shipped in
``scanner/data/result.schema.json`` is regenerated with ``python -m scanner.schema --write`` and a
test checks that it matches the types.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from scanner.results import ScanResult

SCHEMA_PATH = Path(__file__).parent / "data" / "result.schema.json"


def _normalize(node: Any) -> Any:
    """The same schema text whichever msgspec is installed: ``description``s taken from docstrings
    as :func:`inspect.cleandoc` leaves them (msgspec 0.23 does it, older versions keep the
    indentation) and ``anyOf`` alternatives in one order (their order means nothing; msgspec
    versions list ``null`` first or last)."""
    if isinstance(node, dict):
        out = {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _normalize(v)
               for k, v in node.items()}
        if isinstance(out.get("anyOf"), list):
            out["anyOf"] = sorted(out["anyOf"], key=lambda alt: json.dumps(alt, sort_keys=True))
        return out
    if isinstance(node, list):
        return [_normalize(v) for v in node]
    return node


def schema_json() -> str:
    """The schema of a :class:`ScanResult` (one JSON-lines record) as indented JSON text."""
    schema = _normalize(msgspec.json.schema(ScanResult))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "portproof result record"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    text = schema_json()
    if "--write" in sys.argv[1:]:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
