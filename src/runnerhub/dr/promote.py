"""`runnerhub dr promote`: make a standby region the active one (docs/dr.md).

Run with the configuration of one of the standby region's nodes. In order, each step safe
to repeat (a promotion interrupted half-way is finished by running it again):

1. refuse while the old region's primary still accepts writes (unless forced): two primaries
   would each take jobs;
2. promote the region's Patroni standby cluster (drop `standby_cluster` from its dynamic
   configuration) and wait until its database accepts writes;
3. start a new **era** in the region's etcd, above the era of the newest epoch the database
   holds: every epoch this region's leaders get is above every epoch the old region's etcd
   can issue, so an old-region leader that comes back is refused by the epoch fence (I4);
4. record the promotion in the audit trail;
5. re-point GitHub's webhooks at this region (`PATCH …/hooks/{id}/config`).

Then the region's nodes run with `node.role: active`: the first leader catches up with
GitHub (queued jobs) and the reconciler redelivers what failed while no region answered.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import psycopg
import structlog
from psycopg.rows import dict_row

from runnerhub.config import Settings
from runnerhub.github.client import GitHubClient
from runnerhub.github.errors import GitHubError
from runnerhub.github.models import HookTarget
from runnerhub.ha.dcs import StoreUnavailable
from runnerhub.ha.etcd import EtcdAccess, EtcdLeaderStore
from runnerhub.ha.leadership import era_of, next_era
from runnerhub.store import events, leadership

log = structlog.get_logger("runnerhub.dr")


class PromotionRefused(Exception):
    """Not promoted (or not wholly): the message says why and what to do."""


@dataclass
class PromotionReport:
    node: str
    era: int = 0
    previous_epoch: int | None = None
    old_primary: str | None = None  # where the standby cluster streamed from
    old_primary_writable: bool = False
    writable_after_s: float = 0.0
    hooks: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def promote(
    settings: Settings, webhook_url: str | None, force: bool = False, timeout_s: float = 60.0
) -> PromotionReport:
    """Promote the region `settings` (a standby node's configuration) belongs to."""
    if not settings.ha.enabled:
        raise PromotionRefused("ha.etcd_endpoints is empty: the region's etcd starts its era")
    patroni = _patroni_urls(settings)
    report = PromotionReport(settings.node.id)
    began = time.monotonic()
    standby = await _standby_cluster(settings, patroni)
    if standby is not None:
        host, port = standby.get("host"), standby.get("port")  # absent: archive replay only
        if host and port:
            report.old_primary = f"{host}:{port}"
            report.old_primary_writable = await _accepts_writes(settings, str(host), int(port))
        if report.old_primary_writable and not force:
            raise PromotionRefused(
                f"the active region's primary at {report.old_primary} still accepts writes: "
                "promoting now would leave two primaries taking jobs. Stop that region (or "
                "cut it off) first; --force promotes anyway, and its leader is then fenced "
                "by its epoch wherever it reaches this region's database"
            )
        await _drop_standby_cluster(settings, patroni)
    await _wait_writable(settings, timeout_s)
    report.writable_after_s = round(time.monotonic() - began, 3)
    report.previous_epoch, report.era = await _start_era(settings)
    await _record(settings, report)
    report.hooks = await _repoint_hooks(settings, webhook_url)
    log.info("region promoted", **report.as_dict())
    return report


def _patroni_urls(settings: Settings) -> list[str]:
    urls = [u.rstrip("/") for u in settings.health.patroni_urls]
    if not urls:
        raise PromotionRefused(
            "health.patroni_urls lists none of this region's Patroni members: "
            "the standby cluster is promoted through their REST API"
        )
    return urls


def _patroni_auth(settings: Settings) -> httpx.Auth | None:
    h = settings.health
    if h.patroni_username and h.patroni_password:
        return httpx.BasicAuth(h.patroni_username, h.patroni_password.get_secret_value())
    return None


async def _standby_cluster(settings: Settings, urls: list[str]) -> dict[str, Any] | None:
    """The `standby_cluster` section of the cluster's dynamic configuration (None: the
    cluster is no standby, e.g. a promotion run again)."""
    errors = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        for url in urls:
            try:
                r = await http.get(f"{url}/config")
                r.raise_for_status()
                section = r.json().get("standby_cluster")
                return dict(section) if isinstance(section, dict) else None
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                errors.append(f"{url}: {type(exc).__name__}: {exc}")
    raise PromotionRefused(f"no Patroni of this region answered: {'; '.join(errors)}")


async def _accepts_writes(settings: Settings, host: str, port: int) -> bool:
    """Whether the old region's primary answers as a primary (the roles are the same in
    both regions: they streamed in from there)."""
    dsn = settings.database.dsn.get_secret_value()
    try:
        async with await psycopg.AsyncConnection.connect(
            dsn, host=host, port=port, connect_timeout=3, target_session_attrs="any"
        ) as conn:
            cur = await conn.execute("SELECT pg_is_in_recovery()")
            row = await cur.fetchone()
            return row is not None and row[0] is False
    except psycopg.Error:
        return False


async def _drop_standby_cluster(settings: Settings, urls: list[str]) -> None:
    auth = _patroni_auth(settings) or httpx.USE_CLIENT_DEFAULT
    errors = []
    async with httpx.AsyncClient(timeout=10.0) as http:
        for url in urls:
            try:
                r = await http.patch(f"{url}/config", json={"standby_cluster": None}, auth=auth)
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {type(exc).__name__}")
                continue
            if r.status_code == 200:
                return
            errors.append(f"{url}: {r.status_code} {r.text.strip()[:200]}")
    raise PromotionRefused(f"Patroni did not take the new configuration: {'; '.join(errors)}")


async def _wait_writable(settings: Settings, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            async with await _primary(settings) as conn:
                await conn.execute("SELECT 1")
                return
        except psycopg.Error as exc:
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        await asyncio.sleep(0.2)
    raise PromotionRefused(f"the database did not accept writes within {timeout_s:g} s: {last}")


async def _start_era(settings: Settings) -> tuple[int | None, int]:
    """(the newest epoch the database holds, the era begun). Run again after a promotion,
    it begins no second era while this region's own leaders hold the newest epoch."""
    async with await _primary(settings) as conn:
        row = await leadership.current(conn)
    recorded = row.epoch if row else None
    ha = settings.ha
    store = EtcdLeaderStore(ha.etcd_endpoints, ha.key_prefix, ha.etcd_timeout_s, EtcdAccess.of(ha))
    try:
        current = await store.era()
        era = next_era(recorded, current)
        if recorded is not None and era_of(recorded) == current > 0:
            return recorded, current  # promoted already, and this region leads since
        await store.start_era(era)
    except (StoreUnavailable, ValueError) as exc:
        raise PromotionRefused(f"the region's etcd did not start a new era: {exc}") from None
    finally:
        await store.close()
    return recorded, era


async def _record(settings: Settings, report: PromotionReport) -> None:
    async with await _primary(settings) as conn, conn.transaction():
        await events.append(
            conn,
            settings.node.id,
            "region.promoted",
            "cluster",
            era=report.era,
            previous_epoch=report.previous_epoch,
            old_primary=report.old_primary,
            old_primary_writable=report.old_primary_writable,
        )


async def _primary(settings: Settings) -> psycopg.AsyncConnection[dict[str, Any]]:
    """The region's primary: a standby's DSN may list every member and take any."""
    return await psycopg.AsyncConnection.connect(
        settings.database.dsn.get_secret_value(),
        target_session_attrs="read-write",
        connect_timeout=5,
        row_factory=dict_row,
    )


async def _repoint_hooks(settings: Settings, url: str | None) -> list[dict[str, str]]:
    """Each configured hook now sends to `url`; a hook GitHub refused says why (the
    promotion stands: run it again, or change the hook by hand)."""
    if url is None:
        return []
    out = []
    async with GitHubClient.from_settings(settings.github) as github:
        for ref in settings.github.hooks:
            hook = HookTarget.from_ref(ref)
            name = f"{hook.kind}:{hook.owner}/{hook.hook_id}"
            try:
                out.append({"hook": name, "url": await github.update_hook_url(hook, url)})
            except GitHubError as exc:
                out.append({"hook": name, "error": str(exc)})
    return out
