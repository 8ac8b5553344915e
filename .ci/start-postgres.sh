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
if ! "${RUNAS[@]}" "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1; then
  "${RUNAS[@]}" "$BIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w \
    -o "-h 127.0.0.1 -p $PGPORT -k /tmp -c max_connections=200" start >/dev/null
fi
"${RUNAS[@]}" "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname='ctxsim_test'" | grep -q 1 || \
  "${RUNAS[@]}" "$BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres ctxsim_test
echo "export CTXSIM_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$PGPORT/ctxsim_test"
