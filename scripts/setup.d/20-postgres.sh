# PostgreSQL for the Postgres source's tests: installed from Debian when
# missing, listening on 127.0.0.1:5432 with trust auth for local
# connections, and with wal_level=logical (logical replication), which
# needs a restart. Safe to run again: it changes only what is not so.

pg_psql() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc "$1"; }

if ! command -v pg_lsclusters >/dev/null; then
    apt_install postgresql postgresql-client
fi

pg_cluster=$(pg_lsclusters -h | awk 'NR == 1 { print $1 " " $2 }')
if [ -z "$pg_cluster" ]; then
    echo "setup: no PostgreSQL cluster found (pg_lsclusters)" >&2
    exit 1
fi
# shellcheck disable=SC2086
set -- $pg_cluster
pg_version=$1 pg_name=$2
pg_conf_dir=/etc/postgresql/$pg_version/$pg_name

if ! pg_lsclusters -h | awk 'NR == 1 { exit ($4 == "online") ? 0 : 1 }'; then
    step "starting PostgreSQL $pg_version/$pg_name"
    as_root pg_ctlcluster "$pg_version" "$pg_name" start
fi

if ! pg_psql "SELECT 1" >/dev/null 2>&1; then
    # A fresh Debian install: local TCP connections as postgres without a password.
    step "allowing trust auth for postgres on 127.0.0.1"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust' "$pg_conf_dir/pg_hba.conf"
    as_root pg_ctlcluster "$pg_version" "$pg_name" reload
fi

if [ "$(pg_psql "SHOW wal_level")" != logical ]; then
    step "setting wal_level=logical (restarting PostgreSQL $pg_version/$pg_name)"
    pg_psql "ALTER SYSTEM SET wal_level = logical"
    pg_psql "ALTER SYSTEM SET max_replication_slots = 64"
    pg_psql "ALTER SYSTEM SET max_wal_senders = 64"
    as_root pg_ctlcluster "$pg_version" "$pg_name" restart
    for _ in $(seq 1 30); do
        pg_psql "SELECT 1" >/dev/null 2>&1 && break
        sleep 1
    done
    [ "$(pg_psql "SHOW wal_level")" = logical ]
fi
