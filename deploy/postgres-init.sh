#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d): the roles of
# README.md "Database roles" — the schema owner that runs the migrations, and the app's login role, a member
# of opencoach_app that owns nothing — the database, and the pgvector extension (needs the superuser).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE opencoach_owner LOGIN CREATEROLE PASSWORD '${OPENCOACH_OWNER_PASSWORD}';
CREATE DATABASE opencoach OWNER opencoach_owner;
\connect opencoach
CREATE EXTENSION IF NOT EXISTS vector;
CREATE ROLE opencoach_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE opencoach_web LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${OPENCOACH_WEB_PASSWORD}' IN ROLE opencoach_app;
SQL
