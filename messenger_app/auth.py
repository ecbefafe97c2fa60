"""Who is calling: a request's API key (401 without a valid one), and what it may reach."""
from flask import current_app, g, request
from sqlalchemy import Row

from .api import abort

# Besides the bare key (as the original service took it), these scheme words, in any case.
SCHEMES = {"token", "bearer", "api-key"}


def secret_from_header(header: str) -> str | None:
    parts = header.split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and parts[0].lower() in SCHEMES:
        return parts[1]
    return None


def authenticate() -> None:
    """Before every request under /ux/: a valid, unrevoked key, or 401. (A CORS preflight
    carries no key: it only asks what may be sent.)"""
    if request.method == "OPTIONS":
        return
    secret = secret_from_header(request.headers.get("Authorization", ""))
    key = secret and current_app.extensions["api_key_cache"].lookup(secret)
    if not key:
        abort(
            401,
            message="A valid API key is required in the Authorization header.",
            headers={"WWW-Authenticate": 'Token realm="messenger"'},
        )
    g.api_key = key


def current_key() -> Row:
    """The current request's key: its `id`, `organization` and `all_organizations`."""
    return g.api_key


def key_scope() -> str | None:
    """The organization whose messages the request's key reaches; None for an
    all-organizations key, which reaches every organization's."""
    key = current_key()
    return None if key.all_organizations else key.organization


def scope_label() -> str | None:
    """`key_scope()` for logs: "*" for an all-organizations key; None without a key."""
    if "api_key" not in g:
        return None
    scope = key_scope()
    return "*" if scope is None else scope


def require_organization_access(organization: str | None) -> None:
    """403 unless the current key may put a message in `organization`."""
    scope = key_scope()
    if scope is not None and organization != scope:
        abort(403, message="This API key can't write messages of another organization.")
