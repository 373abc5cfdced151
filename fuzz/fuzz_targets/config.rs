//! The configuration file: `Config::from_text` over arbitrary text, and the duration and
//! size parsers over the same text.
//!
//! Checked on every input:
//! - every duration a parser or an accepted configuration holds is more than zero and at
//!   most 366 days; every accepted size is more than zero;
//! - an accepted configuration keeps its own rules: no outbound listener off loopback
//!   relays for anyone without `open_relay = "i-know"` (security.md rule 8), AUTH
//!   `local` has users and `passthrough` an upstream.
//!
//! Listener addresses may be host names, which the configuration resolves: run this
//! target without a network (`unshare -n`, see README.md) so that no lookup leaves the
//! machine.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sealpost::config::{parse_duration, parse_size, AuthMode, Config, Mode, Overrides};

const MAX: Duration = Duration::from_secs(366 * 86400);

fn check_duration(what: &str, d: Duration) {
    assert!(
        d > Duration::ZERO && d <= MAX,
        "{what} = {d:?} was accepted"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text) {
        check_duration("parse_duration", d);
    }
    if let Ok(n) = parse_size(text) {
        assert!(n > 0, "a size of zero was accepted");
    }
    let Ok(cfg) = Config::from_text("fuzz.toml", text, &Overrides::default(), || {
        Ok("/nonexistent".into())
    }) else {
        return;
    };
    check_duration("delivery.budget", cfg.budget);
    check_duration("delivery.lifetime", cfg.lifetime);
    check_duration("delivery.retry", cfg.retry);
    assert!(cfg.max_plaintext > 0);
    assert!(
        !cfg.listeners.is_empty(),
        "a configuration without a listener"
    );
    for l in &cfg.listeners {
        check_duration("command_timeout", l.limits.command_timeout);
        check_duration("data_timeout", l.limits.data_timeout);
        assert!(l.limits.spill_above > 0);
        let open = l.mode == Mode::Outbound
            && !l.address.ip().is_loopback()
            && !l.open_relay
            && !l.require_auth;
        assert!(!open, "an open relay was accepted: {l:?}");
        if l.require_auth {
            assert!(
                l.auth != AuthMode::None || !l.allow.is_empty(),
                "AUTH required but impossible: {l:?}"
            );
        }
        if l.auth == AuthMode::Local {
            assert!(!cfg.users.is_empty(), "auth = local without users");
        }
        if l.auth == AuthMode::Passthrough {
            assert!(
                cfg.upstream.is_some(),
                "auth = passthrough without upstream"
            );
        }
    }
});
