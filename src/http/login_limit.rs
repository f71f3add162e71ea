//! The rate limit on starting logins, per client address and instance (`[login]`).
//!
//! Each `GET /api/auth/login` stores a pending login, so an anonymous loop of them is the
//! cheapest way to churn the store's cap on logins in progress (displacing real users' logins).
//! A token bucket per client address (an IPv6 client is its /64, which one host usually holds
//! whole) refuses the excess with `429` before anything is stored, and a second bucket per
//! network (IPv4 /24, IPv6 /48, [`NETWORK_FACTOR`] times as large) stops one attacker from
//! multiplying the budget with the addresses of a subnet. The total of logins in progress is
//! capped separately, in the shared store.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::clock::{OncePerInterval, unix_now};
use crate::http::proxy::headers::X_FORWARDED_FOR;
use crate::http::server::client_address::client_network;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Checks between two sweeps of addresses whose buckets are full again (bounded memory).
const SWEEP_EVERY: u32 = 1024;

/// How many client addresses' worth of login starts a whole network (IPv4 /24, IPv6 /48)
/// gets: enough for a campus or carrier whose NAT pool spans a few addresses of one prefix,
/// far below the hundreds (IPv4) or tens of thousands (IPv6 /64s) of addresses it holds.
/// Each address's own budget already admits a whole NAT's burst of logins, and what one
/// network may start bounds how fast its flood displaces other people's logins in progress.
pub const NETWORK_FACTOR: u32 = 2;

/// At most one warning of each kind (displaced pending logins, a proxy that is not trusted)
/// per this many seconds.
const WARNING_INTERVAL_SECS: u64 = 60;

/// Login starts per client address.
pub struct LoginRateLimit {
    limiter: Option<(
        DefaultKeyedRateLimiter<IpAddr>,
        DefaultKeyedRateLimiter<IpAddr>,
    )>,
    clock: DefaultClock,
    checks: AtomicU32,
    /// When each kind of warning was last given ([`DISPLACED`], [`UNTRUSTED_PROXY`]).
    warnings: OncePerInterval,
    /// Whether `server.trusted_proxies` names any proxy.
    trusts_proxies: bool,
}

/// The warning that new logins displace others from the total cap.
const DISPLACED: &str = "displaced";

/// The warning that refusals come from behind a proxy that is not trusted.
const UNTRUSTED_PROXY: &str = "untrusted-proxy";

