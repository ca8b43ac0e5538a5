"""The `container` backend: each runner an ephemeral container, started through the Docker
Engine API — Docker's, or Podman's (`podman system service`) — with aiodocker (docs/backends.md).

Idempotent by name: a container is named after its runner, so the engine itself refuses a
second one, and labelled with its pool, job, attempt and the epoch of the leader that asked,
so a node that takes over lists what runs and adopts it instead of starting another. The JIT
config goes into the container's environment only, never its command or labels (the
engine's API shows the environment to whoever may use the engine: that is the engine's
root, who could read the runner's memory anyway).

Each pool's limits (cpus, memory, pids), network mode, read-only root file system and
mounts are the pool's settings; nothing is mounted and the engine's socket is not inside
unless the pool says so.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiodocker
import aiohttp
import structlog
from aiodocker.containers import DockerContainer

from runnerhub.backends.base import BackendError, BackendRunner, RunnerSpec
from runnerhub.config import ContainerBackendSettings
from runnerhub.domain.naming import is_valid_name

log = structlog.get_logger("runnerhub.backends.container")

JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"
LABEL = "io.runnerhub"
RUNNER_LABEL = f"{LABEL}.runner"  # its value: the runner's name (what marks ours)
ENGINE_SOCKET = "/var/run/docker.sock"


def container_config(spec: RunnerSpec, s: ContainerBackendSettings) -> dict[str, Any]:
    """The Engine API's create body for one runner (pure: the tests read it)."""
    env = {**s.env, "RUNNERHUB_RUNNER_NAME": spec.name, JIT_ENV: spec.jit_config}
    labels = {
        RUNNER_LABEL: spec.name,
        f"{LABEL}.pool": spec.pool,
        f"{LABEL}.job": "" if spec.job_id is None else str(spec.job_id),
        f"{LABEL}.attempt": str(spec.attempt),
        f"{LABEL}.epoch": "" if spec.epoch is None else str(spec.epoch),
    }
    binds = list(s.mounts)
    if s.engine_socket and s.endpoint.startswith("unix://"):
        binds.append(f"{s.endpoint.removeprefix('unix://')}:{ENGINE_SOCKET}")
    host: dict[str, Any] = {
        "NetworkMode": s.network,
        "ReadonlyRootfs": s.read_only,
        "Binds": binds,
        "SecurityOpt": ["no-new-privileges"],  # no setuid way up inside
        "Init": True,  # an init reaps what the job leaves behind
    }
    if s.pids_limit is not None:
        host["PidsLimit"] = s.pids_limit
    if s.cpus is not None:
        host["NanoCpus"] = int(s.cpus * 1e9)
    if s.memory_mb is not None:
        host["Memory"] = s.memory_mb * 1024 * 1024
    if s.read_only:
        host["Tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=256m"}
    config: dict[str, Any] = {
        "Image": s.image,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": labels,
        "HostConfig": host,
        "StopTimeout": int(s.stop_timeout_s),
    }
    if s.command:
        config["Cmd"] = list(s.command)
    if s.user:
        config["User"] = s.user
    return config


