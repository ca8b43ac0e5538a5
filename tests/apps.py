"""A node's HTTP app for in-process tests: the API and intake over a given context, without
the node's loops (`runnerhub.node.Node` builds the real one)."""

from __future__ import annotations

from runnerhub.api.app import RunnerHubApp, create_app
from runnerhub.context import NodeContext
from runnerhub.intake.webhook import WebhookIntake


def node_app(ctx: NodeContext) -> RunnerHubApp:
    return create_app(ctx, WebhookIntake(ctx.settings, ctx.db))
