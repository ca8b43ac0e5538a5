"""What every end-to-end and chaos test checks after the fact (see
`runnerhub.dev.cluster.workload.verify`), as assertions."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from runnerhub.dev.cluster.workload import Verdict, query, sim_jobs, verify

__all__ = [
    "EventWatcher",
    "assert_each_ran_once",
    "check_status",
    "ended_incident",
    "health_of",
    "query",
    "sim_jobs",
]


def assert_each_ran_once(
    sim_url: str, dsn: str, ids: Sequence[int], deliveries_ok: bool = False
) -> Verdict:
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
    return v


def assert_all_recorded(dsn: str, ids: Sequence[int]) -> None:
    """Every job GitHub was told (by a 2xx) we have is in PostgreSQL, completed: nothing
    acknowledged was lost to a database failover (I1)."""
    rows = query(dsn, "SELECT id, state FROM jobs WHERE id = ANY(%s)", list(ids))
    states = {int(r["id"]): r["state"] for r in rows}
    missing = [i for i in ids if i not in states]
    assert not missing, f"{len(missing)} acknowledged jobs missing from PostgreSQL: {missing[:10]}"
    open_ = [i for i in ids if states[i] != "completed"]
    assert not open_, f"{len(open_)} jobs not completed in PostgreSQL: {open_[:10]}"


class EventWatcher:
    """A dashboard: follows `GET /api/v1/events/stream` (through HAProxy) in a thread, and
    reconnects with `Last-Event-ID` whenever the stream breaks, as an EventSource does."""

    def __init__(self, api_url: str, token: str, dsn: str, kinds: Sequence[str] = ()) -> None:
        self.url = f"{api_url}/api/v1/events/stream"
        self.dsn = dsn
        # The newest event when the stream was first open: everything after it must show.
        self.baseline: int | None = None
        self.params = [("kind", k) for k in kinds]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.ids: list[int] = []
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="event-watcher", daemon=True)

    def __enter__(self) -> EventWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _follow(self) -> None:
        while not self._stop.is_set():
            headers = dict(self.headers)
            if self.ids:
                headers["Last-Event-ID"] = str(max(self.ids))
            try:
                with httpx.stream(
                    "GET", self.url, params=self.params, headers=headers, timeout=10
                ) as r:
                    if r.status_code != 200:
                        self._stop.wait(0.5)
                        continue
                    self.connections += 1
                    for line in r.iter_lines():
                        if self.baseline is None:  # subscribed: the first line is sent after
                            rows = query(self.dsn, "SELECT coalesce(max(id), 0) AS id FROM events")
                            self.baseline = int(rows[0]["id"])
                        if line.startswith("id: "):
                            self.ids.append(int(line[4:]))
                        if self._stop.is_set():
                            return
            except httpx.HTTPError:
                self._stop.wait(0.2)

    def missing(self, kind_prefix: str) -> list[int]:
        """Events of that kind written since the stream opened that it has not shown."""
        if self.baseline is None:
            return [-1]
        rows = query(
            self.dsn,
            "SELECT id FROM events WHERE id > %s AND kind LIKE %s ORDER BY id",
            self.baseline,
            kind_prefix + "%",
        )
        seen = set(self.ids)
        return [int(r["id"]) for r in rows if int(r["id"]) not in seen]


def health_of(url: str) -> dict[str, Any] | None:
    """A node's /health (the summary anyone may read), or None when it does not answer."""
    try:
        return dict(httpx.get(f"{url}/health", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return None


def check_status(urls: Iterable[str], check: str) -> list[str | None]:
    """Each node's status for one health check (None: no answer, or no such check)."""
    out: list[str | None] = []
    for url in urls:
        body = health_of(url)
        out.append(body["checks"].get(check, {}).get("status") if body else None)
    return out


def incidents(api_url: str, token: str, component: str) -> list[dict[str, Any]]:
    """The cluster's incident records for a component (newest first); [] if unreachable."""
    try:
        r = httpx.get(
            f"{api_url}/api/v1/incidents",
            params={"component": component},
            headers={"Authorization": f"Bearer {token}"},
            timeout=3,
        )
        return list(r.json()["items"]) if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def ended_incident(
    api_url: str, token: str, component: str, kind: str, after: float
) -> dict[str, Any] | None:
    """The newest incident of that component and kind detected after `after` (Unix time)
    and already over, if any."""
    from datetime import datetime

    for i in incidents(api_url, token, component):
        detected = datetime.fromisoformat(i["detected_at"]).timestamp()
        if i["kind"] == kind and detected >= after and i["recovered_at"]:
            return i
    return None
