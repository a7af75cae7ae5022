-- The app database beside Dagster's own (POSTGRES_DB=dagster).
CREATE DATABASE poflow OWNER poflow;
