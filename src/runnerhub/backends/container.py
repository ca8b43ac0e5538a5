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

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiodocker
import aiohttp
import structlog
from aiodocker.containers import DockerContainer

from runnerhub.backends.base import BackendError, BackendRunner, RunnerSpec
from runnerhub.backends.ssh_tunnel import SshTunnel
from runnerhub.breakers import BreakerListener, CircuitBreaker, CircuitOpen
from runnerhub.config import ContainerBackendSettings, EngineHostSettings, ssh_target
from runnerhub.domain.naming import is_valid_name
from runnerhub.domain.placement import HostLoad, placement_order

log = structlog.get_logger("runnerhub.backends.container")

T = TypeVar("T")
JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"
LABEL = "io.runnerhub"
RUNNER_LABEL = f"{LABEL}.runner"  # its value: the runner's name (what marks ours)
ENGINE_SOCKET = "/var/run/docker.sock"


def container_config(
    spec: RunnerSpec, s: ContainerBackendSettings, endpoint: str | None = None
) -> dict[str, Any]:
    """The Engine API's create body for one runner on the host at `endpoint` (default: the
    pool's one endpoint). Pure: the tests read it."""
    env = {**s.env, "RUNNERHUB_RUNNER_NAME": spec.name, JIT_ENV: spec.jit_config}
    labels = {
        RUNNER_LABEL: spec.name,
        f"{LABEL}.pool": spec.pool,
        f"{LABEL}.job": "" if spec.job_id is None else str(spec.job_id),
        f"{LABEL}.attempt": str(spec.attempt),
        f"{LABEL}.epoch": "" if spec.epoch is None else str(spec.epoch),
    }
    binds = list(s.mounts)
    if s.engine_socket:
        binds.append(f"{engine_socket_path(endpoint or s.endpoint)}:{ENGINE_SOCKET}")
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


def engine_socket_path(endpoint: str) -> str:
    """The engine's socket on its own host, for `engine_socket`."""
    if endpoint.startswith("unix://"):
        return endpoint.removeprefix("unix://")
    if endpoint.startswith("ssh://"):
        return ssh_target(endpoint).socket
    raise BackendError(f"{endpoint}: engine_socket needs a unix:// or ssh:// endpoint")


class _Host:
    """One runner host: its engine's client (made on first use), its circuit breaker, and
    for an ssh:// endpoint the forward of its engine's socket."""

    def __init__(self, settings: EngineHostSettings, breaker: CircuitBreaker) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self.breaker = breaker
        self._engine: aiodocker.Docker | None = None
        self.tunnel: SshTunnel | None = None
        if self.endpoint.startswith("ssh://"):
            self.tunnel = SshTunnel(
                self.endpoint,
                ssh_target(self.endpoint),
                settings.ssh_identity,
                settings.ssh_known_hosts,
            )

    async def ready(self) -> None:
        """Anything the engine's client needs first: the ssh forward, up."""
        if self.tunnel is not None:
            await self.tunnel.ensure()

    @property
    def engine(self) -> aiodocker.Docker:
        if self._engine is None:
            s = self.settings
            context = None
            if s.tls_ca is not None and s.tls_cert is not None and s.tls_key is not None:
                context = ssl.create_default_context(cafile=str(s.tls_ca))
                context.load_cert_chain(str(s.tls_cert), str(s.tls_key))
            if self.tunnel is not None:
                url = f"unix://{self.tunnel.socket}"
            else:
                url = s.endpoint.replace("tcp://", "https://" if context else "http://", 1)
            self._engine = aiodocker.Docker(url=url, ssl_context=context)
        return self._engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()
            self._engine = None
        if self.tunnel is not None:
            await self.tunnel.close()


