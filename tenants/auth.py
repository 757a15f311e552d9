"""Bearer-token authentication for the HTTP API."""

from __future__ import annotations

from ninja.security import HttpBearer

from tenants.models import ApiToken
from tenants.tokens import authenticate_token


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str) -> ApiToken | None:
        api_token = authenticate_token(token)
        if api_token is not None:
            request.tenant = api_token.tenant
        return api_token
