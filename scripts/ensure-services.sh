#!/usr/bin/env bash
# Checks that the services the test suite talks to are up, starting them with
# the machine's own commands when they are not. Exits non-zero, naming the
# service, when one cannot be reached: the suite never skips these tests.
set -u

wait_for() { # name, probe command...
  local name=$1; shift
  for _ in $(seq 1 30); do
    "$@" >/dev/null 2>&1 && { echo "ok: $name"; return 0; }
    sleep 1
  done
  echo "error: $name is not reachable; start it and re-run make test" >&2
  return 1
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
if ! pg_up; then
  echo "PostgreSQL is down; starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
wait_for "PostgreSQL on 127.0.0.1:5432" pg_up
