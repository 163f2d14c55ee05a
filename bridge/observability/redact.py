"""The one secret masker: log lines (the logging filter) and Dust's error messages (dust/errors.py)
both go through `redact`, so a secret shape masked in one place is masked in the other.

What it masks, in this order:

* every configured secret (the Dust API key, store keys, the metrics key, the Redis password),
  longest first, wherever it appears -> `***`
* Dust API keys: `sk-` and the key characters after it, unless a letter or digit comes right
  before (so `x-zendesk-user-id`, `Risk-Analyst` or `task-list.pdf` stay readable in the audit log)
  -> `sk-***`. The bridge's own key is a configured secret, masked wherever it appears.
* the bridge's client keys: `dmb_` and at least 6 more key characters -> `dmb_***`
* bearer tokens: `Bearer <token>`, in any case (kept), up to whitespace, a quote, `,` or `;`
  -> `Bearer ***`
* `Authorization` / `X-API-Key` header values, after a `Bearer`/`Basic`/`Token`/`Digest` scheme
  when there is one: `Authorization: Basic ***`, `x-api-key: ***`
* URL passwords: `redis://user:***@host`
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_DUST_KEY = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]+")
_CLIENT_KEY = re.compile(r"\bdmb_[A-Za-z0-9_-]{6,}")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+")
_HEADER = re.compile(
    r"(?i)((?:authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)[^\s\"',}]+"
)
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret and every known secret shape masked."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _DUST_KEY.sub(f"sk-{MASK}", text)
    text = _CLIENT_KEY.sub(f"dmb_{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
