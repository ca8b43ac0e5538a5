"""What every end-to-end and chaos test checks after the fact (see
`runnerhub.cluster.workload.verify`), as assertions."""

from __future__ import annotations

from collections.abc import Sequence

from runnerhub.cluster.workload import query, sim_jobs, verify

__all__ = ["assert_each_ran_once", "query", "sim_jobs"]


def assert_each_ran_once(
    sim_url: str, dsn: str, ids: Sequence[int], deliveries_ok: bool = False
) -> None:
    v = verify(sim_url, dsn, ids)
    assert not v.not_completed, f"{len(v.not_completed)} jobs not completed: {v.not_completed[:10]}"
    assert not v.ran_twice, f"jobs run twice: {v.ran_twice}"
    assert not v.failed, f"jobs that did not succeed: {v.failed}"
    assert not v.overlapping_runners, f"two runners at once for jobs {v.overlapping_runners}"
    assert not v.names_reused, f"runner names that ran two jobs: {v.names_reused}"
    if deliveries_ok:
        assert not v.deliveries_failed, (
            f"{len(v.deliveries_failed)} deliveries not answered 2xx, e.g. "
            f"{v.deliveries_failed[:3]}"
        )


def assert_all_recorded(dsn: str, ids: Sequence[int]) -> None:
    """Every job GitHub was told (by a 2xx) we have is in PostgreSQL, completed: nothing
    acknowledged was lost to a database failover (I1)."""
    rows = query(dsn, "SELECT id, state FROM jobs WHERE id = ANY(%s)", list(ids))
    states = {int(r["id"]): r["state"] for r in rows}
    missing = [i for i in ids if i not in states]
    assert not missing, f"{len(missing)} acknowledged jobs missing from PostgreSQL: {missing[:10]}"
    open_ = [i for i in ids if states[i] != "completed"]
    assert not open_, f"{len(open_)} jobs not completed in PostgreSQL: {open_[:10]}"
