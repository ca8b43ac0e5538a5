"""The GitHub simulator's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SimConfig:
    webhook_url: str | None = None
    webhook_secret: str = ""
    hook_id: int = 1
    repositories: list[str] = field(default_factory=list)  # "owner/name"
    organizations: list[str] = field(default_factory=list)
    pats: list[str] = field(default_factory=list)
    app_id: int | None = None
    app_public_key_pem: str | None = None
    installation_id: int | None = None
    token_ttl_s: float = 3600
    rate_limit: int = 5000  # requests per hour per token
    state_file: Path | None = None
    runner_heartbeat_timeout_s: float = 15
    webhook_timeout_s: float = 10
    webhook_workers: int = 8
    # Whom to trust for an https:// webhook URL (like GitHub's "SSL verification": on).
    # None: the system's CAs.
    webhook_ca: Path | None = None

    def __post_init__(self) -> None:
        for repo in self.repositories:
            owner, _, name = repo.partition("/")
            if not owner or not name or "/" in name:
                raise ValueError(f"repository {repo!r} is not of the form owner/name")
        if self.webhook_workers < 1:
            raise ValueError("webhook_workers must be at least 1")
        if self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1")
        if self.app_id is not None and not self.app_public_key_pem:
            raise ValueError("app_id needs app_public_key_pem to verify the App's JWTs")

    @property
    def app_configured(self) -> bool:
        return self.app_id is not None and self.installation_id is not None