class ContainerBackend:
    """Runners as containers on a pool's runner hosts (one or several engines). A host that
    does not answer trips a circuit breaker of its own: no runner is placed there meanwhile,
    its runners are reported unreachable (`unreachable`), and it is tried again after
    `open_s`."""

    kind = "container"

    def __init__(
        self,
        pools: Mapping[str, ContainerBackendSettings],
        failure_threshold: int = 2,
        open_s: float = 15.0,
        breakers: dict[str, CircuitBreaker] | None = None,
        on_change: BreakerListener | None = None,
    ) -> None:
        self._pools = dict(pools)
        self._hosts: dict[str, _Host] = {}
        self._pools_on: dict[str, set[str]] = {}  # host → the pools that run there
        for pool, s in self._pools.items():
            for h in s.engines():
                self._pools_on.setdefault(h.endpoint, set()).add(pool)
                if h.endpoint not in self._hosts:
                    breaker = CircuitBreaker(
                        f"engine:{h.endpoint}", failure_threshold, open_s, on_change=on_change
                    )
                    self._hosts[h.endpoint] = _Host(h, breaker)
                    if breakers is not None:
                        breakers[breaker.name] = breaker
        self._unreachable: set[str] = set()  # hosts that did not answer the last listing
        self._placed: dict[str, str] = {}  # runner → the host it was last seen on
        self._placing = asyncio.Lock()

    def _settings(self, pool: str) -> ContainerBackendSettings:
        s = self._pools.get(pool)
        if s is None:
            raise BackendError(f"pool {pool!r} has no container backend settings")
        return s

    async def provision(self, spec: RunnerSpec) -> str:
        """Adopt the runner where it runs; else start it on the host with the most room
        among those that answer. A host that does not answer is skipped — unless the
        runner was last seen there: it may run there still, so it is not started twice.
        Where there is a choice or a limit, one placement at a time: each counts the
        containers the ones before it made."""
        if not is_valid_name(spec.name):
            raise BackendError(f"{spec.name!r} is not a runner name")
        s = self._settings(spec.pool)
        engines = s.engines()
        if len(engines) == 1 and engines[0].max_runners is None:
            placed = await self._place(spec, s)  # nowhere else to go: no count to keep
        else:
            async with self._placing:
                placed = await self._place(spec, s)
        if isinstance(placed, str):
            return placed  # it runs already: adopted
        host, container = placed
        await _ask(host, container.start, spec.name)
        log.info(
            "runner container started",
            runner=spec.name,
            pool=spec.pool,
            image=s.image,
            host=host.endpoint,
        )
        return _ref(container, host)

    async def _place(
        self, spec: RunnerSpec, s: ContainerBackendSettings
    ) -> str | tuple[_Host, DockerContainer]:
        """The runner's ref where it runs, or the host it is now created on (not started)."""
        loads: list[HostLoad] = []
        silent: list[str] = []
        for wanted in s.engines():  # this pool's view of each host: its own limit there
            host = self._hosts[wanted.endpoint]
            try:
                found = await _ask(host, functools.partial(self._look, host, spec), spec.name)
            except _Unreachable as exc:
                silent.append(f"{host.endpoint} ({exc})")
                if self._placed.get(spec.name) == host.endpoint:
                    raise BackendError(
                        f"runner {spec.name} was started on {host.endpoint}, which does not "
                        f"answer ({exc}): not started elsewhere while it may run there"
                    ) from None
                continue
            if isinstance(found, str):
                return found
            loads.append(HostLoad(host.endpoint, found, wanted.max_runners))
        for endpoint in placement_order(loads):
            host = self._hosts[endpoint]
            try:
                made = await _ask(host, functools.partial(self._create, host, spec, s), spec.name)
            except _Unreachable as exc:
                silent.append(f"{endpoint} ({exc})")
                continue
            return made if isinstance(made, str) else (host, made)
        why = f"{', '.join(silent)} did not answer" if silent else "every one is full"
        raise BackendError(f"no runner host of pool {spec.pool!r} can take {spec.name}: {why}")

    async def _look(self, host: _Host, spec: RunnerSpec) -> str | int:
        """The runner's ref if it runs on `host` (an exited one is removed); else how many
        of its pool's runners are there, created or running."""
        existing = await _get(host.engine, spec.name)
        if existing is not None:
            if existing["State"].get("Running"):
                self._placed[spec.name] = host.endpoint
                return _ref(existing, host)
            await existing.delete(force=True)  # it ran and exited, or never started: anew
        there = await host.engine.containers.list(
            all=True,
            filters={"label": [f"{LABEL}.pool={spec.pool}"], "status": ["created", "running"]},
        )
        return len(there)

    async def _create(
        self, host: _Host, spec: RunnerSpec, s: ContainerBackendSettings
    ) -> str | DockerContainer:
        """The runner's container on `host`, created; or, made meanwhile by another
        leader, the ref of that one (adopted)."""
        engine = host.engine
        try:
            body = container_config(spec, s, host.endpoint)
            container = await engine.containers.create(body, name=spec.name)
        except aiodocker.DockerError as exc:
            if exc.status != 409:
                raise
            adopted = await _get(engine, spec.name)
            if adopted is None:
                raise
            self._placed[spec.name] = host.endpoint
            return _ref(adopted, host)
        self._placed[spec.name] = host.endpoint
        return container

    async def list(self) -> list[BackendRunner]:
        """The runners on every host that answers; the hosts that do not are remembered
        (`unreachable`): their runners may run, unseen."""
        found = []
        for endpoint, host in self._hosts.items():
            pools = self._pools_on[endpoint]
            try:
                listed = await _ask(host, functools.partial(_runners_on, host))
            except _Unreachable:
                self._unreachable.add(endpoint)
                continue
            self._unreachable.discard(endpoint)
            for c in listed:
                row = _summary(c, host)
                if row.pool in pools and is_valid_name(row.name):
                    found.append(row)
                    self._placed[row.name] = endpoint
        return found

    def unreachable(self, ref: str | None) -> bool:
        """The runner `ref` names is on a host that did not answer the last listing."""
        return ref is not None and ref.partition("@")[2] in self._unreachable

    async def terminate(self, name: str, grace_s: float | None = None) -> None:
        if not is_valid_name(name):
            return
        for host in self._hosts.values():
            try:
                await _ask(host, functools.partial(self._stop, host, name, grace_s), name)
            except _Unreachable:
                continue  # nothing to stop there now; the janitor sees it when it answers
        self._placed.pop(name, None)

    async def _stop(self, host: _Host, name: str, grace_s: float | None) -> None:
        container = await _get(host.engine, name)
        if container is None or container["Config"]["Labels"].get(RUNNER_LABEL) != name:
            return  # not ours: never stopped
        if container["State"].get("Running"):
            pool = container["Config"]["Labels"].get(f"{LABEL}.pool", "")
            default = self._pools[pool].stop_timeout_s if pool in self._pools else 10.0
            await container.stop(t=int(default if grace_s is None else grace_s))
            log.info("runner container stopped", runner=name, host=host.endpoint)
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise

    async def forget(self, name: str) -> None:
        """The runner exited and was recorded: its container (and its log) go."""
        await self.terminate(name, grace_s=0)

    async def close(self) -> None:
        for host in self._hosts.values():
            await host.close()


