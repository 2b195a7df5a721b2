"""URI options: a source's query values converted by type, with keyword options on top."""
from __future__ import annotations

import re
from typing import Any, Callable, Dict
from urllib.parse import parse_qsl, urlsplit

from ...errors import EdgeFpnError

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def query_options(uri: str, allowed: Dict[str, Callable[[str], Any]], options: Dict[str, Any]) -> Dict[str, Any]:
    """URI query values converted by type, then explicit keyword options on top."""
    values: Dict[str, Any] = {}
    query = urlsplit(uri).query
    for key, text in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise EdgeFpnError(f"source {uri!r} has an unknown option {key!r}; known options: {', '.join(sorted(allowed))}")
        try:
            values[key] = allowed[key](text)
        except ValueError:
            raise EdgeFpnError(f"source {uri!r}: option {key}={text!r} is not a valid value") from None
    for key, value in options.items():
        if key not in allowed and value is not None:
            raise EdgeFpnError(f"source {uri!r} has no option {key!r}; known options: {', '.join(sorted(allowed))}")
        if value is not None:
            values[key] = value
    return values


def parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on", ""):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def parse_fourcc(text: str) -> str:
    if len(text) != 4:
        raise ValueError(text)
    return text.upper()

