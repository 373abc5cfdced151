//! Config loading: defaults, files, flags, and errors that name the key and the line.

use super::*;

fn load_str(text: &str, ov: &Overrides) -> Result<Config, Error> {
    let user = Source {
        name: "test.toml",
        text,
    };
    let defaults = Source {
        name: "embedded defaults",
        text: DEFAULTS,
    };
    build(defaults, Some(user), ov, || Ok(PathBuf::from("/data")))
}

/// Why `text` (with no flags) is refused.
fn refusal(text: &str) -> String {
    match load_str(text, &Overrides::default()) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn embedded_defaults_are_valid() {
    let defaults = Source {
        name: "embedded defaults",
        text: DEFAULTS,
    };
    let c = build(defaults, None, &Overrides::default(), || {
        Ok(PathBuf::from("/data"))
    })
    .unwrap();
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.address, "127.0.0.1:2587".parse().unwrap());
    assert_eq!(l.mode, Mode::Outbound);
    assert!(!l.require_auth, "loopback needs no AUTH");
    assert!(c.upstream.is_none());
    assert_eq!(c.outbound_maildir, PathBuf::from("/data/Maildir"));
    assert_eq!(c.budget, Duration::from_secs(60));
    assert_eq!(c.lifetime, Duration::from_secs(5 * 86400));
}

#[test]
fn errors_name_key_and_line() {
    let text = "hostname = \"gw\"\n\n[[listener]]\nmode = \"outbound\"\naddress = \"nowhere\"\n";
    let err = refusal(text);
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("listener[0].address"), "{err}");

    let err = refusal("bogus = 1\n");
    assert!(err.contains("bogus"), "{err}");
    assert!(err.contains("line 1"), "{err}");

    let text = "[delivery]\nbudget = \"ten\"\n";
    let err = refusal(text);
    assert!(
        err.contains("line 2") && err.contains("delivery.budget"),
        "{err}"
    );
}

#[test]
fn public_listener_without_auth_is_refused() {
    let text = "[[listener]]\nmode = \"outbound\"\naddress = \"0.0.0.0:587\"\n";
    let err = refusal(text);
    assert!(err.contains("requires AUTH"), "{err}");
    let text =
        "[[listener]]\nmode = \"outbound\"\naddress = \"0.0.0.0:587\"\nallow = [\"10.0.0.0/8\"]\n";
    let c = load_str(text, &Overrides::default()).unwrap();
    assert!(c.listeners[0].require_auth);
    assert_eq!(c.listeners[0].allow.len(), 1);
}

#[test]
fn flags_override_the_file() {
    let text = "[upstream]\naddress = \"smtp.example.org:587\"\n";
    let ov = Overrides {
        listen: Some("127.0.0.1:10025".into()),
        upstream_tls: Some("tls".into()),
        inbound_listen: Some("127.0.0.1:10026".into()),
        deliver: Some("maildir:/var/mail/x".into()),
        ..Overrides::default()
    };
    let c = load_str(text, &ov).unwrap();
    let up = c.upstream.unwrap();
    assert_eq!(
        (up.host.as_str(), up.port, up.tls),
        ("smtp.example.org", 587, TlsMode::Implicit)
    );
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].address.port(), 10025);
    assert_eq!(c.listeners[1].mode, Mode::Inbound);
    assert_eq!(c.inbound_target, Target::Maildir("/var/mail/x".into()));

    let ov = Overrides {
        upstream: Some("maildir:/tmp/out".into()),
        ..Overrides::default()
    };
    let c = load_str(text, &ov).unwrap();
    assert!(c.upstream.is_none());
    assert_eq!(c.outbound_maildir, PathBuf::from("/tmp/out"));
}

#[test]
fn durations_and_targets() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(432_000));
    assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("5y").is_err());
    assert!(parse_duration("").is_err());
    assert_eq!(
        parse_host_port("[::1]:25").unwrap(),
        ("::1".to_string(), 25)
    );
    assert!(parse_host_port("host").is_err());
    assert!(parse_host_port("host:0").is_err());
}

#[test]
fn policy_layers_from_the_file() {
    let text = "[policy]\nmode = \"opportunistic\"\nencrypt_to_self = true\n\n\
                [policy.domain.\"Corp.Example\"]\nmode = \"require\"\n\n\
                [policy.address.\"ceo@corp.example\"]\nmixed = \"refuse-unencrypted\"\n";
    let c = load_str(text, &Overrides::default()).unwrap();
    let e = c.policy.for_recipient("ceo@corp.example");
    assert_eq!(e.mode.0, crate::policy::Mode::Require);
    assert_eq!(e.mixed.0, crate::policy::Mixed::RefuseUnencrypted);
    assert!(e.encrypt_to_self.0);

    let err = load_str(
        "[policy.domain.\"x.example\"]\nmode = \"sometimes\"\n",
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2") && err.contains("mode"), "{err}");
}

#[test]
fn inbound_results_settings() {
    let defaults = Source {
        name: "embedded defaults",
        text: DEFAULTS,
    };
    let c = build(defaults, None, &Overrides::default(), || {
        Ok(PathBuf::from("/data"))
    })
    .unwrap();
    assert_eq!(c.authserv_id, c.hostname);
    assert_eq!(c.max_plaintext, 64 * 1024 * 1024);

    let text = "hostname = \"gw.example.net\"\n[inbound]\nmax_plaintext = \"10MB\"\n";
    let c = load_str(text, &Overrides::default()).unwrap();
    assert_eq!(
        (c.authserv_id.as_str(), c.max_plaintext),
        ("gw.example.net", 10_000_000)
    );
    let text = "[inbound]\nauthserv_id = \"mx.example.org\"\nmax_plaintext = \"512KiB\"\n";
    let c = load_str(text, &Overrides::default()).unwrap();
    assert_eq!(
        (c.authserv_id.as_str(), c.max_plaintext),
        ("mx.example.org", 512 * 1024)
    );

    let text = "[inbound]\ndeliver = \"maildir\"\n\nmax_plaintext = \"lots\"\n";
    let err = refusal(text);
    assert!(
        err.contains("line 4") && err.contains("inbound.max_plaintext"),
        "{err}"
    );
    let text = "[inbound]\nauthserv_id = \"mx; pgp=pass\"\n";
    let err = refusal(text);
    assert!(
        err.contains("line 2") && err.contains("inbound.authserv_id"),
        "{err}"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
    assert_eq!(parse_size("1k"), Ok(1024));
    assert_eq!(parse_size("3MB"), Ok(3_000_000));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("0").is_err());
    assert!(parse_size("5 parsecs").is_err());
    assert!(parse_size("MiB").is_err());
    assert!(parse_size("99999999999999999999GiB").is_err());
}

#[test]
fn spill_size_per_listener() {
    let c = load_str("", &Overrides::default()).unwrap();
    assert_eq!(c.listeners[0].limits.spill_above, 1 << 20);
    let text =
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:25\"\nspill_above = \"8MiB\"\n";
    let c = load_str(text, &Overrides::default()).unwrap();
    assert_eq!(c.listeners[0].limits.spill_above, 8 << 20);
    let text =
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:25\"\nspill_above = \"lots\"\n";
    let err = refusal(text);
    assert!(
        err.contains("line 4") && err.contains("listener[0].spill_above"),
        "{err}"
    );
}
