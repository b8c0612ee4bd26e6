//! Schema migrations, applied at startup, versioned in the repository.
//!
//! Each service's migrations run after the shared messaging ones, in one transaction
//! under an advisory lock, so replicas starting together apply each exactly once.

/// One migration: a version (unique, ascending) and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Ascending version; the shared ones use 1–99, services 100 and up.
    pub version: i32,
    /// Short name, for the log.
    pub name: &'static str,
    /// The SQL, run as one batch.
    pub sql: &'static str,
}

/// Tables every PostgreSQL service has (inbox, operations, outbox).
pub const MESSAGING: Migration = Migration {
    version: 1,
    name: "messaging",
    sql: include_str!("../../migrations/0001_messaging.sql"),
};

/// The request fingerprint recorded with each outcome.
pub const FINGERPRINTS: Migration = Migration {
    version: 2,
    name: "request fingerprints",
    sql: include_str!("../../migrations/0002_request_fingerprints.sql"),
};

/// Arbitrary constant naming our advisory lock.
const LOCK_KEY: i64 = 0x5357_4954_4348; // "SWITCH"

/// Applies what is missing of [`MESSAGING`], [`FINGERPRINTS`] and `migrations`.
pub async fn run(pool: &super::Pool, migrations: &[Migration]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut client = pool.get().await.context("cannot connect to PostgreSQL")?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut all = vec![MESSAGING, FINGERPRINTS];
    all.extend_from_slice(migrations);
    all.sort_by_key(|m| m.version);
    for migration in all.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            anyhow::anyhow!(
                "migration {} ({}) failed: {}",
                migration.version,
                migration.name,
                super::describe(&e)
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        // Not `version`: the flat log line already carries the service's version there.
        tracing::info!(
            migration = migration.version,
            migration_name = migration.name,
            "migration applied"
        );
    }
    tx.commit().await?;
    Ok(())
}
