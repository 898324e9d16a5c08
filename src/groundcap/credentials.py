"""One redaction for every message groundcap writes or prints: no token, key or authorization header survives.

Servers and proxies echo request headers into their errors, and fsspec/huggingface_hub put URLs with
signed query strings into exception text; every writer of an error (rejects tables, CLI messages,
VLM replies, publish failures) passes it through :func:`redact` first.
"""

from __future__ import annotations

import os
import re

MASK = "***"
# env vars whose values are credentials wherever they turn up in a message
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN")
_PATTERNS = (
    # Authorization / Proxy-Authorization / X-Api-Key / Cookie header lines, whatever their scheme
    (re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|cookie|set-cookie)(\s*[:=]\s*)"
                r"(['\"]?)[^\r\n'\",}]+"), rf"\1\2\3{MASK}"),
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), MASK),                                  # Hugging Face tokens
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),                                # OpenAI-style keys
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),                          # AWS access key ids
    # credentials in URLs: user:password@host and signed or keyed query parameters
    (re.compile(r"(?i)(\w+://)[^/\s:@]+:[^/\s@]+@"), rf"\1{MASK}@"),
    (re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey|key|sig|signature|x-amz-signature|"
                r"x-amz-credential|x-amz-security-token|x-goog-signature|sv|se)=)[^&\s'\"]+"), rf"\1{MASK}"),
)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with the given secrets, the values of :data:`SECRET_ENV` and anything shaped like a
    credential replaced by ``***``."""
    known = [s for s in (*secrets, *(os.environ.get(name) for name in SECRET_ENV)) if s and len(s) >= 4]
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def failure(what: str, exc: BaseException, *secrets: str | None) -> str:
    """One line saying that ``what`` failed and why, holding no credential: remote errors echo request
    headers and signed URLs, and span lines (the Hub's add a help link and the server's body)."""
    return redact(" ".join(f"{what} failed: {type(exc).__name__}: {exc}".split()), *secrets)


def url_secrets(url: str) -> tuple[str, ...]:
    """The credential a filesystem sends for ``url`` that :func:`redact` cannot find by itself: an ``hf://``
    one's token, which may come from the token file rather than HF_TOKEN."""
    if not url.startswith("hf://"):
        return ()
    from huggingface_hub import get_token

    return (get_token() or "",)
