"""Where every benchmark's figures go: one JSON file, its folder made if missing."""

import json
import os


def write_json(path: str | None, figures: dict) -> None:
    """Writes `figures` to `path` (indented JSON); no path, no file."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(figures, f, indent=2)
