"""Every error answer under /api/ is JSON with `detail` (API.md), whoever made it.

The API's own handlers (console.api) answer in JSON; this middleware covers the rest:
django-ninja's 405 for a method a path does not take (plain text), and a 500 that
Django makes when something fails outside a view (an HTML page).
"""

from __future__ import annotations

from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse


class JSONErrorsUnderAPI:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith("/api/")
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return json_error(request, response)
        return response


def json_error(request: HttpRequest, response: HttpResponse) -> JsonResponse:
    status = response.status_code
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = response.get("Allow", "")
        message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif status == HTTPStatus.NOT_FOUND:
        message = f"no route for {request.path}"
    elif status >= 500:
        message = "internal error"
    else:
        message = response.reason_phrase.lower()
    answer = JsonResponse({"detail": message}, status=status)
    if response.has_header("Allow"):
        answer["Allow"] = response["Allow"]
    return answer
