"""GitHub-shaped error responses: `{"message", "documentation_url", "status"}`."""

from __future__ import annotations

import http
from typing import Any

from starlette.responses import JSONResponse

DOCS = "https://docs.github.com/rest"
RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
SECONDARY_DOCS = RATE_DOCS + "#about-secondary-rate-limits"

_MESSAGES = {
    401: "Bad credentials",
    404: "Not Found",
    422: "Validation Failed",
    500: "Server Error",
    502: "Server Error",
    503: "Service Unavailable",
    504: (
        "We couldn't respond to your request in time. Sorry about that. Please try "
        "resubmitting your request and contact us if the problem persists."
    ),
}


def default_message(status: int) -> str:
    if status in _MESSAGES:
        return _MESSAGES[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ApiError(Exception):
    """Raised anywhere in a handler; rendered as GitHub renders its errors."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        documentation_url: str = DOCS,
    ) -> None:
        self.status = status
        self.message = message or default_message(status)
        self.errors = errors
        self.headers = dict(headers or {})
        self.documentation_url = documentation_url
        super().__init__(f"{status} {self.message}")

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        body["documentation_url"] = self.documentation_url
        body["status"] = str(self.status)
        return body

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def not_found() -> ApiError:
    return ApiError(404)


def invalid(resource: str, field: str, message: str, code: str = "invalid") -> ApiError:
    """422 Validation Failed with one error entry, like GitHub's schema checks."""
    error = {"resource": resource, "field": field, "code": code, "message": message}
    return ApiError(422, errors=[error])
