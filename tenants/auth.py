"""Bearer-token authentication for the HTTP API, and what a token may do."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import HttpBearer

from lib import logs
from tenants.models import ApiToken
from tenants.tokens import authenticate_token


class TokenAuth(HttpBearer):
    """`Authorization: Bearer sw_…`. The token is never logged, stored or echoed."""

    def authenticate(self, request, token: str) -> ApiToken | None:
        api_token = authenticate_token(token)
        if api_token is not None:
            request.tenant = api_token.tenant
            logs.bind(tenant=api_token.tenant_id)
        return api_token


def require_write(request: HttpRequest) -> None:
    """Refuse a read-only token (403): it may look, and validate code, but not change."""
    if request.auth.read_only:
        raise HttpError(403, "this token is read-only")
