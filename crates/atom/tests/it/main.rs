//! Integration tests: the application on port 0 and the real `atom` binary, over real HTTP,
//! against the suite's backend (SQLite, or PostgreSQL and Redis when `ATOM_TEST_DATABASE_URL`
//! and `ATOM_TEST_REDIS_URL` are set). One test binary keeps link time down.

mod binary;
mod common;
mod identity_support;
mod proxy;
mod socket_peer;

mod audit_log;
mod auth_accounts;
mod auth_api_keys;
mod auth_authorization;
mod auth_login;
mod auth_revocation;
mod auth_sessions;
mod auth_tokens;
mod backup;
mod backup_integrity;
mod cache;
mod cli;
mod conversations;
mod conversations_nodes;
mod conversations_socket;
mod db_faults;
mod db_monitoring;
mod edge;
mod errors;
mod health;
mod keys;
mod logging;
mod metrics_exposure;
mod migrations;
mod openapi;
mod operator;
mod outage;
mod overload;
mod query_plans;
mod realtime;
mod realtime_admin;
mod realtime_events;
mod realtime_expiry;
mod realtime_handshakes;
mod realtime_nodes;
mod realtime_revocation;
mod realtime_support;
mod redis_faults;
mod shutdown;
mod sqlite_files;
mod validation;