impl LoginRateLimit {
    /// `per_minute` starts per address (0: no limit), after a burst of `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            let network = |value: NonZeroU32| {
                value.saturating_mul(NETWORK_FACTOR.try_into().unwrap_or(NonZeroU32::MIN))
            };
            (
                RateLimiter::dashmap(Quota::per_minute(rate).allow_burst(burst)),
                RateLimiter::dashmap(Quota::per_minute(network(rate)).allow_burst(network(burst))),
            )
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
            checks: AtomicU32::new(0),
            warnings: OncePerInterval::new(Duration::from_secs(WARNING_INTERVAL_SECS), 2),
            trusts_proxies: false,
        }
    }

    /// This limit, told whether `server.trusted_proxies` names any proxy (when none does, a
    /// refused start that came with `X-Forwarded-For` is worth a warning).
    pub fn trusting_proxies(mut self, trusts_proxies: bool) -> Self {
        self.trusts_proxies = trusts_proxies;
        self
    }

    /// Counts a login start from `client` with `headers`; `Err` with how long to wait when
    /// over the limit. A refusal of a request that came through an untrusted proxy is
    /// reported (see [`Self::report_refused_behind_untrusted_proxy`]).
    pub fn admit(&self, client: IpAddr, headers: &axum::http::HeaderMap) -> Result<(), Duration> {
        self.check(client).inspect_err(|_| {
            if !self.trusts_proxies && headers.contains_key(X_FORWARDED_FOR) {
                self.report_refused_behind_untrusted_proxy(client);
            }
        })
    }

    /// Records that new logins displaced `count` others from the total cap: many addresses are
    /// starting logins at once (a flood, or a cap too small for the traffic). Warns at most
    /// once a minute.
    pub fn report_displaced_logins(&self, count: usize) {
        if self.warnings.due(DISPLACED, unix_now()) {
            tracing::warn!(
                displaced = count,
                "login.max_pending_total reached: new logins displace the oldest in progress \
                 (a login flood from many addresses, or a cap too small for the traffic)"
            );
        }
    }

    /// Records a refused start from `client` whose request came with `X-Forwarded-For` while
    /// no proxy is trusted: most likely a load balancer that is not in
    /// `server.trusted_proxies`, so every client behind it shares one address's budget (the
    /// lockout an operator must hear about). Warns at most once a minute, naming the client's
    /// network only.
    pub fn report_refused_behind_untrusted_proxy(&self, client: IpAddr) {
        if self.warnings.due(UNTRUSTED_PROXY, unix_now()) {
            tracing::warn!(
                network = %client_network(client),
                "login starts refused by the rate limit for an address whose requests carry \
                 X-Forwarded-For, but server.trusted_proxies is empty: if this is your load \
                 balancer or ingress, list it there, or all its users share one budget"
            );
        }
    }

    /// Counts a login start from `client`; `Err` with how long to wait when over the limit.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let Some((by_address, by_network)) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for limiter in [by_address, by_network] {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        let wait = |not_until: governor::NotUntil<_>| not_until.wait_time_from(self.clock.now());
        by_address.check_key(&bucket(client)).map_err(wait)?;
        by_network.check_key(&network(client)).map_err(wait)
    }
}

/// The network a client belongs to (see [`client_network`]), by its first address.
fn network(client: IpAddr) -> IpAddr {
    client_network(client).addr()
}

/// The address a bucket is kept for: IPv4 whole, IPv6 by /64.
fn bucket(client: IpAddr) -> IpAddr {
    truncated(client, 32, 64)
}

/// `address` with all but its first `v4_bits` / `v6_bits` bits cleared.
fn truncated(address: IpAddr, v4_bits: u8, v6_bits: u8) -> IpAddr {
    crate::http::server::client_address::truncated(address, v4_bits, v6_bits).addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_client_waits_and_others_do_not() {
        let limit = LoginRateLimit::new(6, 3);
        let client: IpAddr = "198.51.100.4".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(client).is_ok());
        }
        let wait = limit.check(client).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(limit.check("198.51.100.5".parse().unwrap()).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_prefix() {
        let limit = LoginRateLimit::new(1, 1);
        assert!(limit.check("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(limit.check("2001:db8:1:2::ffff".parse().unwrap()).is_err());
        assert!(limit.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_addresses_of_one_network_share_a_larger_budget() {
        let limit = LoginRateLimit::new(1, 1);
        // Two addresses of one /24 get one start each; the third address is refused.
        for host in 1..=NETWORK_FACTOR {
            let client: IpAddr = format!("198.51.100.{host}").parse().unwrap();
            assert!(limit.check(client).is_ok(), "{client}");
        }
        assert!(limit.check("198.51.100.99".parse().unwrap()).is_err());
        assert!(
            limit.check("198.51.101.1".parse().unwrap()).is_ok(),
            "another /24"
        );
        // The same for /64s of one IPv6 /48.
        for subnet in 1..=NETWORK_FACTOR {
            let client: IpAddr = format!("2001:db8:1:{subnet:x}::1").parse().unwrap();
            assert!(limit.check(client).is_ok(), "{client}");
        }
        assert!(limit.check("2001:db8:1:ff::1".parse().unwrap()).is_err());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = LoginRateLimit::new(0, 1);
        let client: IpAddr = "198.51.100.4".parse().unwrap();
        assert!((0..100).all(|_| limit.check(client).is_ok()));
    }
}
