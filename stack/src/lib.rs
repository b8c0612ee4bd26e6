//! The service table: one row per service the stack runs. `./dev` (the xtask) starts,
//! supervises, probes and injects faults from it; the test kit takes the dependency
//! addresses from it; the panel test and the deployment checks read it through
//! `./dev services`; and this crate's tests hold the Prometheus scrape configurations to it.
//!
//! Adding a service is a crate under `workers/`, its messages in `contracts`, and one row
//! in [`SERVICES`].

/// What a service is to the stack: the one public HTTP entry point, or a worker behind the
/// broker that serves only its health and metrics endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The HTTP gateway: public API, health and metrics on one address.
    Gateway,
    /// A worker: consumes from RabbitMQ, serves `/livez` `/readyz` `/healthz` `/metrics`.
    Worker,
}

/// The database a service owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// None: the service keeps no state of its own.
    None,
    /// A PostgreSQL database named after the service, owned by a login role of that name.
    Postgres,
    /// The MongoDB server (the service picks its database name).
    Mongo,
}

/// A generated secret a service is given, with the variable that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// `SWITCHYARD_OPERATION_KEY`: signs operation ids (the same on every gateway replica).
    OperationKey,
    /// `SWITCHYARD_KEY_ENCRYPTION_KEY_FILE`: the key that encrypts the token signing keys.
    KeyEncryptionKeyFile,
}

impl Secret {
    /// The environment variable that carries the secret.
    pub const fn variable(self) -> &'static str {
        match self {
            Secret::OperationKey => "SWITCHYARD_OPERATION_KEY",
            Secret::KeyEncryptionKeyFile => "SWITCHYARD_KEY_ENCRYPTION_KEY_FILE",
        }
    }
}

/// One service of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The service's name: its crate, its binary (`target/release/<name>`), its RabbitMQ
    /// user (`switchyard-<name>`), its Prometheus job and its log file.
    pub name: &'static str,
    /// Gateway or worker.
    pub kind: Kind,
    /// The loopback port of its HTTP address (the binary's own default).
    pub port: u16,
    /// The variable that sets that address.
    pub address_variable: &'static str,
    /// The database it owns.
    pub database: Database,
    /// Generated secrets it is given besides the actor key every service gets.
    pub secrets: &'static [Secret],
}

impl Service {
    /// `http://127.0.0.1:<port>`: health (`/readyz`), metrics and, for the gateway, the API.
    pub fn url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
    }

    /// `127.0.0.1:<port>`, as Prometheus scrapes it.
    pub fn address(&self) -> String {
        format!("{LOOPBACK}:{}", self.port)
    }
}

/// The address every process of the local stack listens on.
pub const LOOPBACK: &str = "127.0.0.1";

/// Every service, in start order: the workers first, so the gateway finds their queues.
pub const SERVICES: &[Service] = &[
    Service {
        name: "accounts",
        kind: Kind::Worker,
        port: 9102,
        address_variable: "SWITCHYARD_HEALTH_ADDR",
        database: Database::Postgres,
        secrets: &[Secret::KeyEncryptionKeyFile],
    },
    Service {
        name: "social",
        kind: Kind::Worker,
        port: 9103,
        address_variable: "SWITCHYARD_HEALTH_ADDR",
        database: Database::Postgres,
        secrets: &[],
    },
    Service {
        name: "catalog",
        kind: Kind::Worker,
        port: 9101,
        address_variable: "SWITCHYARD_HEALTH_ADDR",
        database: Database::Mongo,
        secrets: &[],
    },
    Service {
        name: "gateway",
        kind: Kind::Gateway,
        port: 8080,
        address_variable: "SWITCHYARD_HTTP_ADDR",
        database: Database::None,
        secrets: &[Secret::OperationKey],
    },
];

/// The service called `name`.
pub fn service(name: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.name == name)
}

/// The gateway's row.
pub fn gateway() -> &'static Service {
    // The table has exactly one gateway; the tests below hold it to that.
    SERVICES
        .iter()
        .find(|s| s.kind == Kind::Gateway)
        .unwrap_or(&SERVICES[SERVICES.len() - 1])
}

/// The workers, in start order.
pub fn workers() -> impl Iterator<Item = &'static Service> {
    SERVICES.iter().filter(|s| s.kind == Kind::Worker)
}

/// The PostgreSQL databases the services own (each named after its service).
pub fn postgres_databases() -> impl Iterator<Item = &'static str> {
    SERVICES
        .iter()
        .filter(|s| s.database == Database::Postgres)
        .map(|s| s.name)
}

/// Where the stack's dependencies listen (`./dev deps` starts them there).
pub mod deps {
    /// RabbitMQ's AMQP port.
    pub const AMQP_PORT: u16 = 5672;
    /// RabbitMQ's management API port.
    pub const RABBITMQ_MANAGEMENT_PORT: u16 = 15672;
    /// RabbitMQ's Prometheus endpoint.
    pub const RABBITMQ_PROMETHEUS_PORT: u16 = 15692;
    /// The MongoDB server (here the wire-protocol stand-in).
    pub const MONGO_PORT: u16 = 27017;
    /// PostgreSQL.
    pub const POSTGRES_PORT: u16 = 5432;
    /// RabbitMQ as `guest` (loopback only), for tests and operator tools.
    pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    /// RabbitMQ's management API as `guest`.
    pub const MANAGEMENT_URL: &str = "http://guest:guest@127.0.0.1:15672/api";
    /// The MongoDB server.
    pub const MONGO_URL: &str = "mongodb://127.0.0.1:27017";
    /// PostgreSQL as its superuser, without the password (`.dev/postgres.key`).
    pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_and_ports_are_unique_and_there_is_one_gateway() {
        let names: HashSet<_> = SERVICES.iter().map(|s| s.name).collect();
        let ports: HashSet<_> = SERVICES.iter().map(|s| s.port).collect();
        assert_eq!(names.len(), SERVICES.len());
        assert_eq!(ports.len(), SERVICES.len());
        let gateways: Vec<_> = SERVICES
            .iter()
            .filter(|s| s.kind == Kind::Gateway)
            .collect();
        assert_eq!(gateways.len(), 1);
        assert_eq!(gateway().name, "gateway");
        assert_eq!(SERVICES.last().map(|s| s.kind), Some(Kind::Gateway));
    }

    #[test]
    fn workers_set_their_health_address_and_the_gateway_its_http_address() {
        for s in SERVICES {
            let want = match s.kind {
                Kind::Gateway => "SWITCHYARD_HTTP_ADDR",
                Kind::Worker => "SWITCHYARD_HEALTH_ADDR",
            };
            assert_eq!(s.address_variable, want, "{}", s.name);
        }
    }
}
