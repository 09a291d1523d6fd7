#!/usr/bin/env bash
# Makes sure the client libraries the query-server tests drive are installed, and prints
# `export LAKEHOUSE_TEST_PYTHON=…` (a Python with psycopg 3, from PyPI, in a virtual environment) and
# `export LAKEHOUSE_TEST_NODE_PATH=…` (Node's `pg`, from npm), both kept beside the build so that a second run
# installs nothing, and `export LAKEHOUSE_TEST_JDBC=…` (the PostgreSQL JDBC driver, from Debian, run by a JDK's
# single-file source launcher). psql comes with ci/start-postgres.sh.
set -euo pipefail
say() { echo "clients: $*" >&2; }
venv="${LAKEHOUSE_CLIENTS_VENV:-$HOME/.cache/lakehouse/clients-venv}"
if ! "$venv/bin/python" -c 'import psycopg' >/dev/null 2>&1; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        [[ "$(id -u)" == 0 ]] || { say "python3 -m venv is missing: install python3-venv"; exit 1; }
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >/dev/null
        python3 -m venv "$venv"
    fi
    say "installing psycopg 3 into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'psycopg[binary]==3.2.*' >&2
fi
say "psycopg $("$venv/bin/python" -c 'import psycopg; print(psycopg.__version__)') ready"
echo "export LAKEHOUSE_TEST_PYTHON='$venv/bin/python'"

node_dir="${LAKEHOUSE_CLIENTS_NODE:-$HOME/.cache/lakehouse/clients-node}"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    [[ "$(id -u)" == 0 ]] || { say "node and npm are missing: install nodejs and npm"; exit 1; }
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >/dev/null
fi
if [[ ! -f "$node_dir/node_modules/pg/package.json" ]]; then
    say "installing the npm package pg into $node_dir"
    mkdir -p "$node_dir"
    npm install --silent --no-audit --no-fund --prefix "$node_dir" 'pg@8' >&2
fi
say "node $(node --version) with pg $(node -p "require('$node_dir/node_modules/pg/package.json').version") ready"
echo "export LAKEHOUSE_TEST_NODE_PATH='$node_dir/node_modules'"

# The JDBC driver BI tools (DBeaver, Metabase…) are built on, and a JDK to run a test's source file with it.
jdbc=/usr/share/java/postgresql.jar
if ! command -v java >/dev/null 2>&1 || ! java --list-modules 2>/dev/null | grep -q '^jdk.compiler' || [[ ! -f "$jdbc" ]]; then
    [[ "$(id -u)" == 0 ]] || { say "install default-jdk-headless and libpostgresql-jdbc-java"; exit 1; }
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless libpostgresql-jdbc-java) >/dev/null
fi
say "$(java -version 2>&1 | head -1) with $(basename "$(readlink -f "$jdbc")") ready"
echo "export LAKEHOUSE_TEST_JDBC='$jdbc'"
