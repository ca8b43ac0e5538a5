"""A faithful GitHub simulator: the REST endpoints RunnerHub calls, signed `workflow_job`
webhooks, and a private `/_sim` API that drives the simulated world (see `control.py`).

`create_app(config)` builds the ASGI app, `serve(...)` runs it on uvicorn, and `main(argv)`
is the `runnerhub github-sim` command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.control import Control
from runnerhub.dev.sim.core import Sim
from runnerhub.dev.sim.errors import ApiError
from runnerhub.dev.sim.rest import Rest

__all__ = ["SimConfig", "create_app", "main", "serve"]

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 3


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods get GitHub's JSON 404 rather than Starlette's plain text.
    assert isinstance(exc, HTTPException)
    return ApiError(404 if exc.status_code == 405 else exc.status_code).response()


def create_app(config: SimConfig) -> Starlette:
    """The simulator app; `app.state.sim` holds its state. Restores `state_file` if set."""
    sim = Sim(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    app = Starlette(
        routes=[*Control(sim).routes(), *Rest(sim).routes()],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.sim = sim
    return app


def _listen(host: str, port: int) -> socket.socket:
    # proto must be IPPROTO_TCP (not 0) for asyncio to set TCP_NODELAY on accepted
    # connections; without it every keep-alive request stalls 40 ms on delayed ACKs.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # hundreds of runner processes may connect at once
    sock.setblocking(False)
    return sock


async def serve(
    config: SimConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until cancelled or signalled; `ready(port)` once it accepts requests."""
    app = create_app(config)
    sim: Sim = app.state.sim
    sock = _listen(host, port)
    bound = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=bound,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name="github-sim")
    try:
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("the GitHub simulator stopped while starting")
            await asyncio.sleep(0.01)
        if ready is not None:
            ready(bound)
        while not task.done():
            if server.should_exit:
                sim.state.begin_shutdown()  # long polls answer now, not after 10 s
            await asyncio.wait({task}, timeout=0.1)
        await task
    except asyncio.CancelledError:
        server.should_exit = True
        sim.state.begin_shutdown()
        await task
        raise
    finally:
        sock.close()


class _Stopped(BaseException):
    """Raised by the signal handler to leave `main`; BaseException so no handler eats it."""


def _write_ready_file(path: Path, port: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runnerhub github-sim", description="Run the GitHub simulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (see --ready-file)")
    p.add_argument("--webhook-url")
    p.add_argument("--webhook-ca", type=Path, help="CA file for an https:// webhook URL")
    p.add_argument(
        "--webhook-secret",
        default=os.environ.get("RUNNERHUB_SIM_WEBHOOK_SECRET", ""),
        help="default: $RUNNERHUB_SIM_WEBHOOK_SECRET",
    )
    p.add_argument("--hook-id", type=int, default=1)
    p.add_argument("--repo", action="append", default=[], help="owner/name (repeatable)")
    p.add_argument("--org", action="append", default=[], help="organization (repeatable)")
    p.add_argument(
        "--pat",
        action="append",
        default=[],
        help="accepted token (repeatable; $RUNNERHUB_SIM_PATS)",
    )
    p.add_argument("--app-id", type=int)
    p.add_argument("--app-public-key-file", type=Path)
    p.add_argument("--installation-id", type=int)
    p.add_argument("--token-ttl", type=float, default=3600.0)
    p.add_argument("--rate-limit", type=int, default=5000)
    p.add_argument("--state-file", type=Path)
    p.add_argument("--heartbeat-timeout", type=float, default=15.0)
    p.add_argument("--webhook-timeout", type=float, default=10.0)
    p.add_argument("--webhook-workers", type=int, default=8)
    p.add_argument("--ready-file", type=Path, help='write {"port": N, "pid": P} once listening')
    return p


def _config(args: argparse.Namespace) -> SimConfig:
    pats = list(args.pat)
    pats += [p.strip() for p in os.environ.get("RUNNERHUB_SIM_PATS", "").split(",") if p.strip()]
    key_pem = args.app_public_key_file.read_text() if args.app_public_key_file else None
    return SimConfig(
        webhook_url=args.webhook_url,
        webhook_ca=args.webhook_ca,
        webhook_secret=args.webhook_secret,
        hook_id=args.hook_id,
        repositories=list(args.repo),
        organizations=list(args.org),
        pats=pats,
        app_id=args.app_id,
        app_public_key_pem=key_pem,
        installation_id=args.installation_id,
        token_ttl_s=args.token_ttl,
        rate_limit=args.rate_limit,
        state_file=args.state_file,
        runner_heartbeat_timeout_s=args.heartbeat_timeout,
        webhook_timeout_s=args.webhook_timeout,
        webhook_workers=args.webhook_workers,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
    except (OSError, ValueError) as exc:
        print(f"github-sim: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    def ready(port: int) -> None:
        print(f"github-sim listening on http://{args.host}:{port}", flush=True)
        if args.ready_file is not None:
            _write_ready_file(args.ready_file, port)

    # While serving, uvicorn turns SIGINT/SIGTERM into a graceful shutdown (state saved)
    # and then re-raises the signal; this handler makes that (or a signal that comes
    # before uvicorn is listening) end `main` with status 0.
    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        asyncio.run(serve(config, args.host, args.port, ready))
    except _Stopped:
        pass
    except ValueError as exc:  # an unreadable state file
        print(f"github-sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"github-sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
