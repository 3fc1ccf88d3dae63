use super::*;

#[test]
fn defaults_are_valid_and_use_sqlite_in_the_data_dir() {
    let config = Config::from_pairs([]).expect("defaults load");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
    assert!(matches!(config.database_target(), Ok(DatabaseTarget::Sqlite { path }) if path.ends_with("atom.db")));
    assert_eq!(config.log.format, LogFormat::Pretty);
}

#[test]
fn pairs_override_sections_by_prefix() {
    let config = Config::from_pairs([
        ("DATABASE_POOL_SIZE", "3"),
        ("LOG", "debug"),
        ("LOG_FORMAT", "json"),
        ("SHUTDOWN_GRACE_SECS", "5"),
        ("CACHE_TTL_SECS", "7"),
        ("CACHE_MAX_ENTRIES", "500"),
        ("TEST_DATABASE_URL", "ignored"),
        ("BACKUP_DIR", "/var/backups/atom"),
        ("BACKUP_INTERVAL_SECS", "3600"),
        ("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "5"),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "2"),
    ])
    .expect("loads");
    assert_eq!(config.backup_dir(), PathBuf::from("/var/backups/atom"));
    assert_eq!(config.backup.interval_secs, 3600);
    assert_eq!(config.backup.keep, 7);
    assert_eq!((config.cache.ttl_secs, config.cache.max_entries), (7, 500));
    assert_eq!(config.database.pool_size, 3);
    assert_eq!(config.log.filter, "debug");
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.shutdown.grace_secs, 5);
    assert_eq!((config.realtime.max_connections_per_address, config.realtime.max_connections_per_user), (5, 2));
}

#[test]
fn each_invalid_value_names_its_key() {
    let cases = [
        ("LISTEN", "not-an-address", "listen"),
        ("DATABASE_URL", "mysql://x", "database.url"),
        ("DATABASE_POOL_SIZE", "0", "database.pool_size"),
        ("DATABASE_POOL_SIZE", "many", "database.pool_size"),
        ("REDIS_URL", "http://x", "redis.url"),
        ("LOG_FORMAT", "xml", "log.format"),
        ("HTTP_BODY_LIMIT_BYTES", "1", "http.body_limit_bytes"),
        ("HTTP_MAX_HEADER_BYTES", "4096", "http.max_header_bytes"),
        ("PUBLIC_URL", "ftp://x", "public_url"),
        ("CACHE_TTL_SECS", "0", "cache.ttl_secs"),
        ("CACHE_MAX_ENTRIES", "0", "cache.max_entries"),
        ("DATABASE_POOL_SISE", "3", "database"),
        ("BACKUP_KEEP", "0", "backup.keep"),
        ("BACKUP_INTERVAL_SECS", "-1", "backup.interval_secs"),
        ("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "0", "realtime.max_connections_per_address"),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "0", "realtime.max_connections_per_user"),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "-3", "realtime.max_connections_per_user"),
        ("REALTIME_CONNECT_TIMEOUT_SECS", "0", "realtime.connect_timeout_secs"),
        ("REALTIME_EVENTS_PER_SECOND", "0", "realtime.events_per_second"),
        ("REALTIME_EVENT_BURST", "0", "realtime.event_burst"),
        ("REALTIME_REFUSED_EVENTS_PER_MINUTE", "0", "realtime.refused_events_per_minute"),
        ("REALTIME_ADAPTER_TIMEOUT_MS", "5", "realtime.adapter_timeout_ms"),
        ("CONVERSATIONS_MAX_BODY_BYTES", "0", "conversations.max_body_bytes"),
        ("CONVERSATIONS_MAX_MEMBERS", "1", "conversations.max_members"),
        ("CONVERSATIONS_PAGE_SIZE", "500", "conversations.page_size"),
        ("CONVERSATIONS_REPLAY_BATCH", "0", "conversations.replay_batch"),
        ("CONVERSATIONS_RETENTION_DAYS", "-1", "conversations.retention_days"),
        ("METRICS_LISTEN", "not-an-address", "metrics.listen"),
        ("CONNECTORS_PROXY_SIGNED_FORM_MAX_BYTES", "100", "connectors.proxy_signed_form_max_bytes"),
        ("CONNECTORS_PROXY_USE_WINDOW_SECS", "0", "connectors.proxy_use_window_secs"),
        ("METRICS_TOKEN", "short", "metrics.token"),
        ("METRICS_TOKEN", "sixteen chars or more but a space", "metrics.token"),
        ("METRICS_LISTEN", "127.0.0.1:8000", "metrics.listen"),
    ];
    for (key, value, expected) in cases {
        let err = Config::from_pairs([(key, value)]).expect_err(key);
        assert!(err.key.starts_with(expected), "{key}={value}: got key {} ({err})", err.key);
    }
}

#[test]
fn redaction_hides_credentials() {
    assert_eq!(redact_url("postgres://u:hunter2@db:5432/atom?sslmode=require"), "postgres://db:5432/atom");
    let config = Config::from_pairs([("DATABASE_URL", "postgres://u:hunter2@db/atom")]).expect("loads");
    let shown = config.to_redacted_json();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://db/atom"), "{shown}");
}
