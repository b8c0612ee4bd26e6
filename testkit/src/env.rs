//! Where the test dependencies run: `./dev deps` starts them at these defaults, and
//! `./dev test` exports the `SWITCHYARD_TEST_*` variables; the defaults are the service
//! table's (`stack::deps`).

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// RabbitMQ.
pub fn amqp_url() -> String {
    var_or("SWITCHYARD_TEST_AMQP_URL", stack::deps::AMQP_URL)
}

/// RabbitMQ's management API (queue listings, closing connections).
pub fn management_url() -> String {
    var_or("SWITCHYARD_TEST_RABBITMQ_API", stack::deps::MANAGEMENT_URL)
}

/// The PostgreSQL server, as its superuser (tests create databases of their own).
pub fn postgres_url() -> String {
    var_or("SWITCHYARD_TEST_POSTGRES_URL", stack::deps::POSTGRES_URL)
}

/// The URL of database `name` on the test PostgreSQL server.
pub fn database_url(name: &str) -> String {
    let base = postgres_url();
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => base,
    }
}

/// The MongoDB server (the wire-protocol stand-in here).
pub fn mongo_url() -> String {
    var_or("SWITCHYARD_TEST_MONGO_URL", stack::deps::MONGO_URL)
}
