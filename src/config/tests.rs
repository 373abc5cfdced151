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
fn an_open_outbound_listener_is_refused_on_its_final_address() {
    // Moved off loopback by --listen: the loopback defaults no longer hold.
    let ov = Overrides {
        listen: Some("0.0.0.0:2587".into()),
        ..Overrides::default()
    };
    let err = load_str("", &ov).unwrap_err().to_string();
    assert!(err.contains("requires AUTH"), "{err}");
    let loopback =
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:2587\"\nrequire_auth = false\n";
    assert!(load_str(loopback, &Overrides::default()).is_ok());
    let err = load_str(loopback, &ov).unwrap_err().to_string();
    assert!(
        err.contains("open relay") && err.contains("require_auth = false"),
        "{err}"
    );

    for allow in ["0.0.0.0/0", "::/0", "0.0.0.0/1", "8.0.0.0/8"] {
        let text = format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"0.0.0.0:587\"\nallow = [\"{allow}\"]\n"
        );
        let err = refusal(&text);
        assert!(err.contains("open relay") && err.contains(allow), "{err}");
        // Explicit consent, for a listener a firewall really closes.
        let text = format!("{text}open_relay = \"i-know\"\n");
        assert!(load_str(&text, &Overrides::default()).is_ok(), "{allow}");
    }
    for allow in ["10.0.0.0/8", "192.168.0.0/16", "203.0.113.0/24", "fd00::/8"] {
        let text = format!(
            "[[listener]]\nmode = \"outbound\"\naddress = \"0.0.0.0:587\"\nallow = [\"{allow}\"]\n"
        );
        assert!(load_str(&text, &Overrides::default()).is_ok(), "{allow}");
    }
    let err = refusal("[[listener]]\nmode = \"outbound\"\naddress = \"0.0.0.0:587\"\nauth = \"none\"\nrequire_auth = false\n");
    assert!(err.contains("open relay"), "{err}");
    let err = refusal(
        "[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:587\"\nopen_relay = \"yes\"\n",
    );
    assert!(err.contains("i-know"), "{err}");
    // An inbound listener is meant for the internet: it only takes local domains.
    let inbound =
        "[[listener]]\nmode = \"inbound\"\naddress = \"0.0.0.0:25\"\nrequire_auth = false\n";
    assert!(load_str(inbound, &Overrides::default()).is_ok());
}

#[test]
fn every_duration_is_bounded() {
    let err = refusal("[[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:2587\"\ncommand_timeout = \"18446744073709551615\"\n");
    assert!(
        err.contains("too long") && err.contains("command_timeout"),
        "{err}"
    );
    let err = refusal("[delivery]\nlifetime = \"99999999d\"\n");
    assert!(err.contains("too long"), "{err}");
    assert!(parse_duration("366d").is_ok());
}

