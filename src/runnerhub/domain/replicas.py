"""PostgreSQL replicas, pure: the primary's view of them (`pg_stat_replication`, how far
behind each is) and which one to reinitialise. No I/O.

Which replica to reinitialise: one whose PostgreSQL runs (Patroni reports it `running`)
but which has no WAL stream from the primary (it is missing from the primary's
`pg_stat_replication`) for `after_s` will not catch up by itself. The usual cause is that
the WAL it needs is gone (its slot given up past `max_slot_wal_keep_size`, or recycled
while it was down), and it asks for it again every few seconds, forever. So will one whose
PostgreSQL has failed to start, again and again, for `after_s`: a rewind cut short (its
source, the new primary, died during it) leaves a data directory that never starts, and
Patroni retries it forever. Patroni's reinitialise (a fresh base backup from the primary)
is the fix for both. A replica that is catching up *is* streaming and is left alone, as is
one that is only starting (a long recovery), stopped or already being rebuilt.

Only act on a consistent picture: one running leader, and the streaming list read on that
same leader. During a failover (no leader, a new leader, the list read elsewhere) nothing
is timed, so replicas that reconnect to a new primary are never mistaken for stalled ones.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LEADER_ROLES = ("leader", "master", "standby_leader")
# PostgreSQL is up on the member (Patroni 3 says `running`; later versions `streaming`,
# which they only say when it does, but the primary's view is what counts here).
UP_STATES = ("running", "streaming")
# PostgreSQL does not start: Patroni's states while it tries again and again ("starting"
# in between, which alone is no failure).
FAILING_STATES = ("start failed", "crashed", "restarting after failure")
RETRYING_STATES = (*FAILING_STATES, "starting")
# A replica whose last failed start is older than this (or than half the limit) while it
# is still starting is recovering, not failing: one crash, then a long crash recovery.
STILL_FAILING_S = 60.0
# A rebuild is under way: never ask for a second one.
REBUILDING_STATES = ("creating replica", "running custom bootstrap script")


# -- the primary's view of its replicas (pg_stat_replication) -------------------------


@dataclass(frozen=True)
class Replica:
    name: str  # application_name: Patroni sets it to the member's name
    address: str | None
    state: str  # streaming, catchup, backup, startup
    sync_state: str  # sync, quorum, potential, async
    write_lag_s: float | None
    flush_lag_s: float | None
    replay_lag_s: float | None
    replay_lag_bytes: int
    lagging: bool  # replay is further behind than the alert threshold


@dataclass(frozen=True)
class ReplicationStatus:
    server: str  # the server this was read on
    in_recovery: bool
    timeline: int | None
    replicas: list[Replica] = field(default_factory=list)

    @property
    def lagging(self) -> list[str]:
        return [r.name for r in self.replicas if r.lagging]

    @property
    def synchronous(self) -> list[str]:
        return [r.name for r in self.replicas if r.sync_state in ("sync", "quorum")]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lagging": self.lagging, "synchronous": self.synchronous}


def lag_seconds(measured: float | None, lag_bytes: int) -> float | None:
    """PostgreSQL clears the lag columns once a caught-up replica has nothing new to replay:
    no bytes behind then means no lag, not an unknown one."""
    if measured is not None:
        return measured
    return 0.0 if lag_bytes == 0 else None


def is_lagging(replay_lag_s: float | None, state: str, threshold_s: float) -> bool:
    """Behind by more than the threshold, or not streaming at all (catching up, starting)."""
    if state != "streaming":
        return True
    return replay_lag_s is not None and replay_lag_s > threshold_s


@dataclass(frozen=True)
class StandbyStatus:
    """A standby region's database as it sees itself: how far behind the other region it
    replays (measured by the newest transaction replayed: the active region's nodes write
    a heartbeat every second or so, so a quiet primary does not look like lag), and
    whether it streams or only replays the archive."""

    server: str
    replay_lag_s: float | None  # None: nothing replayed yet
    streaming: bool  # a WAL receiver is connected to the other region's primary
    receive_lsn: str | None
    replay_lsn: str | None


# -- Patroni's members, and replicas that stopped streaming ---------------------------


@dataclass(frozen=True)
class Member:
    name: str
    role: str
    state: str
    address: str | None  # host:port of its PostgreSQL
    api_url: str | None  # its Patroni REST API (the `api_url` of GET /cluster)
    timeline: int | None = None


@dataclass(frozen=True)
class PrimaryView:
    """What the primary said: who streams from it, and which server said it."""

    streaming: Collection[str]  # application names in pg_stat_replication
    server: str  # host:port, as the server names itself
    timeline: int | None

    def is_from(self, leader: Member) -> bool:
        # By address; failing that (Patroni may name hosts, PostgreSQL says its IP) by
        # timeline: a primary read with target_session_attrs=read-write on the leader's
        # timeline is the leader.
        return leader.address == self.server or (
            leader.timeline is not None and leader.timeline == self.timeline
        )


@dataclass(frozen=True)
class Stalled:
    member: Member
    for_s: float  # how long it has had no stream
    # Its PostgreSQL keeps failing to start, rather than running without a stream.
    failing_to_start: bool = False

    @property
    def reason(self) -> str:
        if self.failing_to_start:
            return f"PostgreSQL has failed to start again and again for {self.for_s:.0f} s"
        return f"no WAL stream from the primary for {self.for_s:.0f} s while running"


class StalledReplicas:
    """Times each running replica's absence from the primary's streaming list, and each
    replica's failing starts."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._since: dict[str, float] = {}  # running without a stream since
        # Failing to start: since when, and when it last failed.
        self._failing: dict[str, tuple[float, float]] = {}
        self._leader: str | None = None

    def stalled(self, now: float) -> dict[str, float]:
        """Every replica without a stream now, and for how long (for metrics)."""
        failing = {name: first for name, (first, _) in self._failing.items()}
        return {name: now - t for name, t in {**self._since, **failing}.items()}

    def observe(
        self, members: Sequence[Member] | None, primary: PrimaryView | None, now: float
    ) -> Stalled | None:
        """Patroni's members and the primary's view, read about now. Returns the replica
        to reinitialise, if one is due (at most one at a time)."""
        leaders = [m for m in members or () if m.role in LEADER_ROLES and m.state in UP_STATES]
        if members is None or primary is None or len(leaders) != 1:
            self._reset(None)
            return None
        [leader] = leaders
        if not primary.is_from(leader):
            self._reset(None)
            return None
        if leader.name != self._leader:
            self._reset(leader.name)
            return None
        streaming = primary.streaming
        replicas = [m for m in members if m.role not in LEADER_ROLES]
        if any(m.state in REBUILDING_STATES for m in replicas):
            self._since.clear()
            self._failing.clear()
            return None
        up = {m.name: m for m in replicas if m.state in UP_STATES}
        retrying = {m.name: m for m in replicas if m.state in RETRYING_STATES}
        for name in list(self._since):
            if name not in up or name in streaming:
                del self._since[name]
        recent = min(STILL_FAILING_S, self.after_s / 2)
        for name, (_, last) in list(self._failing.items()):
            if name not in retrying or now - last > recent:
                del self._failing[name]
        for name in up:
            if name not in streaming:
                self._since.setdefault(name, now)
        for name, m in retrying.items():
            if m.state in FAILING_STATES:  # "starting" alone starts no clock
                self._failing[name] = (self._failing.get(name, (now, now))[0], now)
        due = [(t, name, False) for name, t in self._since.items() if now - t >= self.after_s]
        due += [
            (first, name, True)
            for name, (first, _) in self._failing.items()
            if now - first >= self.after_s
        ]
        if not due:
            return None
        since, name, failing = min(due)
        # Timed afresh: it gets `after_s` to show the rebuild worked.
        if failing:
            self._failing[name] = (now, now)
        else:
            self._since[name] = now
        return Stalled((retrying if failing else up)[name], now - since, failing)

    def _reset(self, leader: str | None) -> None:
        self._since.clear()
        self._failing.clear()
        self._leader = leader


# -- the replication-lag chart: what a node writes of what it reads ---------------------


class LagMinutes:
    """Each replica's highest lag this minute, as far as this node has written it: a
    reading is worth writing when it opens a minute or exceeds what was written for it, so
    a node writes about one row a minute per replica however often it reads."""

    def __init__(self) -> None:
        self._written: dict[str, tuple[int, float]] = {}  # replica -> (minute, lag written)

    def due(self, minute: int, replicas: Sequence[Replica]) -> list[Replica]:
        """Of this reading (`minute`: whole minutes since the epoch), what to write."""
        out = []
        for r in replicas:
            seen = self._written.get(r.name)
            if seen is None or seen[0] != minute or _lag(r) > seen[1]:
                out.append(r)
        return out

    def written(self, minute: int, replicas: Sequence[Replica]) -> None:
        """`replicas` (what `due` gave) are in the database now."""
        for r in replicas:
            self._written[r.name] = (minute, _lag(r))


def _lag(r: Replica) -> float:
    return r.replay_lag_s if r.replay_lag_s is not None else 0.0
