"""HAProxy's server list following the cluster's nodes (docs/load-balancer.md): the nodes
come from `/api/v1/cluster`, and go into HAProxy's `server-template` slots through its
runtime API, with no file edited and no reload."""
