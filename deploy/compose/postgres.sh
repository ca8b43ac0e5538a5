#!/bin/sh
# PostgreSQL of the evaluation stack (compose.yaml): ONE server, not replicated. Its first
# start makes the cluster in the volume, the `runnerhub` role with $RUNNERHUB_DB_PASSWORD
# (hex: it is put in SQL as is) and its database; later starts only run it.
set -eu
export PATH="/usr/lib/postgresql/15/bin:$PATH"
PGDATA=/var/lib/postgresql/data/pgdata  # below the volume's root, which PostgreSQL does not own
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    echo "host runnerhub runnerhub all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE ROLE runnerhub LOGIN PASSWORD '$RUNNERHUB_DB_PASSWORD';
CREATE DATABASE runnerhub OWNER runnerhub;
SQL
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp \
    -c max_connections=100 -c idle_in_transaction_session_timeout=2000
