//! Rate limits per client IP and per user (GCRA, via governor), with tighter limits on
//! login and registration.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use platform::config::{ConfigError, Source, parse_or};
use uuid::Uuid;

/// A limit: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Sustained requests per second (per minute for the auth limit).
    pub rate: NonZeroU32,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

/// The configured limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Every request, per client IP (per second).
    pub ip: Limit,
    /// Authenticated requests, per user (per second).
    pub user: Limit,
    /// Login and registration, per client IP (per minute).
    pub auth: Limit,
}

fn limit(source: &dyn Source, name: &str, rate: u32, burst: u32) -> Result<Limit, ConfigError> {
    let rate_name = format!("{name}_RATE");
    let burst_name = format!("{name}_BURST");
    let rate: u32 = parse_or(source, &rate_name, rate)?;
    let burst: u32 = parse_or(source, &burst_name, burst)?;
    Ok(Limit {
        rate: NonZeroU32::new(rate)
            .ok_or_else(|| ConfigError::new(&rate_name, "0", "must be at least 1"))?,
        burst: NonZeroU32::new(burst)
            .ok_or_else(|| ConfigError::new(&burst_name, "0", "must be at least 1"))?,
    })
}

impl Limits {
    /// Reads `RATE_LIMIT_IP_RATE`/`_BURST` (per second, default 1000/2000),
    /// `RATE_LIMIT_USER_RATE`/`_BURST` (per second, 100/200) and `RATE_LIMIT_AUTH_RATE`/`_BURST`
    /// (per minute, 30/10).
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            ip: limit(source, "RATE_LIMIT_IP", 1000, 2000)?,
            user: limit(source, "RATE_LIMIT_USER", 100, 200)?,
            auth: limit(source, "RATE_LIMIT_AUTH", 30, 10)?,
        })
    }
}

/// A refusal: how long to wait, and the limit that was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// Until a request would be allowed.
    pub retry_after: Duration,
    /// The burst size of the limit that refused.
    pub limit: u32,
}

/// The limiters.
#[derive(Clone)]
pub struct RateLimiter {
    ip: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    user: Arc<DefaultKeyedRateLimiter<Uuid>>,
    auth: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    limits: Limits,
    clock: DefaultClock,
}

impl RateLimiter {
    /// Limiters for `limits`.
    pub fn new(limits: Limits) -> Self {
        let per_second = |l: Limit| Quota::per_second(l.rate).allow_burst(l.burst);
        let per_minute = |l: Limit| Quota::per_minute(l.rate).allow_burst(l.burst);
        Self {
            ip: Arc::new(DefaultKeyedRateLimiter::keyed(per_second(limits.ip))),
            user: Arc::new(DefaultKeyedRateLimiter::keyed(per_second(limits.user))),
            auth: Arc::new(DefaultKeyedRateLimiter::keyed(per_minute(limits.auth))),
            limits,
            clock: DefaultClock::default(),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        limit: Limit,
    ) -> Result<(), Exceeded> {
        limiter.check_key(key).map_err(|not_until| Exceeded {
            retry_after: not_until.wait_time_from(self.clock.now()),
            limit: limit.burst.get(),
        })
    }

    /// Any request from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Exceeded> {
        self.check(&self.ip, &ip, self.limits.ip)
    }

    /// An authenticated request by `user`.
    pub fn check_user(&self, user: Uuid) -> Result<(), Exceeded> {
        self.check(&self.user, &user, self.limits.user)
    }

    /// A login or registration from `ip`.
    pub fn check_auth(&self, ip: IpAddr) -> Result<(), Exceeded> {
        self.check(&self.auth, &ip, self.limits.auth)
    }

    /// Forgets keys that are back to full capacity, so memory stays bounded by the
    /// number of recently active clients.
    pub async fn run_cleanup(self, cancel: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            self.ip.retain_recent();
            self.user.retain_recent();
            self.auth.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32) -> Limits {
        let l = Limit {
            rate: NonZeroU32::MIN,
            burst: NonZeroU32::new(burst).unwrap(),
        };
        Limits {
            ip: l,
            user: l,
            auth: l,
        }
    }

    #[test]
    fn a_burst_passes_then_the_next_request_is_told_when_to_retry() {
        let limiter = RateLimiter::new(limits(3));
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(limiter.check_ip(ip).is_ok());
        }
        let exceeded = limiter.check_ip(ip).unwrap_err();
        assert_eq!(exceeded.limit, 3);
        assert!(
            exceeded.retry_after > Duration::ZERO && exceeded.retry_after <= Duration::from_secs(1)
        );
        assert!(
            limiter.check_ip([127, 0, 0, 2].into()).is_ok(),
            "other clients are not affected"
        );
    }
}
