"""Is the model/dataset hub reachable? Asked once, quickly, before any hub download is tried.

Offline, `datasets` and `transformers` retry for 30-80 s and print pages of HTTP errors before they
fail. One short look-up first (HF_HUB_OFFLINE, else resolving the hub's host name within a few
seconds) turns that into one line at once, naming the local alternative.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

LOOKUP_TIMEOUT_S = 3.0


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def unreachable_reason() -> str | None:
    """Why the hub cannot be reached (one phrase), or None when it may be."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    found: dict[str, bool] = {}
    lookup = threading.Thread(target=lambda: found.update(ok=_resolves(host)), daemon=True)
    lookup.start()
    lookup.join(LOOKUP_TIMEOUT_S)
    if not found.get("ok"):
        return f"the hub ({host}) cannot be reached from here"
    return None