class _Unreachable(Exception):
    """The host did not answer, or its circuit is open: nothing was done there."""


async def _ask(host: _Host, call: Callable[[], Awaitable[T]], runner: str | None = None) -> T:
    """`call` on `host`, through its circuit breaker. A host that does not answer (or whose
    circuit is open) is _Unreachable; what the engine refuses is a BackendError."""

    async def there() -> T:
        await host.ready()
        return await call()

    try:
        return await host.breaker.call(there, _silence)
    except CircuitOpen as exc:
        raise _Unreachable(str(exc)) from None
    except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
        if _silence(exc) is None:  # it answered: the host is up, the request was refused
            raise engine_error(host.endpoint, exc, runner) from None
        raise _Unreachable(str(exc)[:200]) from None


def _silence(exc: Exception) -> str | None:
    """Why the engine did not answer; None when it did (an HTTP status of its own)."""
    if isinstance(exc, aiodocker.DockerError) and exc.status != UNREACHABLE:
        return None
    return f"does not answer: {exc}"


# aiodocker's status for "could not connect" (no HTTP status: the engine never answered).
UNREACHABLE = 900


def engine_error(endpoint: str, exc: Exception, runner: str | None = None) -> BackendError:
    """What went wrong, for the operator: the engine did not answer, or what it said."""
    about = f" (runner {runner})" if runner else ""
    if isinstance(exc, aiodocker.DockerError) and exc.status != UNREACHABLE:
        return BackendError(f"{endpoint}: {exc.message}{about}")
    reason = exc.message if isinstance(exc, aiodocker.DockerError) else str(exc)
    return BackendError(f"the container engine at {endpoint} does not answer: {reason}{about}")


async def _runners_on(host: _Host) -> list[DockerContainer]:
    return list(await host.engine.containers.list(all=True, filters={"label": [RUNNER_LABEL]}))


async def _get(engine: aiodocker.Docker, name: str) -> DockerContainer | None:
    try:
        return await engine.containers.get(name)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise


def _ref(c: DockerContainer, host: _Host) -> str:
    """The container's id and its host: `unreachable` reads the host back from it."""
    return f"{str(c.id)[:12]}@{host.endpoint}"


def _summary(c: DockerContainer, host: _Host) -> BackendRunner:
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
        ref=_ref(c, host),
        alive=str(raw.get("State", "")).lower() == "running",
        started_at=started,
        exit_code=code,
    )
