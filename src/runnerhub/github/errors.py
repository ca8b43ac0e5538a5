"""Errors from GitHub, each worded as one line an operator can act on.

An error names the method and the endpoint *template* (``/repos/{owner}/{repo}/...``),
never a full URL, a header or a request body, so it is safe to log and to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

_MAX_MESSAGE = 300


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


class GitHubError(Exception):
    """A GitHub API call failed; ``status`` is None when no response arrived."""

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = _one_line(message)
        self.status = status
        self.method = method
        self.endpoint = endpoint
        self.attempts = attempts

    def _detail(self) -> str:
        return self.message

    def __str__(self) -> str:
        where = (
            f"GitHub {self.method} {self.endpoint}" if self.method and self.endpoint else "GitHub"
        )
        parts = []
        reason = ""
        if self.status is not None:
            reason = httpx.codes.get_reason_phrase(self.status)
            parts.append(f"{self.status} {reason}".rstrip())
        detail = self._detail()
        if detail and detail.lower() != reason.lower():
            parts.append(detail)
        text = ": ".join(parts) or "failed"
        suffix = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
        return f"{where}: {text}{suffix}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class AuthError(GitHubError):
    """401, bad credentials, or authentication that is misconfigured."""


class Forbidden(AuthError):
    """403 that is not a rate limit: the token or App lacks a permission."""


class NotFound(GitHubError):
    """404."""


class Conflict(GitHubError):
    """409, e.g. a runner of that name already exists."""


class ValidationFailed(GitHubError):
    """422; ``errors`` is GitHub's list of what was wrong."""

    def __init__(
        self,
        message: str = "",
        *,
        errors: Sequence[Any] = (),
        status: int | None = 422,
        method: str | None = None,
        endpoint: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(
            message, status=status, method=method, endpoint=endpoint, attempts=attempts
        )
        self.errors: list[Any] = list(errors)

    def _detail(self) -> str:
        described = [_describe_error(e) for e in self.errors]
        summary = "; ".join(d for d in described if d)
        if not summary:
            return self.message
        return _one_line(f"{self.message} [{summary}]" if self.message else summary)


class RunnerBusy(ValidationFailed):
    """422 on deleting a runner: it is running a job."""


class RateLimited(GitHubError):
    """GitHub refused for a rate limit, or we did not call because it would.

    ``retry_at`` is a time on the client's monotonic clock; ``reset_at`` is when the
    primary window resets (wall clock), when known.
    """

    def __init__(
        self,
        message: str = "",
        *,
        retry_at: float,
        reset_at: datetime | None = None,
        resource: str | None = None,
        secondary: bool = False,
        status: int | None = None,
        method: str | None = None,
        endpoint: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(
            message, status=status, method=method, endpoint=endpoint, attempts=attempts
        )
        self.retry_at = retry_at
        self.reset_at = reset_at
        self.resource = resource
        self.secondary = secondary


class Unavailable(GitHubError):
    """5xx, or no response at all (after the retries that were safe)."""


def no_response(exc: Exception) -> str:
    """Why no answer came: the exception type and its short text (no URL, no headers)."""
    text = _one_line(str(exc))[:120]
    return (
        f"no response ({type(exc).__name__}: {text})"
        if text
        else f"no response ({type(exc).__name__})"
    )


def _describe_error(err: Any) -> str:
    if isinstance(err, str):
        return err
    if not isinstance(err, dict):
        return ""
    if isinstance(err.get("message"), str):
        return str(err["message"])
    field = err.get("field")
    code = err.get("code")
    return ": ".join(str(p) for p in (field, code) if p)
