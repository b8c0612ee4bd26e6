//! Statements run as the PostgreSQL superuser, and reads of a test database.

use crate::env;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("postgres reachable");
    tokio::spawn(connection);
    client
}

/// Runs `sql` (statements separated by `;`, one at a time: CREATE and DROP DATABASE
/// refuse to run in a batch) on the server as its superuser.
pub async fn admin(sql: &str) {
    let client = connect(&env::postgres_url()).await;
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        client.batch_execute(statement).await.expect(statement);
    }
}

/// The rows `statement` returns in database `database`.
pub async fn query(database: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    let client = connect(&env::database_url(database)).await;
    client.query(statement, &[]).await.expect(statement)
}

/// `count(*)` of `table` in `database`.
pub async fn count(database: &str, table: &str) -> i64 {
    query(database, &format!("SELECT count(*) FROM {table}")).await[0].get(0)
}
