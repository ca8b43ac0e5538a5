"""Every Prometheus metric RunnerHub exports, in one place (names after Prometheus conventions).

Gauges that describe the database (jobs by state, oldest queued job) are refreshed by the
/metrics handler just before it renders; counters and histograms are updated where things
happen.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOK_DELIVERIES = Counter(
    "runnerhub_webhook_deliveries_total",
    "Webhook deliveries received, by outcome.",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "runnerhub_webhook_intake_seconds",
    "Time from request to answer for webhook deliveries.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOBS = Gauge("runnerhub_jobs", "Jobs known to RunnerHub, by state.", ["state"])
OLDEST_QUEUED = Gauge(
    "runnerhub_oldest_queued_job_age_seconds",
    "Age of the oldest queued job that a pool serves (0 when none is queued).",
)
RUNNERS = Gauge("runnerhub_runners", "Runners by pool and state.", ["pool", "state"])
POOL_DESIRED = Gauge("runnerhub_pool_desired_runners", "Desired runners per pool.", ["pool"])
PROVISION_LATENCY = Histogram(
    "runnerhub_provisioning_seconds",
    "From the job being queued to its runner being started by the backend.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
PROVISION_FAILURES = Counter(
    "runnerhub_provisioning_failures_total",
    "Runner provisioning attempts that failed, by stage.",
    ["stage"],
)
GITHUB_CALLS = Counter(
    "runnerhub_github_api_calls_total",
    "GitHub API calls, by endpoint template, method and status (0: no response).",
    ["endpoint", "method", "status"],
)
GITHUB_RATE_REMAINING = Gauge(
    "runnerhub_github_rate_limit_remaining",
    "Requests left in GitHub's current rate-limit window (last seen).",
    ["resource"],
)
GITHUB_RATE_RESET = Gauge(
    "runnerhub_github_rate_limit_reset_timestamp_seconds",
    "When GitHub's current rate-limit window resets (Unix time, last seen).",
    ["resource"],
)
LOOP_RUNS = Counter(
    "runnerhub_control_loop_runs_total",
    "Control-loop cycles, by loop and result.",
    ["loop", "result"],
)
RECONCILER_REPAIRS = Counter(
    "runnerhub_reconciler_repairs_total",
    "What the reconciler repaired, by kind (job_inserted, job_caught_up, redelivered, ...).",
    ["kind"],
)
