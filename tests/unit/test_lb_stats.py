"""HAProxy's stats CSV read for the load_balancers health check (lb/stats.py)."""

from __future__ import annotations

from runnerhub.lb.stats import ServerState, backends_down, servers

# As HAProxy 2.6 writes it with `stats show-legends` (columns cut to those read).
CSV = """# pxname,svname,status,addr,check_status
stats,FRONTEND,OPEN,,
nodes,node-1,UP,10.0.0.11:8080,L7OK
nodes,node-2,DOWN 1/2,10.0.0.12:8080,L7STS
nodes,node-3,MAINT (resolution),10.0.0.13:8080,
nodes,slot4,MAINT,0.0.0.0:0,
nodes,node-5,DRAIN,10.0.0.15:8080,L7OK
nodes,BACKEND,UP,,
postgres,pg-0,no check,10.0.0.21:5432,
postgres,pg-1,DOWN,10.0.0.22:5432,L4CON
postgres,BACKEND,DOWN,,
"""


def test_each_server_with_a_plain_state_and_free_slots_left_out() -> None:
    got = servers(CSV)
    assert [(s.backend, s.server, s.status) for s in got] == [
        ("nodes", "node-1", "up"),
        ("nodes", "node-2", "down"),
        ("nodes", "node-3", "maint"),
        ("nodes", "node-5", "drain"),
        ("postgres", "pg-0", "unchecked"),
        ("postgres", "pg-1", "down"),
    ]
    assert got[1] == ServerState("nodes", "node-2", "down", "DOWN 1/2", "10.0.0.12:8080")


def test_a_backend_is_down_only_when_haproxy_says_the_whole_of_it_is() -> None:
    assert backends_down(CSV) == ["postgres"]
    assert backends_down("# pxname,svname,status\n") == []


def test_without_addresses_a_maintenance_server_is_still_shown() -> None:
    """No `stats show-legends`: no address, so a slot cannot be told from a server."""
    text = "# pxname,svname,status\nnodes,node-1,MAINT\n"
    assert [s.status for s in servers(text)] == ["maint"]
