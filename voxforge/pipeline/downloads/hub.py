"""The Hugging Face Hub as huggingface_hub sees it: endpoint, file URLs, token, and what a refusal means.

Every Hub download goes to the endpoint named by ``HF_ENDPOINT`` (huggingface_hub's own rule: the
variable, trailing ``/`` removed, default ``https://huggingface.co``), so a mirror or a test server can
stand in. URLs are built by huggingface_hub's ``hf_hub_url``. The token (``HF_TOKEN`` or the saved
login, via ``huggingface_hub.get_token``) is sent only to that endpoint's origin and never written
anywhere: :func:`redact` scrubs it from every message this package produces.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def hub_endpoint() -> str:
    """The Hub's base URL, read when asked (so a changed ``HF_ENDPOINT`` is honoured by the next run)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def hub_file_url(repo_id: str, filename: str, revision: str = "main", repo_type: str = "dataset",
                 endpoint: str | None = None) -> str:
    """``{endpoint}/datasets/{repo}/resolve/{revision}/{filename}``, quoted as huggingface_hub quotes it."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=endpoint or hub_endpoint())


def hub_repo_page(repo_id: str, repo_type: str = "dataset", endpoint: str | None = None) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{endpoint or hub_endpoint()}/{prefix}{repo_id}"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def hub_token() -> str | None:
    """The user's token: ``HF_TOKEN`` or the saved login (``hf auth login``); None when there is none."""
    from huggingface_hub import get_token

    return get_token()


def auth_headers(url: str, hub_origin: str | None) -> dict[str, str]:
    """An Authorization header for requests to the Hub's own origin only (never to a CDN or other host)."""
    if not hub_origin or origin(url) != hub_origin.lower():
        return {}
    token = hub_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def access_refused_message(status: int, repo_id: str | None, hub_origin: str) -> str:
    """What a 401/403 from the Hub means and what to do about it."""
    page = hub_repo_page(repo_id, endpoint=hub_origin) if repo_id else hub_origin
    if hub_token() is None:
        return (f"the Hub refused access (HTTP {status}) and no Hugging Face token was found: request access at "
                f"{page}, then log in with `hf auth login` or set HF_TOKEN")
    return (f"the Hub refused access (HTTP {status}) with the token given: request access at {page} "
            "(gated datasets need the owner's approval) and check that the token can read it")


def redact(text: str) -> str:
    """``text`` without the user's token (in any form we might have echoed it)."""
    text = _TOKEN_PATTERN.sub("hf_***", str(text))
    try:
        token = hub_token()
    except Exception:  # a broken login file must not hide the message being redacted
        token = os.environ.get("HF_TOKEN")
    if token and len(token) >= 4:
        text = text.replace(token, "***")
    return text
