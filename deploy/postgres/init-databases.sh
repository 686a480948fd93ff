#!/bin/sh
# First start of the PostgreSQL volume: one role and one database each for MLflow's backend
# store, Feast's SQL registry and Airflow's metadata (passwords from the compose environment, i.e. .env).
set -eu

create() {
  role="$1" password="$2"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$role" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
SQL
}

create mlflow "$MLFLOW_DB_PASSWORD"
create feast "$FEAST_DB_PASSWORD"
# Airflow's metadata (compose profile airflow); skipped where no password is given.
if [ -n "${AIRFLOW_DB_PASSWORD:-}" ]; then create airflow "$AIRFLOW_DB_PASSWORD"; fi
