#!/bin/sh
# Minimal twin of the official image's entry point: initialise once, create the user and
# database from the environment, run the init SQL, then run the server in the foreground.
set -eu
mkdir -p "$PGDATA" /var/run/postgresql && chown -R postgres "$PGDATA" /var/run/postgresql && chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  runuser -u postgres -- initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=md5 >/dev/null
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all md5" >> "$PGDATA/pg_hba.conf"
  runuser -u postgres -- pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -c "CREATE USER \"$POSTGRES_USER\" SUPERUSER PASSWORD '$POSTGRES_PASSWORD'"
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\""
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] && runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -U postgres -f "$f"
  done
  runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec runuser -u postgres -- "$@" -D "$PGDATA"
