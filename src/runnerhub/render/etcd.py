"""One etcd member's settings: as command-line flags for the local cluster (`runnerhub up
--ha`) and as etcd's YAML configuration file (`etcd --config-file`) for a production host
(`runnerhub render`), from one list, so the two cannot drift. The file's keys are the
flags' names, except TLS, which the file nests under `client-transport-security` and
`peer-transport-security`. Nothing secret: etcd's users and their passwords live in etcd.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

Setting = tuple[str, str | int | bool | list[str]]


@dataclass(frozen=True)
class EtcdTlsFiles:
    """A member's certificate and key; with `client_cert_auth`, clients must show a
    certificate of `ca` (etcd 3.4 asks for one whenever it has a CA to check it by, so the
    CA is given only then)."""

    cert: Path
    key: Path
    ca: Path | None = None
    client_cert_auth: bool = False

    def __post_init__(self) -> None:
        if self.client_cert_auth and self.ca is None:
            raise ValueError("client certificates need the CA that checks them")

    def settings(self, prefix: str = "") -> list[Setting]:
        out: list[Setting] = [(f"{prefix}cert-file", str(self.cert))]
        out.append((f"{prefix}key-file", str(self.key)))
        if self.client_cert_auth and self.ca is not None:
            out += [(f"{prefix}trusted-ca-file", str(self.ca)), (f"{prefix}client-cert-auth", True)]
        return out


@dataclass(frozen=True)
class EtcdMemberConfig:
    name: str
    data_dir: Path
    listen_client_urls: list[str]
    advertise_client_urls: list[str]
    listen_peer_urls: list[str]
    advertise_peer_urls: list[str]
    initial_cluster: str  # name=peer URL,... of every member of the region's cluster
    cluster_token: str
    heartbeat_ms: int = 100
    election_ms: int = 1000
    client_tls: EtcdTlsFiles | None = None
    peer_tls: EtcdTlsFiles | None = None
    log_outputs: tuple[str, ...] = ("stderr",)
    log_level: str = "warn"

    def settings(self) -> list[Setting]:
        return [
            ("name", self.name),
            ("data-dir", str(self.data_dir)),
            ("listen-client-urls", ",".join(self.listen_client_urls)),
            ("advertise-client-urls", ",".join(self.advertise_client_urls)),
            ("listen-peer-urls", ",".join(self.listen_peer_urls)),
            ("initial-advertise-peer-urls", ",".join(self.advertise_peer_urls)),
            # Ignored by etcd once the data directory holds a WAL: a restart rejoins as is.
            ("initial-cluster", self.initial_cluster),
            ("initial-cluster-state", "new"),
            ("initial-cluster-token", self.cluster_token),
            ("heartbeat-interval", self.heartbeat_ms),
            ("election-timeout", self.election_ms),
            # A paused or partitioned member that comes back must not depose a healthy leader.
            ("pre-vote", True),
            ("quota-backend-bytes", 256 * 1024 * 1024),
            ("auto-compaction-mode", "revision"),
            ("auto-compaction-retention", "10000"),
            ("logger", "zap"),
            ("log-outputs", list(self.log_outputs)),
            ("log-level", self.log_level),
            *(self.client_tls.settings() if self.client_tls else ()),
            *(self.peer_tls.settings("peer-") if self.peer_tls else ()),
        ]


def flags(config: EtcdMemberConfig) -> list[str]:
    """The settings as etcd's command-line flags (a true boolean is the flag alone)."""
    out: list[str] = []
    for key, value in config.settings():
        if value is True:
            out.append(f"--{key}")
        elif value is not False:
            out += [f"--{key}", ",".join(value) if isinstance(value, list) else str(value)]
    return out


def config_file(config: EtcdMemberConfig) -> dict[str, Any]:
    """The settings as etcd's configuration file (YAML-ready): TLS nested as etcd wants."""
    out: dict[str, Any] = {}
    for key, value in config.settings():
        for prefix, section in (
            ("peer-", "peer-transport-security"),
            ("", "client-transport-security"),
        ):
            if key.startswith(prefix) and key.removeprefix(prefix) in TLS_KEYS:
                out.setdefault(section, {})[key.removeprefix(prefix)] = value
                break
        else:
            out[key] = value
    return out


TLS_KEYS = frozenset({"cert-file", "key-file", "trusted-ca-file", "client-cert-auth"})
