"""`key=value[,key=value…]` on an experiment's command line → settings that replace a config's fields.

Values are Python literals (`20`, `0.5`, `True`, `'kl'`); the scripts hand the pairs to `recipe_for` (gzsq
presets) or `dataclasses.replace` (ReconstructConfig), which reject unknown names.
"""

from __future__ import annotations

import ast


def parse_overrides(text: str) -> tuple[tuple[str, object], ...]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"expected key=value, got {item!r}")
        try:
            pairs.append((key.strip(), ast.literal_eval(value.strip())))
        except (ValueError, SyntaxError):
            raise SystemExit(f"{key.strip()}: {value.strip()!r} is not a number, True/False or a quoted string") from None
    return tuple(pairs)
