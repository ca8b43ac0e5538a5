"""The `runnerhub` command (Typer + Rich).

Heavy imports happen inside the commands, so `runnerhub --help` and the simulators start
fast.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="runnerhub",
    help="A highly available control plane for self-hosted GitHub Actions runners.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
leader_app = typer.Typer(help="The elected leader.", no_args_is_help=True)
app.add_typer(leader_app, name="leader")
node_app = typer.Typer(help="Nodes of the cluster.", no_args_is_help=True)
app.add_typer(node_app, name="node")
job_app = typer.Typer(help="One job.", no_args_is_help=True)
app.add_typer(job_app, name="job")
cluster_app = typer.Typer(help="The whole (local) cluster.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
chaos_app = typer.Typer(help="Inject faults into a local cluster.", no_args_is_help=True)
app.add_typer(chaos_app, name="chaos")
dr_app = typer.Typer(help="Disaster recovery (docs/dr.md).", no_args_is_help=True)
app.add_typer(dr_app, name="dr")
token_app = typer.Typer(
    help="API tokens kept hashed in PostgreSQL (docs/security.md).", no_args_is_help=True
)
app.add_typer(token_app, name="token")
lb_app = typer.Typer(help="The load balancer in front of the nodes.", no_args_is_help=True)
app.add_typer(lb_app, name="lb")

DEFAULT_STATE = Path(".runnerhub")
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The YAML configuration file.")]
StateOpt = Annotated[Path, typer.Option(help="A local cluster's state directory.")]
DrStateOpt = Annotated[
    Path, typer.Option(help="The local cluster's state directory (up --ha --dr).")
]
UrlOpt = Annotated[str | None, typer.Option(help="A node's URL (instead of --state-dir).")]
TokenOpt = Annotated[
    str | None, typer.Option(envvar="RUNNERHUB_TOKEN", help="An API token with role admin.")
]
ReadTokenOpt = Annotated[
    str | None, typer.Option(envvar="RUNNERHUB_TOKEN", help="An API token with role read.")
]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"runnerhub: {message}", err=True)
    raise typer.Exit(code)


def _settings(path: Path):  # type: ignore[no-untyped-def]
    from runnerhub.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        _fail(str(exc))


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


@app.command()
def server(config: ConfigOpt) -> None:
    """Run one RunnerHub node: webhooks, API, health and the control loops."""
    settings = _settings(config)
    from runnerhub.config import ConfigError
    from runnerhub.server import serve

    try:
        serve(settings)
    except ConfigError as exc:  # a file the settings name cannot be read: say which
        _fail(f"{config}: {exc}")


@app.command()
def doctor(
    config: ConfigOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Findings as JSON, for scripts.")] = False,
) -> None:
    """Check a node's configuration and every dependency it names, from this host: exit 0
    when nothing fails, 1 when something does, 2 when the configuration cannot be loaded."""
    from runnerhub.cli.doctor import doctor as run_doctor

    sys.exit(run_doctor(config, as_json))


@db_app.command("migrate")
def db_migrate(
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    dsn_file: Annotated[
        Path | None, typer.Option(help="A file holding a libpq DSN, instead of --config.")
    ] = None,
    dsn: Annotated[
        str | None,
        typer.Option(help="A libpq DSN (visible to anyone on the host in `ps`: prefer the others)"),
    ] = None,
) -> None:
    """Apply pending migrations (safe to run on several nodes at once). The database is the
    one --config names, or --dsn-file's, or RUNNERHUB_DATABASE__DSN's."""
    from runnerhub.store.db import UNAVAILABLE
    from runnerhub.store.migrate import MigrationError, migrate

    env = os.environ.get("RUNNERHUB_DATABASE__DSN")
    given = [x for x in (config, dsn_file, dsn) if x is not None]
    if len(given) > 1 or (not given and not env):
        _fail("give one of --config, --dsn-file and --dsn, or set RUNNERHUB_DATABASE__DSN")
    if config is not None:
        target = _settings(config).database.dsn.get_secret_value()
    elif dsn_file is not None:
        try:
            target = dsn_file.read_text().strip()
        except OSError as exc:
            _fail(f"{dsn_file}: cannot read the DSN: {exc.strerror}")
    else:
        target = dsn or env or ""
    try:
        applied = asyncio.run(migrate(target))
    except MigrationError as exc:
        _fail(str(exc))
    except UNAVAILABLE as exc:
        _fail(f"cannot reach the database: {exc}", code=1)
    if applied:
        for m in applied:
            typer.echo(f"applied {m.version:04d}_{m.name}")
    else:
        typer.echo("database is up to date")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def github_sim(ctx: typer.Context) -> None:
    """Run the GitHub simulator (see `runnerhub github-sim --help`)."""
    from runnerhub.dev.sim.github import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def runner_sim(ctx: typer.Context) -> None:
    """Run the runner simulator (behaves like `./run.sh --jitconfig …`)."""
    from runnerhub.dev.sim.runner import main as runner_main

    raise typer.Exit(runner_main(list(ctx.args)))


@app.command()
def up(
    state_dir: Annotated[
        Path, typer.Option(help="Where the local cluster keeps its state.")
    ] = DEFAULT_STATE,
    port: Annotated[int, typer.Option(help="RunnerHub's HTTP port (0: any free one).")] = 8080,
    demo_jobs: Annotated[int, typer.Option(help="Jobs the demo workload enqueues.")] = 30,
    exit_after_demo: Annotated[
        bool, typer.Option(help="Stop once the demo workload has completed.")
    ] = False,
    ha: Annotated[
        bool, typer.Option("--ha", help="3 etcd members, HAProxy and several nodes.")
    ] = False,
    nodes: Annotated[int, typer.Option(min=2, max=9, help="Nodes with --ha.")] = 3,
    dr: Annotated[
        bool,
        typer.Option(
            "--dr", help="With --ha: a second region (standby cluster and a standby node)."
        ),
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="Where runners run: process (on this host) or container (a Podman API "
            "service of the cluster's own, an image from Debian's packages)."
        ),
    ] = "process",
) -> None:
    """Run a local cluster: PostgreSQL, the GitHub simulator, a node, runners and a demo."""
    if backend not in ("process", "container"):
        raise typer.BadParameter("process or container", param_hint="--backend")
    if dr and not ha:
        raise typer.BadParameter(
            "a standby region follows an HA cluster: add --ha", param_hint="--dr"
        )
    from runnerhub.cli.status import render
    from runnerhub.dev.cluster.local import run_local_cluster

    sys.exit(
        run_local_cluster(
            state_dir,
            port=port,
            demo_jobs=demo_jobs,
            exit_after_demo=exit_after_demo,
            ha=ha,
            nodes=nodes,
            summary=render,
            dr=dr,
            backend=backend,
        )
    )


@app.command()
def status(
    state_dir: StateOpt = DEFAULT_STATE, url: UrlOpt = None, token: ReadTokenOpt = None
) -> None:
    """Pools, jobs and runners as tables."""
    from runnerhub.cli.status import show_status

    sys.exit(show_status(state_dir, url, token))


@app.command()
def events(
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", "-k", help="Kind prefix, e.g. job. or leader. (repeatable)"),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing events as they happen.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many past events.")] = 20,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: ReadTokenOpt = None,
) -> None:
    """The cluster's events (jobs, runners, leadership): the latest, or live with -f."""
    from runnerhub.cli.events import show_events

    sys.exit(show_events(state_dir, url, token, kind or [], follow, limit))


