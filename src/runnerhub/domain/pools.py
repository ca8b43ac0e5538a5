"""Which pool serves a job: pure label matching.

GitHub hands a job to a self-hosted runner when every one of the job's labels is among the
runner's labels, compared case-insensitively. A pool serves a job on the same rule; when
several do, the most specific (fewest labels beyond the job's) wins, then the first listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Labels of GitHub-hosted runner images; a job asking for one without `self-hosted` is
# GitHub's to run, not ours.
_HOSTED = re.compile(r"^(ubuntu|windows|macos)-[a-z0-9.\-]+$")


@dataclass(frozen=True)
class Pool:
    name: str
    labels: frozenset[str]  # lower-cased
    min_idle: int = 0
    max_runners: int = 10

    @classmethod
    def of(cls, name: str, labels: Iterable[str], min_idle: int = 0, max_runners: int = 10) -> Pool:
        return cls(name, normalise(labels), min_idle, max_runners)


@dataclass(frozen=True)
class Match:
    pool: str | None
    hosted: bool
    reason: str | None  # why no pool serves it, for the job's waiting reason (I6)


def normalise(labels: Iterable[str]) -> frozenset[str]:
    return frozenset(label.strip().lower() for label in labels)


def is_github_hosted(labels: Iterable[str]) -> bool:
    wanted = normalise(labels)
    return "self-hosted" not in wanted and any(_HOSTED.match(label) for label in wanted)


def serves(pool: Pool, labels: Iterable[str]) -> bool:
    return normalise(labels) <= pool.labels


def match(labels: Sequence[str], pools: Sequence[Pool]) -> Match:
    if is_github_hosted(labels):
        return Match(None, True, "GitHub-hosted labels: GitHub runs this job, not RunnerHub")
    wanted = normalise(labels)
    if not wanted:
        return Match(None, False, "the job has no labels")
    candidates = [(len(p.labels - wanted), i, p) for i, p in enumerate(pools) if wanted <= p.labels]
    if not candidates:
        shown = ", ".join(sorted(wanted))
        return Match(None, False, f"no pool has all of the job's labels [{shown}]")
    return Match(min(candidates, key=lambda c: (c[0], c[1]))[2].name, False, None)