#[test]
fn users_are_bound_to_their_addresses() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let text = format!(
        "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\naddresses = [\"Alice@Example.org\", \"sales@example.org\"]\n\n\
         [[user]]\nname = \"bob@example.org\"\npassword_hash = \"{hash}\"\n\n\
         [[user]]\nname = \"carol\"\npassword_hash = \"{hash}\"\n"
    );
    let c = load_str(&text, &Overrides::default()).unwrap();
    assert_eq!(
        c.users[0].addresses,
        ["alice@example.org", "sales@example.org"]
    );
    assert_eq!(c.users[1].addresses, ["bob@example.org"]);
    assert!(c.users[2].addresses.is_empty());
    let err = refusal(&format!(
        "[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\naddresses = [\"not an address\"]\n"
    ));
    assert!(err.contains("user[0].addresses"), "{err}");
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
fn policy_minimum_trust_from_the_file() {
    use sealpost_keyring::Trust;
    let text = "[policy]\nmin_trust = \"keyserver\"\n\n\
                [policy.domain.\"corp.example\"]\nmode = \"require\"\n\n\
                [policy.address.\"ceo@corp.example\"]\nmin_trust = \"pinned\"\n";
    let c = load_str(text, &Overrides::default()).unwrap();
    assert_eq!(
        c.policy.for_recipient("a@b.example").min_trust.0,
        Trust::Keyserver
    );
    assert_eq!(
        c.policy.for_recipient("x@corp.example").min_trust.0,
        Trust::Keyserver
    );
    assert_eq!(
        c.policy.for_recipient("ceo@corp.example").min_trust.0,
        Trust::Pinned
    );
    let c = load_str("[policy]\nmode = \"require\"\n", &Overrides::default()).unwrap();
    assert_eq!(
        c.policy.for_recipient("a@b.example").min_trust.0,
        Trust::Wkd
    );
    let err = load_str(
        "[policy.domain.\"x.example\"]\nmin_trust = \"friends\"\n",
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2") && err.contains("min_trust"), "{err}");
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

#[test]
fn inbound_tls_to_a_mailbox_server_on_the_network() {
    let c = load_str("", &Overrides::default()).unwrap();
    assert_eq!(c.inbound_tls, TlsMode::None, "default: today's plaintext");
    let text = "[inbound]\ndeliver = \"lmtp:mail.example.org:24\"\ntls = \"starttls\"\n\
                ca_file = \"/etc/ssl/internal-ca.pem\"\n";
    let c = load_str(text, &Overrides::default()).unwrap();
    assert_eq!(c.inbound_tls, TlsMode::StartTls);
    assert_eq!(
        c.inbound_ca_file.as_deref(),
        Some(Path::new("/etc/ssl/internal-ca.pem"))
    );
    let c = load_str(
        "[inbound]\ndeliver = \"10.0.0.5:465\"\ntls = \"tls\"\n",
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.inbound_tls, TlsMode::Implicit);
    let err = refusal("[inbound]\ndeliver = \"10.0.0.5:25\"\ntls = \"yes\"\n");
    assert!(
        err.contains("line 3") && err.contains("inbound.tls") && err.contains("\"starttls\""),
        "{err}"
    );
    // The flag, over the file.
    let ov = Overrides {
        deliver_tls: Some("tls".into()),
        ..Overrides::default()
    };
    let c = load_str("[inbound]\ndeliver = \"lmtp:10.0.0.6:24\"\n", &ov).unwrap();
    assert_eq!(c.inbound_tls, TlsMode::Implicit);
}

#[test]
fn inbound_tls_to_a_local_target_is_refused() {
    for (deliver, what) in [
        ("maildir:/var/mail/alice", "local directory"),
        ("maildir", "local directory"),
        ("lmtp:unix:/run/dovecot/lmtp", "local Unix socket"),
    ] {
        for mode in ["starttls", "tls"] {
            let text = format!("[inbound]\ndeliver = \"{deliver}\"\ntls = \"{mode}\"\n");
            let err = refusal(&text);
            assert!(
                err.contains("line 3") && err.contains("inbound.tls") && err.contains(what),
                "{text}: {err}"
            );
            assert!(err.contains("HOST:PORT or lmtp:HOST:PORT"), "{err}");
        }
        let text = format!("[inbound]\ndeliver = \"{deliver}\"\nca_file = \"/ca.pem\"\n");
        let err = refusal(&text);
        assert!(
            err.contains("line 3") && err.contains("inbound.ca_file") && err.contains(what),
            "{text}: {err}"
        );
    }
    // A target from the command line is judged with the file's TLS setting…
    let ov = Overrides {
        deliver: Some("maildir:/var/mail".into()),
        ..Overrides::default()
    };
    let err = load_str("[inbound]\ndeliver = \"mx:25\"\ntls = \"starttls\"\n", &ov)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("inbound.tls") && err.contains("maildir:/var/mail"),
        "{err}"
    );
    // … and a flag's TLS setting with the file's target.
    let ov = Overrides {
        deliver_tls: Some("starttls".into()),
        ..Overrides::default()
    };
    let err = load_str("[inbound]\ndeliver = \"lmtp:unix:/run/lmtp\"\n", &ov)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--deliver-tls") && err.contains("Unix socket"),
        "{err}"
    );
}

#[test]
fn an_inbound_ca_file_without_tls_is_refused() {
    let err = refusal("[inbound]\ndeliver = \"lmtp:10.0.0.6:24\"\nca_file = \"/ca.pem\"\n");
    assert!(
        err.contains("line 3") && err.contains("inbound.ca_file") && err.contains("in the clear"),
        "{err}"
    );
}

