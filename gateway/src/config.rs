//! Gateway configuration.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{BusConfig, ConfigError, Source, millis_or, parse_or};
use secrecy::SecretSlice;

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Broker settings.
    pub bus: BusConfig,
    /// Signs (gateway) or verifies (workers) the actor of every command.
    pub actor_key: platform::actor::ActorKey,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Key that signs operation ids, shared by every replica (hex, at least 32 bytes).
    pub operation_key: SecretSlice<u8>,
    /// How long a read waits for its reply before answering 504.
    pub query_timeout: Duration,
    /// Upper bound for `Prefer: wait=N`.
    pub max_wait: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: u64,
    /// Rate limits.
    pub limits: crate::rate_limit::Limits,
    /// argon2id cost for hashing passwords at registration.
    pub hash: platform::password::HashParams,
    /// How often the token keys are refreshed from accounts.
    pub jwks_refresh: Duration,
    /// How often the list of deleted users (revoked tokens) is refreshed.
    pub revocation_refresh: Duration,
    /// How long open requests may run on after SIGTERM.
    pub grace: Duration,
    /// Timeouts and connection caps of the HTTP server.
    pub http: platform::http::HttpLimits,
    /// When a service's queries stop being asked (circuit breaking).
    pub breaker: crate::breaker::BreakerConfig,
    /// Bounds and thresholds of `/healthz`.
    pub health: platform::healthz::HealthConfig,
}

impl GatewayConfig {
    /// Reads `HTTP_ADDR`, `OPERATION_KEY`, `QUERY_TIMEOUT_MS`, `MAX_WAIT_MS`, `BODY_LIMIT`,
    /// `JWKS_REFRESH_MS`, `GRACE_MS`, the `HTTP_*` limits and the bus variables.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let Some(key_hex) = source.get("OPERATION_KEY") else {
            return Err(ConfigError::new(
                "OPERATION_KEY",
                "",
                "required: 64+ hex characters shared by all gateway replicas (e.g. `openssl rand -hex 32`)",
            ));
        };
        let key = hex::decode(key_hex.trim())
            .map_err(|_| ConfigError::new("OPERATION_KEY", "<hidden>", "must be hex"))?;
        if key.len() < 32 {
            return Err(ConfigError::new(
                "OPERATION_KEY",
                "<hidden>",
                "must be at least 32 bytes",
            ));
        }
        let body_limit: u64 = parse_or(source, "BODY_LIMIT", 64 * 1024)?;
        if !(1024..=10 * 1024 * 1024).contains(&body_limit) {
            let value = body_limit.to_string();
            return Err(ConfigError::new(
                "BODY_LIMIT",
                &value,
                "must be 1 KiB to 10 MiB",
            ));
        }
        Ok(Self {
            bus: BusConfig::from_source(source)?,
            actor_key: platform::actor::ActorKey::from_source(source)?,
            http_addr: parse_or(
                source,
                "HTTP_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            )?,
            operation_key: SecretSlice::from(key),
            query_timeout: millis_or(
                source,
                "QUERY_TIMEOUT_MS",
                Duration::from_secs(5),
                50..=60_000,
            )?,
            max_wait: millis_or(source, "MAX_WAIT_MS", Duration::from_secs(30), 0..=30_000)?,
            body_limit,
            limits: crate::rate_limit::Limits::from_source(source)?,
            hash: platform::password::HashParams::from_source(source)?,
            jwks_refresh: millis_or(
                source,
                "JWKS_REFRESH_MS",
                Duration::from_secs(300),
                1_000..=86_400_000,
            )?,
            revocation_refresh: millis_or(
                source,
                "REVOCATION_REFRESH_MS",
                Duration::from_secs(2),
                100..=600_000,
            )?,
            // Long enough for a `Prefer: wait` request (≤ 30 s) to get its answer.
            grace: millis_or(source, "GRACE_MS", Duration::from_secs(31), 0..=300_000)?,
            http: platform::http::HttpLimits::from_source(source)?,
            breaker: crate::breaker::BreakerConfig::from_source(source)?,
            health: platform::healthz::HealthConfig::from_source(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_operation_and_actor_keys_are_required_and_checked() {
        let mut source: HashMap<String, String> = HashMap::new();
        let error = GatewayConfig::from_source(&source).unwrap_err().to_string();
        assert!(error.contains("SWITCHYARD_OPERATION_KEY"), "{error}");
        source.insert("OPERATION_KEY".into(), "abcd".into());
        assert!(GatewayConfig::from_source(&source).is_err());
        source.insert("OPERATION_KEY".into(), "ab".repeat(32));
        let error = GatewayConfig::from_source(&source).unwrap_err().to_string();
        assert!(error.contains("SWITCHYARD_ACTOR_KEY"), "{error}");
        source.insert("ACTOR_KEY".into(), "cd".repeat(16));
        assert!(GatewayConfig::from_source(&source).is_err(), "16 bytes");
        source.insert("ACTOR_KEY".into(), "cd".repeat(32));
        let config = GatewayConfig::from_source(&source).unwrap();
        assert_eq!(config.max_wait, Duration::from_secs(30));
    }
}
