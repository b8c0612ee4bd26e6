//! Statements prepared once per connection and cached there.
//!
//! `tokio_postgres` given SQL text prepares it on every call: an extra round trip and a
//! parse and plan in PostgreSQL each time, which on the hot path cost more than the work
//! itself. These take the same arguments as the client's methods and use the pool's
//! per-connection statement cache instead.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

use super::GenericClient;

/// Parameters of a statement.
pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Executes `sql`, returning the rows it changed.
pub async fn execute<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

/// Runs `sql`, returning its rows.
pub async fn query<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// Runs `sql`, returning its one row if there is one.
pub async fn query_opt<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_opt(&statement, params).await
}

/// Runs `sql`, returning its one row (an error if there is not exactly one).
pub async fn query_one<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_one(&statement, params).await
}
