"""The one redaction: secrets out of every text the project shows (errors, logs, metadata, URLs).

A vendor that echoes a credential back rarely echoes it verbatim. ``mask(text, secrets)`` replaces each
secret (6 characters or more: shorter values would garble ordinary words and numbers) and its common
encodings with ``***``:

- the value in any letter case (an API key upper-cased by a vendor's error template);
- URL-encoded (``quote`` and ``quote_plus``);
- base64 (standard and URL-safe alphabets), at any of the three byte alignments, so the secret is
  found inside the encoding of a longer text too (``Basic base64(user:secret)``);
- hex (a digest of nothing, but some vendors hex-dump what they received).

``redact_url`` hides a URL's password (userinfo, ``password=`` parameters, and the value itself).
Every module that prints or logs a URL or a vendor's text goes through these two functions.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 6


def _base64_cores(secret: bytes) -> set[str]:
    """The part of base64 that is the same whatever bytes surround ``secret``, for each alignment."""
    cores: set[str] = set()
    for offset in range(3):
        padded = b"\x00" * offset + secret
        encoded = base64.b64encode(padded).decode().rstrip("=")
        # Characters that mix prefix bits or (at the end) unknown following bytes are dropped.
        start = -(-offset * 4 // 3) if offset else 0
        end = len(padded) * 4 // 3 if len(padded) % 3 == 0 else (len(padded) // 3) * 4
        core = encoded[start:end]
        if len(core) >= MIN_SECRET_LENGTH:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))  # the URL-safe alphabet
    return cores


@lru_cache(maxsize=256)
def _pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET_LENGTH:
            continue
        raw = secret.encode("utf-8", "surrogatepass")
        forms.update(
            {secret, quote(secret), quote(secret, safe=""), quote_plus(secret, safe=""), binascii.hexlify(raw).decode()}
        )
        forms.update(_base64_cores(raw))
    forms.discard(MASK)
    if not forms:
        return None
    # Longest first, so a longer form is masked whole before a shorter one inside it.
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(alternatives, re.IGNORECASE)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret and its encodings (see the module docstring) replaced by ``***``."""
    if not text:
        return text
    pattern = _pattern(frozenset(s for s in secrets if s))
    return text if pattern is None else pattern.sub(MASK, text)


def redact_url(url: str, password: str | None = None) -> str:
    """``url`` with any password replaced by ``***`` (userinfo, ``password=`` parameters, and ``password``)."""
    if not isinstance(url, str):
        return repr(url)
    out = url
    scheme, sep, rest = url.partition("://")
    if sep and not rest.startswith("/"):
        # userinfo ends at the LAST '@' before any query or fragment, so a password holding an
        # unescaped '@', ':' or '/' is still hidden whole.
        end = min([i for i in (rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
        at = rest.rfind("@", 0, end)
        if at >= 0:
            userinfo = rest[:at]
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":" + MASK
            out = f"{scheme}{sep}{userinfo}{rest[at:]}"
    out = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1" + MASK, out)
    if password and password != MASK:
        for secret in {password, quote(password, safe="")}:
            out = out.replace(secret, MASK)
    return out


__all__ = ["MASK", "MIN_SECRET_LENGTH", "mask", "redact_url"]
