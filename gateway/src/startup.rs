//! Building and running the gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use platform::bus::Bus;
use platform::cli::Service;
use platform::config::{ConfigError, Source};
use platform::healthz::{Health, Probe};
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::breaker::Breakers;
use crate::config::GatewayConfig;
use crate::dispatch::Dispatcher;
use crate::operation_id::OperationIds;
use crate::rate_limit::RateLimiter;
use crate::routes::{self, State};

/// A built gateway: connected to the broker and bound to its port.
pub struct Application {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    bus: Bus,
    shutdown: CancellationToken,
    grace: std::time::Duration,
}

impl Application {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Service for Application {
    const NAME: &'static str = "gateway";
    const HEALTH_VARIABLE: &'static str = "HTTP_ADDR";
    const HEALTH_PORT: u16 = 8080;
    type Config = GatewayConfig;

    fn config(source: &dyn Source) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_source(source)
    }

    /// Connects to RabbitMQ, declares the exchanges and binds `http_addr` (port 0 picks
    /// a free port, for tests).
    async fn build(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let bus = Bus::connect(&config.bus, "gateway", true).await?;
        let ids = OperationIds::new(&config.operation_key).context("bad operation key")?;
        let services = [
            contracts::catalog::SERVICE,
            contracts::accounts::SERVICE,
            contracts::social::SERVICE,
        ];
        let breakers = Breakers::new(config.breaker, Some(bus.metrics().clone()), &services);
        let dispatcher = Dispatcher::new(
            bus.clone(),
            ids,
            config.query_timeout,
            config.actor_key.clone(),
            breakers,
        );
        let verifier = Verifier::default();
        let limiter = RateLimiter::new(config.limits);
        tokio::spawn(verifier.clone().run_refresher(
            dispatcher.clone(),
            config.jwks_refresh,
            shutdown.clone(),
        ));
        tokio::spawn(verifier.clone().run_revocations(
            dispatcher.clone(),
            config.revocation_refresh,
            shutdown.clone(),
        ));
        tokio::spawn(limiter.clone().run_cleanup(shutdown.clone()));
        let health = gateway_health(config.health, &bus, &verifier, config.revocation_refresh);
        let state = Arc::new(State {
            health,
            dispatcher,
            max_wait: config.max_wait,
            body_limit: config.body_limit,
            body_timeout: config.http.body_timeout,
            verifier,
            limiter,
            hash: config.hash,
        });
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        let addr = listener.local_addr()?;
        let server = platform::http::serve(
            listener,
            routes::api(state),
            shutdown.clone(),
            Some(bus.metrics().clone()),
            config.http,
        );
        tracing::info!(%addr, prefix = %config.bus.prefix, "gateway listening");
        Ok(Self {
            addr,
            server,
            bus,
            shutdown,
            grace: config.grace,
        })
    }

    /// Serves until shutdown, then stops accepting, lets open requests finish within the
    /// grace period, and closes the broker connection.
    async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut server = self.server;
        tokio::select! {
            _ = &mut server => {}
            () = self.shutdown.cancelled() => {
                tracing::info!(grace_ms = self.grace.as_millis() as u64, "shutting down: no new connections, finishing open requests");
                if tokio::time::timeout(self.grace, &mut server).await.is_err() {
                    tracing::warn!("grace period over, closing the remaining connections");
                    server.abort();
                }
            }
        }
        self.shutdown.cancel();
        self.bus.close().await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// The gateway's dependencies: the broker, the token keys from accounts (without them no
/// authenticated request can be served) and the list of deleted users (stale when its
/// refresh keeps failing: a deleted user's token would then work on this replica).
fn gateway_health(
    config: platform::healthz::HealthConfig,
    bus: &Bus,
    verifier: &Verifier,
    refresh: std::time::Duration,
) -> Health {
    let keys = verifier.clone();
    let revocations = verifier.clone();
    // Ten refreshes missed in a row is not a blip.
    let stale = (refresh * 10).max(std::time::Duration::from_secs(10));
    Health::new(config)
        .with_broker(bus)
        .with("token_keys", move || {
            let loaded = keys.has_keys();
            async move {
                if loaded {
                    Probe::up()
                } else {
                    Probe::down("no token keys from accounts yet")
                }
            }
        })
        .with("revocations", move || {
            let age = revocations.revocations_age();
            async move {
                match age {
                    Some(age) if age <= stale => Probe::up(),
                    Some(age) => Probe::degraded(format!(
                        "the deleted-users list is {} s old (refreshes keep failing)",
                        age.as_secs()
                    )),
                    None => Probe::degraded("the deleted-users list is not fetched yet"),
                }
            }
        })
}
