#!/bin/sh
# Run by Patroni once, on the first primary, after it made the cluster (patroni.yml,
# bootstrap.post_bootstrap): the `runnerhub` role with $RUNNERHUB_DB_PASSWORD (hex: it is
# put in SQL as is), allowed to read the replicas' state (pg_monitor: the nodes' /health,
# /api/v1/cluster and replica alerts), and its database. $1 is the superuser's connection
# string.
set -eu
psql "$1" -v ON_ERROR_STOP=1 -q <<SQL
CREATE ROLE runnerhub LOGIN PASSWORD '$RUNNERHUB_DB_PASSWORD';
GRANT pg_monitor TO runnerhub;
CREATE DATABASE runnerhub OWNER runnerhub;
SQL
