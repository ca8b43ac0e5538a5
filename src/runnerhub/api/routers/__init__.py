"""One router per resource of the REST API (`/api/v1/...`)."""

from __future__ import annotations

from fastapi import APIRouter

from runnerhub.api.routers import (
    backups,
    cluster,
    drills,
    events,
    incidents,
    jobs,
    leadership,
    pools,
    runners,
    tokens,
)

PREFIX = "/api/v1"


def api_v1() -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    for module in (
        jobs,
        runners,
        pools,
        cluster,
        events,
        incidents,
        leadership,
        backups,
        drills,
        tokens,
    ):
        router.include_router(module.router)
    return router
