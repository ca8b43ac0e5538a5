"""etcd with client TLS (certificates both ways) and authentication (users and roles), as
the settings `ha.etcd_*` describe: the leader store elects with the right user and client
certificate, and is refused without credentials, with a user of another prefix, over
plain gRPC and without a client certificate. The health check reads the members over TLS.
Members talk to each other over TLS, with certificates of the same CA."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runnerhub.config import HASettings
from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.ha.dcs import StoreUnavailable
from runnerhub.ha.etcd import EtcdAccess, EtcdLeaderStore, MemberStatusReader
from runnerhub.health import checks

PASSWORD = "runnerhub-etcd-pw-0123"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    base = tmp_path_factory.mktemp("etcd-auth")
    etcd = LocalEtcd(base / "etcd", members=1, tls=LocalCA(base / "ca"))
    etcd.start()
    try:
        etcd.enable_auth(
            {"runnerhub": (["/runnerhub/"], PASSWORD), "other": (["/other/"], "other-pw-0123")}
        )
        yield etcd
    finally:
        etcd.destroy()


def settings(etcd: LocalEtcd, **overrides: object) -> HASettings:
    assert etcd.tls is not None
    client = etcd.tls.client("runnerhub-node")
    fields: dict[str, object] = {
        "etcd_endpoints": etcd.endpoints,
        "etcd_username": "runnerhub",
        "etcd_password": PASSWORD,
        "etcd_ca_file": etcd.tls.ca.cert,
        "etcd_cert_file": client.cert,
        "etcd_key_file": client.key,
    }
    fields.update(overrides)
    return HASettings.model_validate({k: v for k, v in fields.items() if v is not None})


async def campaign(ha: HASettings) -> None:
    store = EtcdLeaderStore(ha.etcd_endpoints, "/runnerhub", 3.0, EtcdAccess.of(ha))
    try:
        term = await store.campaign("node-1", None, 2)
        assert term is not None
        record, _ = await store.leader()
        assert record is not None and record.node == "node-1"
        await store.resign(term)
    finally:
        await store.close()


async def test_the_right_user_and_certificate_elect(secured: LocalEtcd) -> None:
    await campaign(settings(secured))


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"etcd_username": None, "etcd_password": None}, "no user"),
        ({"etcd_username": "other", "etcd_password": "other-pw-0123"}, "another prefix's"),
        ({"etcd_password": "wrong-password-0123"}, "a wrong password"),
        ({"etcd_cert_file": None, "etcd_key_file": None}, "no client certificate"),
        (
            {"etcd_ca_file": None, "etcd_cert_file": None, "etcd_key_file": None},
            "plain gRPC",
        ),
    ],
)
async def test_anything_less_is_refused(
    secured: LocalEtcd, overrides: dict[str, object], why: str
) -> None:
    with pytest.raises(StoreUnavailable):
        await campaign(settings(secured, **overrides))
    assert secured.etcdctl("get", "--prefix", "/runnerhub/").strip() == "", why


async def test_the_health_check_reads_the_members_over_tls(secured: LocalEtcd) -> None:
    ha = settings(secured)
    reader = MemberStatusReader(EtcdAccess.of(ha), 3.0)
    try:
        outcome = await checks.etcd(ha.etcd_endpoints, status=reader)()
        assert outcome.status == "ok", outcome
        assert outcome.detail["leader"] == outcome.detail["members"][0]["member_id"]
        # Without a client certificate: no status (and the check says which member).
        stranger = settings(secured, etcd_cert_file=None, etcd_key_file=None)
        refused = MemberStatusReader(EtcdAccess.of(stranger), 3.0)
        outcome = await checks.etcd(ha.etcd_endpoints, status=refused)()
        assert outcome.status == "failing" and outcome.detail["members"][0]["ok"] is False
        await refused.close()
    finally:
        await reader.close()


def test_an_unreadable_file_is_a_config_error_naming_the_field(
    secured: LocalEtcd, tmp_path: Path
) -> None:
    from runnerhub.config import ConfigError

    ha = settings(secured, etcd_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"ha\.etcd_ca_file: cannot read .*missing\.pem"):
        EtcdAccess.of(ha)


async def test_callers_racing_a_slow_connect_all_get_a_connected_client(
    secured: LocalEtcd,
) -> None:
    """Over TLS with a user, connecting takes a few round trips. The election and the
    health check read the same store at once: before, the second caller got the client
    before it was connected, and the election task died of an AttributeError."""
    ha = settings(secured)
    store = EtcdLeaderStore(ha.etcd_endpoints, "/runnerhub", 3.0, EtcdAccess.of(ha))
    try:
        results = await asyncio.gather(*(store.leader() for _ in range(5)))
        assert {record for record, _ in results} == {None}
    finally:
        await store.close()


async def test_a_renewal_fails_once_the_key_is_not_ours_though_the_lease_lives(
    secured: LocalEtcd,
) -> None:
    """A leader's renewal proves the key, not only its lease: deleted by hand and taken by
    another node, the first leader's next renewal says the leadership is lost."""
    ha = settings(secured)
    store = EtcdLeaderStore(ha.etcd_endpoints, "/runnerhub", 3.0, EtcdAccess.of(ha))
    try:
        term = await store.campaign("node-1", None, 30)
        assert term is not None and await store.keepalive(term)
        secured.etcdctl("del", "/runnerhub/leader")
        assert await store.keepalive(term) is False
        successor = await store.campaign("node-2", None, 30)
        assert successor is not None and successor.epoch > term.epoch
        assert await store.keepalive(term) is False
        assert await store.keepalive(successor)
        lease = await (await store._c()).get_lease_info(term.lease_id)
        assert lease.TTL > 0  # the first lease was alive all along
        await store.resign(term)
        await store.resign(successor)
    finally:
        await store.close()


def test_members_talk_to_each_other_over_tls_and_refuse_a_peer_without_a_certificate(
    tmp_path: Path,
) -> None:
    """Three members elect a raft leader over TLS peer links; the peer port answers only a
    client showing a certificate of the CA (`--peer-client-cert-auth`)."""
    ca = LocalCA(tmp_path / "ca")
    etcd = LocalEtcd(tmp_path / "etcd", members=3, tls=ca, client_certs=False)
    etcd.start()
    try:
        assert etcd.tls is not None and etcd.leader_index() is not None
        member = etcd.members[0]
        assert member.peer_url.startswith("https://"), member.peer_url
        peers = f"https://127.0.0.1:{member.peer_port}/members"
        with pytest.raises(httpx.HTTPError):  # plain HTTP: dropped unanswered
            httpx.get(f"http://127.0.0.1:{member.peer_port}/members", timeout=3)
        with pytest.raises(httpx.HTTPError):  # TLS, but no certificate of ours
            httpx.get(peers, verify=ssl.create_default_context(cafile=ca.cert), timeout=3)
        shown = ssl.create_default_context(cafile=ca.cert)
        issued = etcd.tls.client("a-peer")
        shown.load_cert_chain(issued.cert, issued.key)
        r = httpx.get(peers, verify=shown, timeout=3)
        assert r.status_code == 200 and len(r.json()) == 3, r.text
    finally:
        etcd.destroy()