backups_app = typer.Typer(help="Backups (docs/dr.md).")
app.add_typer(backups_app, name="backups")


@backups_app.callback(invoke_without_command=True)
def backups(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many backups to list.")] = 15,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: ReadTokenOpt = None,
) -> None:
    """Backups: each repository's newest full, diff, incr, verify and restore test, what is
    overdue or failing, then the newest backups (`runnerhub backups run` takes one now)."""
    if ctx.invoked_subcommand is not None:
        return
    from runnerhub.cli.backups import show_backups

    sys.exit(show_backups(state_dir, url, token, limit))


@backups_app.command("run")
def backups_run(
    repo: Annotated[int, typer.Option(min=1, help="The repository (1, 2…).")] = 1,
    what: Annotated[str, typer.Option(help="full, diff, incr, verify or restore_test.")] = "full",
    wait: Annotated[bool, typer.Option(help="Wait for the outcome.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.", min=1)] = 6 * 3600,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Ask the leader to back up (or verify, or test a restore) now, before anything the
    schedule calls for, recorded like a scheduled one; ask any node. Exit 0 when it
    succeeded (or, with --no-wait, was accepted), 1 when it failed."""
    import time

    answer = _admin_call(
        state_dir, url, token, "POST", "/api/v1/backups/run", {"repo": repo, "what": what}
    )
    rid = answer["id"]
    typer.echo(f"request {rid}: {what} of repository {repo}, asked of the leader")
    deadline = time.monotonic() + timeout
    while wait and answer["finished_at"] is None:
        if time.monotonic() > deadline:
            _fail(f"request {rid} not finished after {timeout:g} s", code=1)
        time.sleep(1.0)
        answer = _admin_call(state_dir, url, token, "GET", f"/api/v1/backups/requests/{rid}")
    if not wait:
        return
    if not answer["ok"]:
        _fail(f"request {rid} failed on {answer['node']}: {answer['error']}", code=1)
    typer.echo(f"request {rid}: done by {answer['node']}")


@app.command("render")
def render_files(
    topology: Annotated[
        Path, typer.Option(help="The installation described (examples/topology.yaml).")
    ],
    out: Annotated[Path, typer.Option(help="The directory to write the files under.")],
) -> None:
    """Write every program's configuration for the hosts a topology file describes: etcd,
    Patroni with PostgreSQL, pgBackRest, Redis, Sentinel, HAProxy, keepalived, Prometheus
    and Alertmanager (the renderers `up --ha` uses)."""
    from runnerhub.cli.render import render_topology

    sys.exit(render_topology(topology, out))


@app.command()
def incidents(
    component: Annotated[
        str | None, typer.Option(help="postgres, etcd, redis, github, leader, node, breaker...")
    ] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only those not over yet.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: ReadTokenOpt = None,
) -> None:
    """Failovers and incidents: what failed, when it was noticed, what was done, how long."""
    from runnerhub.cli.incidents import show_incidents

    sys.exit(show_incidents(state_dir, url, token, component, open_only, limit))


@cluster_app.command("status")
def cluster_status(
    state_dir: StateOpt = DEFAULT_STATE, url: UrlOpt = None, token: ReadTokenOpt = None
) -> None:
    """Nodes and leader, PostgreSQL members, roles and lag, Redis, etcd: one view."""
    from runnerhub.cli.topology import show_topology

    sys.exit(show_topology(state_dir, url, token))


@chaos_app.command("kill")
def chaos_kill(
    component: Annotated[
        str,
        typer.Argument(
            help="postgres-primary, postgres-replica, postgres:NAME, redis-primary "
            "(redis-master), redis-replica, redis:N, sentinel:N, etcd:N, etcd-leader, "
            "node:leader, node:NAME, haproxy, github-sim"
        ),
    ],
    sig: Annotated[str, typer.Option("--signal", "-s", help="KILL, TERM, STOP, CONT…")] = "KILL",
    state_dir: Annotated[
        Path, typer.Option(help="The local cluster's state directory.")
    ] = DEFAULT_STATE,
) -> None:
    """Signal one part of a running `runnerhub up --ha` by pid, to watch failover happen."""
    from runnerhub.dev.cluster.chaos import ChaosError, kill

    try:
        target, reached = kill(state_dir, component, sig)
    except ChaosError as exc:
        _fail(str(exc), code=1)
    typer.echo(f"sent SIG{sig.upper().removeprefix('SIG')} to {target.name}: pids {reached}")


@dr_app.command("restore")
def dr_restore(
    to: Annotated[
        str | None,
        typer.Option("--to", help="A time with its zone, e.g. 2026-11-30T19:00:00+00:00"),
    ] = None,
    to_lsn: Annotated[str | None, typer.Option("--to-lsn", help="An LSN, e.g. 0/16B3748")] = None,
    before_event: Annotated[
        int | None, typer.Option("--before-event", help="Just before this event id was written")
    ] = None,
    repo: Annotated[int, typer.Option(min=1, help="The pgBackRest repository to restore from")] = 1,
    members: Annotated[int, typer.Option(min=1, max=5, help="Members of the new cluster")] = 1,
    in_place: Annotated[
        bool,
        typer.Option("--in-place", help="Replace the running cluster's database (needs --yes)"),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --in-place")] = False,
    state_dir: Annotated[
        Path, typer.Option(help="The local cluster's state directory.")
    ] = DEFAULT_STATE,
) -> None:
    """Restore the local cluster's database as it was at a moment, into a new Patroni
    cluster beside it (the running one is not touched; it runs until Ctrl-C), or with
    --in-place --yes in place of the running one (same DSN; what is there now is kept
    aside)."""
    from runnerhub.cli.dr import restore, restore_in_place

    if sum(x is not None for x in (to, to_lsn, before_event)) != 1:
        _fail("give exactly one of --to, --to-lsn and --before-event", code=2)
    if in_place:
        sys.exit(restore_in_place(state_dir, to, to_lsn, before_event, repo, yes))
    sys.exit(restore(state_dir, to, to_lsn, before_event, repo, members))


@dr_app.command("promote")
def dr_promote(
    config: Annotated[
        Path | None,
        typer.Option(help="A standby node's configuration (the region to promote)."),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(help="Where GitHub's hooks deliver from now on (this region's URL)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote although the active region still answers.")
    ] = False,
    state_dir: Annotated[
        Path, typer.Option(help="Without --config: the local cluster's region B.")
    ] = DEFAULT_STATE,
) -> None:
    """Make the standby region the active one: promote its database, start a new era of
    epochs (the old region's leaders are fenced), re-point GitHub's webhooks at it."""
    from runnerhub.cli.dr import promote, promote_local

    if config is not None:
        sys.exit(promote(_settings(config), webhook_url, force))
    sys.exit(promote_local(state_dir, webhook_url, force))


@dr_app.command("drill")
def dr_drill(
    rate: Annotated[float, typer.Option(min=0.1, max=20, help="Jobs queued per second.")] = 1.0,
    before: Annotated[float, typer.Option(min=1, help="Seconds of load before the fault.")] = 10,
    after: Annotated[float, typer.Option(min=1, help="Seconds of load after it.")] = 20,
    failback: Annotated[
        bool,
        typer.Option(help="At the end, region A rejoins, then is made active again."),
    ] = True,
    state_dir: DrStateOpt = DEFAULT_STATE,
) -> None:
    """Take region A of a running `up --ha --dr` down entirely, promote region B, bring
    region A back as its standby, and report RTO and RPO (under <state>/drills/)."""
    from runnerhub.cli.dr import drill

    sys.exit(drill(state_dir, rate, before, after, failback))


@dr_app.command("failback")
def dr_failback(
    switch_back: Annotated[
        bool, typer.Option("--switch-back", help="Then make region A active again.")
    ] = False,
    state_dir: DrStateOpt = DEFAULT_STATE,
) -> None:
    """After region B took over: region A (of a running `up --ha --dr`) comes back as its
    standby — its database copied afresh from region B, its nodes standing by; with
    --switch-back, the active role then moves back to region A (planned)."""
    from runnerhub.cli.dr import failback

    sys.exit(failback(state_dir, switch_back))


@dr_app.command("status")
def dr_status(
    url_a: Annotated[str | None, typer.Option(help="A node (or the balancer) of region A.")] = None,
    url_b: Annotated[str | None, typer.Option(help="A node of region B.")] = None,
    token: ReadTokenOpt = None,
    state_dir: Annotated[
        Path, typer.Option(help="Without URLs: the local cluster's regions.")
    ] = DEFAULT_STATE,
) -> None:
    """Both regions (role, leader and epoch, database, the standby's lag), the newest
    backups of each repository and the last drill."""
    from runnerhub.cli.dr import status

    sys.exit(status(state_dir, url_a, url_b, token))


def _admin_call(
    state_dir: Path,
    url: str | None,
    token: str | None,
    method: str,
    path: str,
    body: dict[str, object] | None = None,
) -> Any:
    import httpx

    from runnerhub.cli.status import endpoint

    base, tok = endpoint(state_dir, url, token)
    try:
        r = httpx.request(
            method,
            f"{base}{path}",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {tok}"},
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {base}: {exc}", code=1)
    if r.status_code >= 400:
        detail = (
            r.json().get("detail")
            if r.headers.get("content-type", "").startswith("application/json")
            else r.text
        )
        _fail(f"{r.status_code}: {detail}", code=1)
    return r.json()


@leader_app.command("handoff")
def leader_handoff(
    to: Annotated[str | None, typer.Option("--to", help="The node to hand over to.")] = None,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Make the leader step down cleanly (for a rolling upgrade); optionally name its
    successor. Ask any node: the request reaches the leader through etcd."""
    answer = _admin_call(state_dir, url, token, "POST", "/api/v1/leader/handoff", {"to": to})
    typer.echo(
        f"asked {answer['from']} (epoch {answer['epoch']}) to hand over"
        + (f" to {to}" if to else "")
    )


@node_app.command("drain")
def node_drain(
    node: Annotated[str, typer.Argument(help="The node's id.")],
    undo: Annotated[bool, typer.Option("--undo", help="Let it serve again.")] = False,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop a node taking traffic (its /readyz fails, so the load balancer moves away) and
    leadership (it steps down if it leads and will not campaign)."""
    method = "DELETE" if undo else "POST"
    answer = _admin_call(state_dir, url, token, method, f"/api/v1/nodes/{node}/drain")
    typer.echo(f"{answer['node']}: draining={answer['draining']}")


@node_app.command("remove")
def node_remove(
    node: Annotated[str, typer.Argument(help="The node's id.")],
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Forget a node that is gone for good (decommissioned): it leaves the cluster's list,
    the load balancer's slots and the dashboard. Refused while it still heartbeats."""
    answer = _admin_call(state_dir, url, token, "DELETE", f"/api/v1/nodes/{node}")
    typer.echo(f"{answer['node']}: removed")


@job_app.command("retry")
def job_retry(
    job_id: Annotated[int, typer.Argument(help="The job's id.", min=0)],
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Retry a queued job's failed runner provisioning now, not at its backed-off time
    (once the cause is fixed). Still one runner per job: the same runner, by name."""
    answer = _admin_call(state_dir, url, token, "POST", f"/api/v1/jobs/{job_id}/retry")
    typer.echo(f"job {answer['job_id']}: retrying {', '.join(answer['runners'])} now")


@app.command("reconcile")
def reconcile_now(
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run the leader's reconciler now (ask any node): GitHub's queued and running jobs,
    missed deliveries and runners compared with what RunnerHub holds."""
    _admin_call(state_dir, url, token, "POST", "/api/v1/reconcile")
    typer.echo("the leader reconciles now")


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "45m", "12h" or "30d"."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (like 90s, 45m, 12h, 30d)") from None
    if value <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return value * units[unit]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Whom or what the token is for.")],
    role: Annotated[str, typer.Option(help="read (look) or admin (also act).")] = "read",
    expires_in: Annotated[
        str | None, typer.Option(help="Refused after this long: 90s, 45m, 12h, 30d.")
    ] = None,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Make an API token. It is printed once, on standard output; only its hash is kept."""
    if role not in ("read", "admin"):
        _fail(f"--role must be read or admin, not {role!r}")
    body: dict[str, object] = {"name": name, "role": role}
    if expires_in is not None:
        try:
            body["expires_in_s"] = parse_duration(expires_in)
        except ValueError as exc:
            _fail(f"--expires-in: {exc}")
    made = _admin_call(state_dir, url, token, "POST", "/api/v1/tokens", body)
    expiry = f", expires {made['expires_at']}" if made["expires_at"] else ", no expiry"
    typer.echo(f"token {made['name']!r} (role {made['role']}{expiry}):", err=True)
    typer.echo(made["token"])


@token_app.command("list")
def token_list(
    revoked: Annotated[bool, typer.Option(help="Show revoked tokens too.")] = False,
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """The stored tokens (never their values); the configuration's are not among them."""
    query = "?revoked=true" if revoked else ""
    for t in _admin_call(state_dir, url, token, "GET", f"/api/v1/tokens{query}"):
        state = "revoked " + t["revoked_at"] if t["revoked_at"] else "live"
        expiry = t["expires_at"] or "never"
        used = t["last_used_at"] or "never"
        typer.echo(
            f"{t['name']}\t{t['role']}\t{state}\texpires {expiry}\tlast used {used}"
            f"\tby {t['created_by']}"
        )


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    state_dir: StateOpt = DEFAULT_STATE,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke a stored token: every node refuses it from the next request on."""
    from urllib.parse import quote

    gone = _admin_call(state_dir, url, token, "DELETE", f"/api/v1/tokens/{quote(name, safe='')}")
    typer.echo(f"revoked {gone['name']!r} at {gone['revoked_at']}")


@lb_app.command("sync")
def lb_sync(
    api: Annotated[
        list[str], typer.Option(help="A node's base URL; repeat it: each is tried in turn.")
    ],
    haproxy_socket: Annotated[
        str, typer.Option(help="HAProxy's admin stats socket: a path, or host:port.")
    ],
    token_file: Annotated[
        Path | None,
        typer.Option(help="A file holding a read token (else $RUNNERHUB_TOKEN)."),
    ] = None,
    backend: Annotated[
        list[str] | None, typer.Option(help="HAProxy backends to keep (default both).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between rounds.", min=0.1)] = 1.0,
    forget_after: Annotated[
        float, typer.Option(help="Drop a node silent this many seconds.", min=1)
    ] = 300.0,
    once: Annotated[bool, typer.Option(help="One round, then exit (1 if it failed).")] = False,
    ca_file: Annotated[Path | None, typer.Option(help="CA for https node URLs.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics on 127.0.0.1:PORT.")
    ] = None,
) -> None:
    """Keep HAProxy's server slots in step with the cluster's nodes: a node that starts
    is added, a drained one drained, one long gone removed; no file edited, no reload."""
    from runnerhub.cli.lb import sync
    from runnerhub.lb.sync import BACKENDS

    code = sync(
        api,
        token_file,
        haproxy_socket,
        backend or list(BACKENDS),
        interval,
        forget_after,
        once,
        ca_file,
        metrics_port,
    )
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
