#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the tests and prints its URL as the last line of stdout.
#
# The cluster lives in ${KAIROS_PG_DIR:-target/pg} and listens on 127.0.0.1:${KAIROS_PG_PORT:-55432}
# with trust authentication, so it is only for tests. Running the script again is cheap: a cluster
# that already runs is reused, and a stopped one is started again. Everything but the URL goes to
# stderr, so `url=$(bash scripts/postgres.sh)` works.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep stdout for the URL alone; every other line goes to stderr.
exec 3>&1 1>&2

port="${KAIROS_PG_PORT:-55432}"
dir="${KAIROS_PG_DIR:-target/pg}"
mkdir -p "$dir"
# The server runs as another user from another working directory, so it needs an absolute path.
dir="$(cd "$dir" && pwd)"
log="$dir/server.log"

as_root=false
[ "$(id -u)" -eq 0 ] && as_root=true

# Runs a PostgreSQL tool as the cluster's owner: initdb and pg_ctl refuse to run as root.
as_owner() {
  if ! $as_root; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
  fi
}

# Finds a directory holding both initdb and pg_ctl: PATH first, then Debian's versioned layout.
find_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return 0
  fi
  local candidate
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! bindir="$(find_bindir)"; then
  echo "postgres.sh: PostgreSQL is not installed; installing it with apt-get"
  sudo=""
  $as_root || sudo="sudo"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; then
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  fi
  bindir="$(find_bindir)" || { echo "postgres.sh: initdb and pg_ctl are still missing after apt-get"; exit 1; }
fi

if $as_root; then
  id postgres >/dev/null 2>&1 || { echo "postgres.sh: there is no 'postgres' user to run the server as"; exit 1; }
  chown postgres "$dir"
fi

# Unix socket paths are limited to about 100 bytes; a deep checkout falls back to /tmp.
sockets="$dir"
if [ "${#sockets}" -gt 80 ]; then
  sockets="/tmp/kairos-pg-$port"
  mkdir -p "$sockets"
  $as_root && chown postgres "$sockets"
fi

# The port a running cluster actually listens on is line 4 of its postmaster.pid.
running_port() {
  as_owner "$bindir/pg_ctl" status -D "$dir" >/dev/null 2>&1 || return 1
  sed -n 4p "$dir/postmaster.pid"
}

if live_port="$(running_port)"; then
  echo "postgres.sh: reusing the cluster already running in $dir"
  echo "postgres://postgres@127.0.0.1:$live_port/postgres" >&3
  exit 0
fi

if [ ! -f "$dir/PG_VERSION" ]; then
  echo "postgres.sh: creating a cluster in $dir"
  as_owner "$bindir/initdb" -D "$dir" --auth=trust -U postgres --encoding=UTF8 --locale=C >/dev/null
fi

# Another cluster (say, one left by an earlier run elsewhere) may hold the port: take the next free one.
port_busy() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
tries=0
while port_busy "$port"; do
  tries=$((tries + 1))
  [ "$tries" -le 100 ] || { echo "postgres.sh: no free port near ${KAIROS_PG_PORT:-55432}"; exit 1; }
  port=$((port + 1))
done

echo "postgres.sh: starting PostgreSQL on 127.0.0.1:$port (log: $log)"
# The server must not inherit fd 3 (our stdout): a caller reading it with $(...) would wait for it forever.
if ! as_owner "$bindir/pg_ctl" -D "$dir" -l "$log" -w -t 60 \
  -o "-p $port -k $sockets -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null 3>&-; then
  echo "postgres.sh: PostgreSQL did not start; the end of $log:"
  tail -20 "$log" || true
  exit 1
fi
echo "postgres://postgres@127.0.0.1:$port/postgres" >&3
