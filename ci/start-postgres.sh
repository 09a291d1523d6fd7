#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the catalog tests, and prints `export LAKEHOUSE_TEST_PG_URL=…`.
# Uses the server already running on 127.0.0.1:5432 when there is one (trust or the URL given in
# LAKEHOUSE_TEST_PG_URL); otherwise installs PostgreSQL from Debian (as root) and starts its cluster with trust
# authentication for 127.0.0.1 only, and a database `test`.
set -euo pipefail
url="${LAKEHOUSE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
say() { echo "start-postgres: $*" >&2; }

if ! command -v psql >/dev/null 2>&1 || ! command -v pg_lsclusters >/dev/null 2>&1; then
    if ! psql "$url" -c 'SELECT 1' >/dev/null 2>&1; then
        [[ "$(id -u)" == 0 ]] || { say "PostgreSQL is not installed and this is not root: install postgresql"; exit 1; }
        say "installing PostgreSQL"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client) >/dev/null
    fi
fi
if psql "$url" -c 'SELECT 1' >/dev/null 2>&1; then
    say "PostgreSQL ready at ${url%%\?*}"
    echo "export LAKEHOUSE_TEST_PG_URL='$url'"
    exit 0
fi

# Start (creating if needed) the first cluster, trusting local TCP connections.
cluster="$(pg_lsclusters -h | head -n 1)"
if [[ -z "$cluster" ]]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    pg_createcluster "$version" main >/dev/null
    cluster="$(pg_lsclusters -h | head -n 1)"
fi
read -r version name port _ <<<"$cluster"
hba="/etc/postgresql/$version/$name/pg_hba.conf"
if ! grep -q 'lakehouse-tests' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # lakehouse-tests' "$hba"
fi
pg_ctlcluster "$version" "$name" start 2>/dev/null || pg_ctlcluster "$version" "$name" reload
for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.2
done
url="postgres://postgres@127.0.0.1:$port/test"
if ! psql "postgres://postgres@127.0.0.1:$port/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    psql "postgres://postgres@127.0.0.1:$port/postgres" -c 'CREATE DATABASE test' >/dev/null
fi
psql "$url" -c 'SELECT 1' >/dev/null
say "PostgreSQL $version ready at $url"
echo "export LAKEHOUSE_TEST_PG_URL='$url'"
