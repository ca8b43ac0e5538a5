"""Development tooling shipped with RunnerHub: not part of the product.

`dev.cluster` is the local cluster behind `runnerhub up` (private PostgreSQL, Patroni, etcd,
Redis with Sentinel, HAProxy, the demo workload, `runnerhub chaos`); `dev.sim` holds the
GitHub and runner simulators; `dev.waiting` polls a condition with a deadline. They are the
demo and the test bed. Nothing in production imports this package: only the CLI (to offer
`runnerhub up`, `github-sim`, `runner-sim`, `chaos`), the tests and the benchmarks do.
"""