class ContainerBackend:
    kind = "container"

    def __init__(self, pools: Mapping[str, ContainerBackendSettings]) -> None:
        self._pools = dict(pools)
        self._engines: dict[str, aiodocker.Docker] = {}  # by endpoint, made on first use

    def _engine(self, s: ContainerBackendSettings) -> aiodocker.Docker:
        engine = self._engines.get(s.endpoint)
        if engine is None:
            context = None
            if s.tls_ca is not None and s.tls_cert is not None and s.tls_key is not None:
                context = ssl.create_default_context(cafile=str(s.tls_ca))
                context.load_cert_chain(str(s.tls_cert), str(s.tls_key))
            url = s.endpoint.replace("tcp://", "https://" if context else "http://", 1)
            engine = aiodocker.Docker(url=url, ssl_context=context)
            self._engines[s.endpoint] = engine
        return engine

    def _settings(self, pool: str) -> ContainerBackendSettings:
        s = self._pools.get(pool)
        if s is None:
            raise BackendError(f"pool {pool!r} has no container backend settings")
        return s

    async def provision(self, spec: RunnerSpec) -> str:
        if not is_valid_name(spec.name):
            raise BackendError(f"{spec.name!r} is not a runner name")
        s = self._settings(spec.pool)
        engine = self._engine(s)
        try:
            existing = await _get(engine, spec.name)
            if existing is not None:
                if existing["State"].get("Running"):
                    return _ref(existing)  # already running: adopt, never start a second
                await existing.delete(force=True)  # it ran and exited: a new one
            try:
                container = await engine.containers.create(
                    container_config(spec, s), name=spec.name
                )
            except aiodocker.DockerError as exc:
                if exc.status != 409:
                    raise
                # Another leader created it a moment ago: it is the runner.
                adopted = await _get(engine, spec.name)
                if adopted is None:
                    raise
                return _ref(adopted)
            await container.start()
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            raise engine_error(s.endpoint, exc, spec.name) from None
        log.info("runner container started", runner=spec.name, pool=spec.pool, image=s.image)
        return _ref(container)

    async def list(self) -> list[BackendRunner]:
        found = []
        for endpoint, pools in self._by_endpoint().items():
            engine = self._engine(self._pools[pools[0]])
            try:
                listed = await engine.containers.list(all=True, filters={"label": [RUNNER_LABEL]})
            except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
                raise engine_error(endpoint, exc) from None
            for c in listed:
                row = _summary(c)
                if row.pool in pools and is_valid_name(row.name):
                    found.append(row)
        return found

    async def terminate(self, name: str, grace_s: float | None = None) -> None:
        if not is_valid_name(name):
            return
        for endpoint, pools in self._by_endpoint().items():
            s = self._pools[pools[0]]
            try:
                container = await _get(self._engine(s), name)
                if container is None or container["Config"]["Labels"].get(RUNNER_LABEL) != name:
                    continue  # not ours: never stopped
                if container["State"].get("Running"):
                    grace = s.stop_timeout_s if grace_s is None else grace_s
                    await container.stop(t=int(grace))
                    log.info("runner container stopped", runner=name)
                await container.delete(force=True)
            except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
                if not isinstance(exc, aiodocker.DockerError) or exc.status != 404:
                    raise engine_error(endpoint, exc, name) from None

    async def forget(self, name: str) -> None:
        """The runner exited and was recorded: its container (and its log) go."""
        await self.terminate(name, grace_s=0)

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.close()
        self._engines.clear()

    def _by_endpoint(self) -> dict[str, tuple[str, ...]]:
        return by_endpoint(self._pools)


# aiodocker's status for "could not connect" (no HTTP status: the engine never answered).
UNREACHABLE = 900


def engine_error(endpoint: str, exc: Exception, runner: str | None = None) -> BackendError:
    """What went wrong, for the operator: the engine did not answer, or what it said."""
    about = f" (runner {runner})" if runner else ""
    if isinstance(exc, aiodocker.DockerError) and exc.status != UNREACHABLE:
        return BackendError(f"{endpoint}: {exc.message}{about}")
    reason = exc.message if isinstance(exc, aiodocker.DockerError) else str(exc)
    return BackendError(f"the container engine at {endpoint} does not answer: {reason}{about}")


def by_endpoint(pools: Mapping[str, ContainerBackendSettings]) -> dict[str, tuple[str, ...]]:
    """The pools of each engine."""
    out: dict[str, tuple[str, ...]] = {}
    for pool, s in pools.items():
        out[s.endpoint] = (*out.get(s.endpoint, ()), pool)
    return out


async def _get(engine: aiodocker.Docker, name: str) -> DockerContainer | None:
    try:
        return await engine.containers.get(name)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise


def _ref(c: DockerContainer) -> str:
    return str(c.id)[:12]


def _summary(c: DockerContainer) -> BackendRunner:
    """A runner from the engine's list entry (no inspect: one call for every container)."""
    raw: dict[str, Any] = c._container  # the list entry aiodocker keeps
    labels = raw.get("Labels") or {}
    status = str(raw.get("Status") or "")
    code = None
    if "(" in status and status.lower().startswith("exited"):
        try:
            code = int(status.split("(", 1)[1].split(")", 1)[0])
        except ValueError:
            code = None
    created = raw.get("Created")
    started = (
        datetime.fromtimestamp(created, UTC)
        if isinstance(created, int | float)
        else datetime.fromisoformat(str(created))
        if created
        else datetime.now(UTC)
    )
    return BackendRunner(
        name=str(labels.get(RUNNER_LABEL, "")),
        pool=str(labels.get(f"{LABEL}.pool", "")),
        ref=_ref(c),
        alive=str(raw.get("State", "")).lower() == "running",
        started_at=started,
        exit_code=code,
    )
