//! Failed AUTH attempts per client address, across connections and listeners: an address
//! that fails [`MAX_FAILURES`] times within [`WINDOW`] is refused before any password is
//! checked, until the window has passed (the defaults of fail2ban). A session's own limit
//! (`max_auth_failures`) only ends one connection; this one outlasts reconnecting.
//!
//! Sans-I/O: the caller passes the time. The table holds at most [`MAX_ADDRESSES`]
//! entries, so that a spread of addresses cannot make it grow without bound.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::reply::{Enhanced, Reply};

/// Failures that block an address.
pub const MAX_FAILURES: u32 = 5;

/// How long failures count, from an address's first failure; a blocked address is
/// refused until then.
pub const WINDOW: Duration = Duration::from_secs(10 * 60);

/// Addresses remembered at most; past that, the oldest windows are forgotten first.
pub const MAX_ADDRESSES: usize = 10_000;

/// Failures per client address.
#[derive(Debug, Default)]
pub struct AuthFailures {
    table: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// The first failure of the current window.
    since: Instant,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= WINDOW
    }
}

impl AuthFailures {
    /// Whether `ip` has failed too often to be let try again now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(table) = self.table.lock() else {
            return false;
        };
        table
            .get(&key(ip))
            .is_some_and(|e| !e.expired(now) && e.failures >= MAX_FAILURES)
    }

    /// Records a failure of `ip`; returns whether `ip` is blocked now.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut table) = self.table.lock() else {
            return false;
        };
        let ip = key(ip);
        if !table.contains_key(&ip) && table.len() >= MAX_ADDRESSES {
            make_room(&mut table, now);
        }
        let entry = table.entry(ip).or_insert(Entry {
            failures: 0,
            since: now,
        });
        if entry.expired(now) {
            *entry = Entry {
                failures: 0,
                since: now,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.failures >= MAX_FAILURES
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.table.lock().map_or(0, |t| t.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The reply to a blocked address; the connection is closed after it.
pub fn blocked_reply() -> Reply {
    Reply::new(
        421,
        Enhanced(4, 7, 0),
        format!(
            "Too many failed authentication attempts from your address; try again in {} minutes",
            WINDOW.as_secs().div_ceil(60)
        ),
    )
}

/// One client: an IPv4 address, or an IPv6 /64, which one host usually has whole.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// Forgets expired windows; if none has expired, the oldest window of an address that is
/// not blocked, so that spreading failures over many addresses does not unblock one.
fn make_room(table: &mut HashMap<IpAddr, Entry>, now: Instant) {
    table.retain(|_, e| !e.expired(now));
    if table.len() >= MAX_ADDRESSES {
        let oldest = table
            .iter()
            .min_by_key(|(_, e)| (e.failures >= MAX_FAILURES, e.since))
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            table.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_blocked_after_too_many_failures_until_the_window_passes() {
        let t = AuthFailures::default();
        let start = Instant::now();
        let a = ip("192.0.2.1");
        for i in 1..MAX_FAILURES {
            assert!(!t.failed(a, start), "failure {i}");
            assert!(!t.blocked(a, start));
        }
        assert!(t.failed(a, start + Duration::from_secs(1)));
        assert!(t.blocked(a, start + Duration::from_secs(2)));
        assert!(
            !t.blocked(ip("192.0.2.2"), start),
            "other addresses are not"
        );
        assert!(t.blocked(a, start + WINDOW - Duration::from_secs(1)));
        assert!(!t.blocked(a, start + WINDOW), "the window has passed");
        // A new window starts from nothing.
        assert!(!t.failed(a, start + WINDOW));
        assert!(!t.blocked(a, start + WINDOW));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_its_address() {
        let t = AuthFailures::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            t.failed(ip(&format!("2001:db8:1:2::{i:x}")), now);
        }
        assert!(t.blocked(ip("2001:db8:1:2:ffff::1"), now));
        assert!(!t.blocked(ip("2001:db8:1:3::1"), now));
        for _ in 0..MAX_FAILURES {
            t.failed(ip("::ffff:192.0.2.7"), now);
        }
        assert!(t.blocked(ip("192.0.2.7"), now));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_blocked_addresses() {
        let t = AuthFailures::default();
        let start = Instant::now();
        let attacker = ip("198.51.100.1");
        for _ in 0..MAX_FAILURES {
            t.failed(attacker, start + Duration::from_secs(1));
        }
        let mut n: u32 = 0;
        while (n as usize) < 2 * MAX_ADDRESSES {
            let spread = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            t.failed(spread, start + Duration::from_secs(2));
            n += 1;
        }
        assert!(t.len() <= MAX_ADDRESSES, "{}", t.len());
        // The blocked address is the oldest entry, yet it stays blocked: unblocked
        // addresses are forgotten first.
        assert!(t.blocked(attacker, start + Duration::from_secs(3)));
        // Expired windows make room before anything younger is dropped.
        let later = start + WINDOW + Duration::from_secs(5);
        t.failed(ip("203.0.113.9"), later);
        assert_eq!(t.len(), 1, "every expired window was forgotten");
    }

    #[test]
    fn the_reply_says_what_to_do() {
        let r = blocked_reply();
        assert_eq!(r.code, 421);
        assert!(r.text().contains("try again in 10 minutes"), "{}", r.text());
    }
}
