"""The one redaction every error writer uses: tokens, keys, auth headers and signed URLs never survive."""

import pytest

from groundcap.credentials import redact

HF = "hf_" + "a1B2c3D4e5F6g7H8i9J0kLmN"


@pytest.mark.parametrize("text", [
    f"401 for url: handled request with Authorization: Bearer {HF}",
    f"headers={{'authorization': 'Bearer {HF}', 'user-agent': 'x'}}",
    f"token {HF} is invalid",
    f"https://user:{HF}@example.com/x.png",
    f"https://bucket.s3.amazonaws.com/x.png?X-Amz-Signature={HF}&X-Amz-Date=1",
    f"https://example.com/x.png?token={HF}",
])
def test_credential_shapes_are_masked(text):
    out = redact(text)
    assert HF not in out and "***" in out


def test_named_secret_and_env_secret_are_masked(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plain-secret-value")
    out = redact("echo: plain-secret-value and my-own-secret", "my-own-secret")
    assert "plain-secret-value" not in out and "my-own-secret" not in out


def test_ordinary_text_is_untouched():
    text = "cannot read: FileNotFoundError: [Errno 2] No such file or directory: 'images/a b.png'"
    assert redact(text) == text