#[test]
fn the_decision_trail_is_kept_7_days_unless_set_and_0_keeps_none() {
    let ov = Overrides::default();
    let keep = |text: &str| load_str(text, &ov).map(|c| c.keep_trail);
    assert_eq!(keep("").unwrap(), Duration::from_secs(7 * 86400));
    assert_eq!(
        keep("[admin]\nkeep_trail = \"30d\"\n").unwrap(),
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(
        keep("[admin]\nkeep_trail = \"0\"\n").unwrap(),
        Duration::ZERO
    );
    let why = refusal("[admin]\nkeep_trail = \"a week\"\n");
    assert!(why.contains("admin.keep_trail"), "{why}");
}

#[test]
fn the_embedded_discovery_defaults_are_the_built_in_ones() {
    let c = load_str("", &Overrides::default()).unwrap();
    let d = crate::discovery::Settings::default();
    assert_eq!(
        (
            c.discovery.autocrypt,
            c.discovery.wkd,
            c.discovery.keyservers.len()
        ),
        (d.autocrypt, d.wkd, d.keyservers.len())
    );
    assert_eq!(
        (
            c.discovery.dane,
            c.discovery.dane_resolver.len(),
            c.discovery.dane_trust_anchor.is_none()
        ),
        (d.dane, d.dane_resolver.len(), true)
    );
    assert!(!c.discovery.dane, "DANE is off by default");
    assert_eq!(
        (
            c.discovery.budget,
            c.discovery.retry_after,
            c.discovery.refresh
        ),
        (d.budget, d.retry_after, d.refresh)
    );
}

#[test]
fn discovery_settings_are_checked_with_their_line() {
    let c = load_str("[discovery]\nwkd = false\nrefresh = \"0\"\nkeyservers = [\"https://keys.example.org\"]\n[discovery.resolve]\n\"openpgpkey.example.net\" = \"127.0.0.1:8443\"\n", &Overrides::default()).unwrap();
    assert!(!c.discovery.wkd);
    assert!(c.discovery.autocrypt);
    assert!(c.discovery.refresh.is_zero());
    assert_eq!(
        c.discovery.keyservers[0].as_str(),
        "https://keys.example.org/"
    );
    assert_eq!(
        c.discovery.resolve["openpgpkey.example.net"],
        "127.0.0.1:8443".parse().unwrap()
    );
    let e = refusal("[discovery]\nkeyservers = [\"hkp://keys.example.org\"]\n");
    assert!(e.contains("line 2") && e.contains("https://"), "{e}");
    let e = refusal("[discovery]\nbudget = \"5s\"\ndane_resolver = [\"dns.example\"]\n");
    assert!(
        e.contains("line 3") && e.contains("discovery.dane_resolver"),
        "{e}"
    );
    let e = refusal("[discovery]\nbudget = \"5 parsecs\"\n");
    assert!(e.contains("discovery.budget"), "{e}");
}

#[test]
fn wkd_is_off_by_default_and_needs_a_certificate() {
    let ov = Overrides::default();
    assert!(load_str("", &ov).unwrap().wkd.is_none());
    assert!(load_str("[wkd]\nlisten = \"\"\n", &ov)
        .unwrap()
        .wkd
        .is_none());
    let e = refusal("[wkd]\nlisten = \"127.0.0.1:8443\"\ncertificate = \"/c.pem\"\n");
    assert!(e.contains("certificate and private_key"), "{e}");
    let c = load_str(
        "[inbound]\nlocal_domains = [\"Example.org\"]\n\n\
         [wkd]\nlisten = \"127.0.0.1:8443\"\ncertificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\n",
        &ov,
    )
    .unwrap();
    let w = c.wkd.unwrap();
    assert_eq!(w.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(w.domains, ["example.org"], "the local domains by default");
    let e = refusal(
        "[wkd]\nlisten = \"127.0.0.1:8443\"\ncertificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\ndomains = [\"a@b\"]\n",
    );
    assert!(e.contains("wkd.domains"), "{e}");
}

#[test]
fn dane_needs_a_resolver_and_a_readable_trust_anchor() {
    let ov = Overrides::default();
    let c = load_str(
        "[discovery]\ndane = true\ndane_resolver = [\"127.0.0.1:5353\", \"::1\"]\n",
        &ov,
    )
    .unwrap();
    assert!(c.discovery.dane);
    assert_eq!(
        c.discovery.dane_resolver,
        [
            "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert!(c.discovery.dane_trust_anchor.is_none(), "the root keys");

    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("zone.key");
    std::fs::write(
        &anchor,
        "example.net. 3600 IN DNSKEY 257 3 13 3CWYAeVhT0eDSVPN8gf9ciwu24LouZ4PKY0pGTCyzIzrlWK/fVQEPqKeNfDCNLa4tf8j7atsDFm91GY8Wfh5og==\n",
    )
    .unwrap();
    let with = |path: &Path| {
        format!(
            "[discovery]\ndane = true\ndane_resolver = [\"127.0.0.1\"]\ndane_trust_anchor = \"{}\"\n",
            path.display()
        )
    };
    let c = load_str(&with(&anchor), &ov).unwrap();
    let a = c.discovery.dane_trust_anchor.unwrap();
    assert_eq!(a.zones, ["example.net."]);

    let e = refusal(&with(&dir.path().join("missing.key")));
    assert!(
        e.contains("line 4") && e.contains("dane_trust_anchor") && e.contains("cannot read"),
        "{e}"
    );
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "example.net. IN DS 12345 13 2 00\n").unwrap();
    let e = refusal(&with(&bad));
    assert!(e.contains("not DNSKEY records"), "{e}");
    let empty = dir.path().join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let e = refusal(&with(&empty));
    assert!(e.contains("no DNSKEY record"), "{e}");
}
