"""The simulator's parts wired together, with their background tasks."""

from __future__ import annotations

import asyncio
import contextlib

from runnerhub.dev.sim import persist
from runnerhub.dev.sim.auth import Auth
from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.faults import Faults
from runnerhub.dev.sim.state import SimState
from runnerhub.dev.sim.webhooks import WebhookSender, lost_on_restart, pending_snapshot


class Sim:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = Faults()
        self.state = SimState(config)
        self.auth = Auth(config, self.faults)
        self.sender = WebhookSender(config, self.state, self.faults)
        self.state.on_job_event = self.sender.job_event
        self.persister: persist.Persister | None = None
        if config.state_file is not None:
            self.persister = persist.Persister(config.state_file, self.snapshot)
            self.state.on_change = self.persister.mark_dirty
            self._restore()
        self._reaper: asyncio.Task[None] | None = None

    def snapshot(self) -> list[bytes]:
        return self.state.snapshot_chunks(
            {
                "installation_tokens": self.auth.installation_tokens,
                "webhooks_pending": pending_snapshot(self.sender),
            }
        )

    def _restore(self) -> None:
        path = self.config.state_file
        assert path is not None
        try:
            data = persist.read(path)
            if data is None:
                return
            self.state.restore(data)
            self.auth.installation_tokens = {
                token: float(expires) for token, expires in data["installation_tokens"].items()
            }
            lost_on_restart(self.state, self.config, data["webhooks_pending"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot restore the simulator state from {path}: {exc!r}") from exc

    async def start(self) -> None:
        await self.sender.start()
        if self.persister is not None:
            await self.persister.start()
        self._reaper = asyncio.create_task(self._reap_loop(), name="sim-reaper")

    async def stop(self) -> None:
        self.state.begin_shutdown()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.sender.stop()
        if self.persister is not None:
            await self.persister.stop()

    async def _reap_loop(self) -> None:
        # Check often enough that a lost runner is noticed soon after its timeout.
        interval = min(1.0, max(self.config.runner_heartbeat_timeout_s / 5, 0.05))
        while True:
            await asyncio.sleep(interval)
            self.state.reap()
