"""GitHub REST client: authentication, runners, JIT configs, runs, jobs, webhook deliveries."""

from runnerhub.github.auth import AppAuth, Auth, PatAuth, auth_from_settings
from runnerhub.github.client import GitHubClient
from runnerhub.github.errors import (
    AuthError,
    Conflict,
    Forbidden,
    GitHubError,
    NotFound,
    RateLimited,
    RunnerBusy,
    Unavailable,
    ValidationFailed,
)
from runnerhub.github.models import GitHubRunner, HookDelivery, HookTarget, JitConfig
from runnerhub.github.ratelimit import RateLimit

__all__ = [
    "AppAuth",
    "Auth",
    "AuthError",
    "Conflict",
    "Forbidden",
    "GitHubClient",
    "GitHubError",
    "GitHubRunner",
    "HookDelivery",
    "HookTarget",
    "JitConfig",
    "NotFound",
    "PatAuth",
    "RateLimit",
    "RateLimited",
    "RunnerBusy",
    "Unavailable",
    "ValidationFailed",
    "auth_from_settings",
]
