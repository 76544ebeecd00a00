#!/usr/bin/env bash
# Checks that the services the test suite talks to (PostgreSQL, Redis, Java for Spark) are up, starting them with
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
wait_for "PostgreSQL on 127.0.0.1:5432" pg_up || exit 1

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
if ! redis_up; then
  echo "Redis is down; starting it"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
wait_for "Redis on 127.0.0.1:6379" redis_up || exit 1

java_ok() { java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; }
if ! java_ok; then
  echo "Java 17+ is missing (the Spark engine needs it); installing openjdk-17-jre-headless"
  (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless) >/dev/null 2>&1 || true
fi
java_ok && echo "ok: Java 17+" || { echo "error: Java 17+ is needed for the Spark engine tests" >&2; exit 1; }

# Chromium (Debian's package) drives the dashboard's end-to-end browser test through
# Playwright; `playwright install` is not used (it downloads its own browsers).
if [ ! -x /usr/bin/chromium ]; then
  echo "Chromium is missing (the dashboard browser test needs it); installing chromium"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || true
fi
[ -x /usr/bin/chromium ] && echo "ok: Chromium" || { echo "error: /usr/bin/chromium is needed for the dashboard browser test" >&2; exit 1; }
