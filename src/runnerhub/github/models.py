"""What the GitHub client takes and returns: runners, JIT configs, webhook deliveries.

``from_json`` raises KeyError/TypeError/ValueError on a malformed body; the client turns
those into a GitHubError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from runnerhub.config import HookRef


@dataclass(frozen=True)
class GitHubRunner:
    id: int
    name: str
    status: str  # "online" or "offline"
    busy: bool
    labels: tuple[str, ...]
    os: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GitHubRunner:
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            status=str(data.get("status") or ""),
            busy=bool(data.get("busy", False)),
            labels=tuple(str(label["name"]) for label in data.get("labels") or ()),
            os=str(data.get("os") or ""),
        )


@dataclass(frozen=True)
class JitConfig:
    """A just-in-time runner registration; the encoded config is a one-use secret."""

    runner: GitHubRunner
    encoded_jit_config: str = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JitConfig:
        encoded = data["encoded_jit_config"]
        if not isinstance(encoded, str) or not encoded:
            raise ValueError("encoded_jit_config is not a non-empty string")
        return cls(runner=GitHubRunner.from_json(data["runner"]), encoded_jit_config=encoded)


def parse_time(value: str) -> datetime:
    """GitHub's ISO 8601 times (``2024-05-01T12:00:00Z``), always timezone-aware."""
    when = datetime.fromisoformat(value)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class HookDelivery:
    id: int
    guid: str
    delivered_at: datetime
    redelivery: bool
    status: str
    status_code: int
    event: str
    action: str | None

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HookDelivery:
        action = data.get("action")
        return cls(
            id=int(data["id"]),
            guid=str(data["guid"]),
            delivered_at=parse_time(str(data["delivered_at"])),
            redelivery=bool(data.get("redelivery", False)),
            status=str(data["status"]),
            status_code=int(data.get("status_code") or 0),
            event=str(data["event"]),
            action=str(action) if action is not None else None,
        )


@dataclass(frozen=True)
class HookTarget:
    """A webhook whose deliveries can be listed: the GitHub App's, a repository's or an org's."""

    kind: Literal["app", "repo", "org"]
    owner: str | None  # "owner/name" for a repository, the login for an organization
    hook_id: int | None

    def __post_init__(self) -> None:
        if self.kind == "app":
            if self.owner is not None or self.hook_id is not None:
                raise ValueError("the App hook has no owner and no hook id")
            return
        if not self.owner or self.hook_id is None:
            raise ValueError(f"a {self.kind} hook needs an owner and a hook id")
        if (self.kind == "repo") != ("/" in self.owner):
            raise ValueError(f"{self.owner!r} is not a valid owner for a {self.kind} hook")

    @classmethod
    def app(cls) -> HookTarget:
        return cls("app", None, None)

    @classmethod
    def repo(cls, repository: str, hook_id: int) -> HookTarget:
        return cls("repo", repository, hook_id)

    @classmethod
    def org(cls, organization: str, hook_id: int) -> HookTarget:
        return cls("org", organization, hook_id)

    @classmethod
    def from_ref(cls, ref: HookRef) -> HookTarget:
        if ref.repository is not None:
            return cls.repo(ref.repository, ref.hook_id)
        assert ref.organization is not None  # HookRef validates exactly one owner
        return cls.org(ref.organization, ref.hook_id)


def split_repository(repository: str) -> tuple[str, str]:
    owner, sep, name = repository.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ValueError(f"{repository!r} is not of the form owner/name")
    return owner, name


def scope_path(scope: str) -> tuple[str, dict[str, str]]:
    """``repo:owner/name`` or ``org:name`` → the path prefix template and its parameters."""
    kind, sep, rest = scope.partition(":")
    if sep and kind == "repo":
        owner, repo = split_repository(rest)
        return "/repos/{owner}/{repo}", {"owner": owner, "repo": repo}
    if sep and kind == "org" and rest and "/" not in rest:
        return "/orgs/{org}", {"org": rest}
    raise ValueError(f"{scope!r} is not a runner scope ('repo:owner/name' or 'org:name')")
