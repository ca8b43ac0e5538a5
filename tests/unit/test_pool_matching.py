"""Label matching: subset rule, case-insensitive, most specific pool wins, hosted left alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runnerhub.domain.pools import Pool, is_github_hosted, match, serves

POOLS = [
    Pool.of("linux", ["self-hosted", "linux", "x64"]),
    Pool.of("gpu", ["self-hosted", "linux", "x64", "gpu"]),
    Pool.of("arm", ["self-hosted", "linux", "arm64"]),
]


def test_every_job_label_must_be_among_the_pools() -> None:
    assert match(["self-hosted", "linux"], POOLS).pool == "linux"
    assert match(["self-hosted", "gpu"], POOLS).pool == "gpu"
    assert match(["self-hosted", "arm64"], POOLS).pool == "arm"
    m = match(["self-hosted", "linux", "windows"], POOLS)
    assert m.pool is None and not m.hosted
    assert "windows" in (m.reason or "")


def test_labels_compare_case_insensitively() -> None:
    assert match(["Self-Hosted", "LINUX", "X64"], POOLS).pool == "linux"


def test_most_specific_pool_wins_then_config_order() -> None:
    twins = [Pool.of("a", ["self-hosted", "x"]), Pool.of("b", ["self-hosted", "x"])]
    assert match(["x"], twins).pool == "a"
    assert match(["self-hosted", "linux", "x64", "gpu"], POOLS).pool == "gpu"


def test_github_hosted_labels_are_left_to_github() -> None:
    for labels in (["ubuntu-latest"], ["windows-2022"], ["macos-14"]):
        m = match(labels, POOLS)
        assert m.hosted and m.pool is None
    assert not is_github_hosted(["self-hosted", "ubuntu-22.04"])


def test_a_job_without_labels_is_not_matched() -> None:
    assert match([], POOLS).pool is None


labels = st.lists(
    st.sampled_from(["self-hosted", "linux", "x64", "gpu", "arm64", "big"]), max_size=5
)


@given(labels)
def test_the_chosen_pool_serves_the_job_and_none_is_more_specific(job: list[str]) -> None:
    m = match(job, POOLS)
    if m.pool is None:
        assert not any(serves(p, job) for p in POOLS) or not job
        return
    chosen = next(p for p in POOLS if p.name == m.pool)
    assert serves(chosen, job)
    assert all(len(p.labels) >= len(chosen.labels) for p in POOLS if serves(p, job))
