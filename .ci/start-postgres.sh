#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the registry tests and prints the
# export line for CTXSIM_TEST_PG_URL. Idempotent: reuses a running cluster in the same folder.
set -euo pipefail
PGDIR=${CTXSIM_PG_DIR:-/tmp/ctxsim-pg}
PGPORT=${CTXSIM_PG_PORT:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$BIN/initdb" ] || { echo "postgresql server binaries not found (apt-get install postgresql)" >&2; exit 1; }
RUNAS=()
if [ "$(id -u)" = 0 ]; then RUNAS=(runuser -u postgres --); fi
mkdir -p "$PGDIR"; [ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
if [ ! -f "$PGDIR/PG_VERSION" ]; then
  "${RUNAS[@]}" "$BIN/initdb" -D "$PGDIR" -A trust -U postgres >/dev/null
fi
ready() { "${RUNAS[@]}" "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; }
# start (again) until it answers: a cluster left by a killed server recovers on the next start
for attempt in 1 2 3; do
  ready && break
  "${RUNAS[@]}" "$BIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $PGPORT -k /tmp -c max_connections=200" start >/dev/null 2>&1 || sleep 2
  for _ in $(seq 1 30); do ready && break; sleep 1; done
done
ready || { echo "postgresql did not start; see $PGDIR/server.log" >&2; exit 1; }
"${RUNAS[@]}" "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname='ctxsim_test'" | grep -q 1 || \
  "${RUNAS[@]}" "$BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres ctxsim_test
echo "export CTXSIM_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$PGPORT/ctxsim_test"
