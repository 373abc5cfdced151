//! Keys found without an admin: Autocrypt headers of received mail, through the real
//! binary, with gpg and a second gateway as the correspondents.

use std::time::Duration;

use base64::Engine;

use super::common::{swaks_to, Gpg, Sealpost};
use super::upstream::{free_port, wait_for, SmtpSink};

const LONG: Duration = Duration::from_secs(30);

/// One gateway with an inbound listener on `inbound` (mail for `domain`, delivered to
/// `sink`) and an outbound listener whose upstream is `upstream`.
fn both_ways(inbound: u16, domain: &str, sink: &str, upstream: &str) -> String {
    format!(
        "hostname = \"mx.{domain}\"\n\n\
         [[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:{inbound}\"\ntls = \"none\"\n\n\
         [[listener]]\nmode = \"outbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"{sink}\"\nlocal_domains = [\"{domain}\"]\n\n\
         [upstream]\naddress = \"{upstream}\"\ntls = \"none\"\n"
    )
}

fn verdict(message: &str) -> String {
    message
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .lines()
        .find_map(|l| l.strip_prefix("X-Sealpost-Verdict: ").map(str::to_string))
        .unwrap_or_else(|| panic!("no verdict in {message}"))
}

/// Two organisations, each with its own gateway, and no key exchanged by any admin except
/// Bob's key in Erin's keyring. Erin's first message carries her key in its Autocrypt
/// header; Bob's reply goes out encrypted to it, and Erin's gateway decrypts it.
#[test]
fn first_contact_both_ways_without_an_admin() {
    let (erin, bob) = (Sealpost::new(), Sealpost::new());
    erin.generate("erin@example.com", &[]);
    bob.generate("bob@example.org", &[]);
    let bob_cert = bob.ok(&["keys", "export", "bob@example.org"]);
    assert!(erin
        .run_with_input(&["keys", "import", "-"], bob_cert.as_bytes())
        .status
        .success());
    let (erin_sink, bob_sink) = (SmtpSink::start(&[]), SmtpSink::start(&[]));
    let (erin_in, bob_in) = (free_port(), free_port());
    let erin_gw = erin.serve(
        &both_ways(
            erin_in,
            "example.com",
            &erin_sink.address(),
            &format!("127.0.0.1:{bob_in}"),
        ),
        &[],
    );
    let bob_gw = bob.serve(
        &both_ways(
            bob_in,
            "example.org",
            &bob_sink.address(),
            &format!("127.0.0.1:{erin_in}"),
        ),
        &[],
    );
    // The outbound listener is printed second.
    let (erin_out, bob_out) = (erin_gw.ports[1], bob_gw.ports[1]);

    let (ok, out) = swaks_to(
        erin_out,
        "erin@example.com",
        "bob@example.org",
        &[
            "--header",
            "From: Erin <erin@example.com>",
            "--header",
            "Subject: first contact",
            "--body",
            "Hello Bob.",
        ],
    );
    assert!(ok, "{out}");
    let first = wait_for(LONG, "Erin's message at Bob's mailbox", || {
        bob_sink.messages().into_iter().map(|d| d.text()).next()
    });
    assert!(verdict(&first).contains("encryption=decrypted"), "{first}");
    assert!(first.contains("Subject: first contact"), "{first}");
    // Her key arrived with the message, so it could not vouch for the message itself.
    assert!(!verdict(&first).starts_with("signature=valid"), "{first}");

    let listed = bob.ok(&["keys", "list"]);
    assert!(listed.contains("erin@example.com"), "{listed}");
    let (ok, out) = swaks_to(
        bob_out,
        "bob@example.org",
        "erin@example.com",
        &[
            "--header",
            "From: Bob <bob@example.org>",
            "--header",
            "Subject: the reply",
            "--body",
            "Hello Erin, encrypted without anyone importing your key.",
        ],
    );
    assert!(ok, "{out}");
    let reply = wait_for(LONG, "Bob's reply at Erin's mailbox", || {
        erin_sink.messages().into_iter().map(|d| d.text()).next()
    });
    let v = verdict(&reply);
    assert!(v.contains("encryption=decrypted"), "{reply}");
    assert!(v.starts_with("signature=valid"), "{reply}");
    assert!(
        reply.contains("encrypted without anyone importing"),
        "{reply}"
    );
}

/// A gpg user's Autocrypt header: the next message to her is encrypted to that key, and gpg
/// decrypts it. Headers that must not count (another address than the From, broken key
/// data, an unknown critical attribute) store nothing.
#[test]
fn an_autocrypt_header_from_gpg_is_used_and_bad_ones_store_nothing() {
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let alice = Gpg::new();
    alice.generate("Alice <alice@example.net>", "ed25519", "sign", "never");
    let fpr = alice.fingerprint("alice@example.net");
    alice.ok(&["--quick-add-key", &fpr, "cv25519", "encr", "never"]);
    let mallory = Gpg::new();
    mallory.generate("Carol <carol@example.net>", "ed25519", "default", "never");
    let keydata = |g: &Gpg, who: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(g.ok(&["--export", who]));
        // Folded as a mail client writes it.
        b64.as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n ")
    };
    let sink = SmtpSink::start(&[]);
    let inbound = free_port();
    let gw = s.serve(
        &both_ways(inbound, "example.org", &sink.address(), &sink.address()),
        &[],
    );
    let send_in = |from: &str, autocrypt: &str| {
        let (ok, out) = swaks_to(
            inbound,
            from,
            "bob@example.org",
            &[
                "--header",
                &format!("From: <{from}>"),
                "--header",
                &format!("Autocrypt: {autocrypt}"),
                "--body",
                "hi",
            ],
        );
        assert!(ok, "{out}");
    };
    // Mallory sends Carol's key as if it were hers, in her own message.
    send_in(
        "mallory@evil.example",
        &format!(
            "addr=carol@example.net; keydata={}",
            keydata(&mallory, "carol@example.net")
        ),
    );
    send_in("alice@example.net", "addr=alice@example.net; keydata=AAAA");
    send_in(
        "alice@example.net",
        &format!(
            "addr=alice@example.net; must-understand=1; keydata={}",
            keydata(&alice, "alice@example.net")
        ),
    );
    sink.wait_messages(3, LONG);
    let listed = s.ok(&["keys", "list"]);
    assert!(!listed.contains("carol@example.net"), "{listed}");
    assert!(!listed.contains("alice@example.net"), "{listed}");

    send_in(
        "alice@example.net",
        &format!(
            "addr=alice@example.net; prefer-encrypt=mutual; keydata={}",
            keydata(&alice, "alice@example.net")
        ),
    );
    sink.wait_messages(4, LONG);
    let listed = s.ok(&["keys", "list"]);
    assert!(listed.contains("alice@example.net"), "{listed}");
    assert!(
        listed.contains("autocrypt"),
        "the trust it was stored with: {listed}"
    );

    let outbound = gw.ports[1];
    for to in ["alice@example.net", "carol@example.net"] {
        let (ok, out) = swaks_to(
            outbound,
            "bob@example.org",
            to,
            &[
                "--header",
                &format!("From: <bob@example.org>\nTo: <{to}>"),
                "--body",
                "AUTOCRYPT-REPLY-1",
            ],
        );
        assert!(ok, "{out}");
    }
    let out = sink.wait_messages(6, LONG);
    decrypted_copy_for(&out, "alice@example.net", &alice, "AUTOCRYPT-REPLY-1");
    let to_carol = out
        .iter()
        .map(|d| d.text())
        .find(|t| t.contains("To: <carol@example.net>"))
        .expect("the copy for Carol");
    assert!(!to_carol.contains("multipart/encrypted"), "{to_carol}");
}

/// The copy among `delivered` addressed to `to`: PGP/MIME that `gpg` decrypts to a text
/// with `marker` (gpg exits 2 only when it has no key to check Bob's signature).
fn decrypted_copy_for(delivered: &[super::upstream::Dump], to: &str, gpg: &Gpg, marker: &str) {
    let copy = delivered
        .iter()
        .map(|d| d.text())
        .find(|t| t.contains(&format!("To: <{to}>")))
        .unwrap_or_else(|| panic!("no copy for {to}"));
    assert!(copy.contains("multipart/encrypted"), "{copy}");
    let plain = gpg.run_with_input(&["--decrypt"], copy.as_bytes());
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains(marker),
        "gpg decrypts the copy for {to}: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
}

/// `g`'s certificate for `who` as Autocrypt keydata, folded as a mail client writes it.
pub(super) fn keydata(g: &Gpg, who: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(g.ok(&["--export", who]));
    b64.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Alice's encrypted message to Bob gossips the keys of her other recipients (Carol, and
/// Frank in a domain under `require`) in its payload's header. Carol's next message from
/// Bob is encrypted to the gossiped key; Frank's is not (gossip is below `wkd`). Gossip
/// for someone who is not a recipient, and gossip in the outer (cleartext) header, store
/// nothing.
#[test]
fn autocrypt_gossip_in_an_encrypted_message_is_used_opportunistically() {
    let s = Sealpost::new();
    s.generate("bob@example.org", &[]);
    let [alice, carol, frank, eve, dave] = std::array::from_fn(|_| Gpg::new());
    alice.generate("Alice <alice@example.net>", "default", "default", "never");
    carol.generate("Carol <carol@example.net>", "default", "default", "never");
    frank.generate(
        "Frank <frank@partner.example>",
        "default",
        "default",
        "never",
    );
    eve.generate("Eve <eve@example.net>", "default", "default", "never");
    dave.generate("Dave <dave@example.net>", "default", "default", "never");
    let carol_fpr = carol.fingerprint("carol@example.net");
    alice.ok_with_input(
        &["--import"],
        s.ok(&["keys", "export", "bob@example.org"]).as_bytes(),
    );

    let sink = SmtpSink::start(&[]);
    let inbound = free_port();
    let config = format!(
        "{}\n[policy.domain.\"partner.example\"]\nmode = \"require\"\n",
        both_ways(inbound, "example.org", &sink.address(), &sink.address())
    );
    let gw = s.serve(&config, &[]);

    let payload = format!(
        "Content-Type: text/plain; charset=utf-8\r\n\
         Autocrypt-Gossip: addr=carol@example.net; keydata={}\r\n\
         Autocrypt-Gossip: addr=frank@partner.example; keydata={}\r\n\
         Autocrypt-Gossip: addr=eve@example.net; keydata={}\r\n\
         \r\n\
         GOSSIP-BODY\r\n",
        keydata(&carol, "carol@example.net"),
        keydata(&frank, "frank@partner.example"),
        keydata(&eve, "eve@example.net"),
    );
    let armored = alice.ok_with_input(
        &[
            "--batch",
            "--trust-model",
            "always",
            "--armor",
            "--encrypt",
            "-r",
            "bob@example.org",
        ],
        payload.as_bytes(),
    );
    let message = format!(
        "From: Alice <alice@example.net>\r\n\
         To: bob@example.org, carol@example.net, Frank <frank@partner.example>, dave@example.net\r\n\
         Subject: [...]\r\n\
         Autocrypt-Gossip: addr=dave@example.net; keydata={}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\
         \r\n\
         --b\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         \r\n\
         Version: 1\r\n\
         \r\n\
         --b\r\n\
         Content-Type: application/octet-stream\r\n\
         \r\n\
         {}\r\n\
         --b--\r\n",
        keydata(&dave, "dave@example.net"),
        String::from_utf8_lossy(&armored).replace('\n', "\r\n").trim_end(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gossip.eml");
    std::fs::write(&file, message).unwrap();
    let (ok, out) = swaks_to(
        inbound,
        "alice@example.net",
        "bob@example.org",
        &["--data", file.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let delivered = sink.wait_messages(1, LONG)[0].text();
    assert!(
        verdict(&delivered).contains("encryption=decrypted"),
        "{delivered}"
    );
    assert!(delivered.contains("GOSSIP-BODY"), "{delivered}");

    let shown = s.ok(&["keys", "show", "carol@example.net"]);
    assert!(shown.contains(&carol_fpr), "{shown}");
    assert!(
        shown.contains("autocrypt-gossip"),
        "the source it was stored with: {shown}"
    );
    let listed = s.ok(&["keys", "list"]);
    assert!(listed.contains("frank@partner.example"), "{listed}");
    assert!(
        !listed.contains("eve@example.net"),
        "not a recipient: {listed}"
    );
    assert!(
        !listed.contains("dave@example.net"),
        "cleartext gossip: {listed}"
    );

    let outbound = gw.ports[1];
    let (ok, out) = swaks_to(
        outbound,
        "bob@example.org",
        "carol@example.net",
        &[
            "--header",
            "From: <bob@example.org>\nTo: <carol@example.net>",
            "--body",
            "GOSSIP-REPLY",
        ],
    );
    assert!(ok, "{out}");
    decrypted_copy_for(
        &sink.wait_messages(2, LONG),
        "carol@example.net",
        &carol,
        "GOSSIP-REPLY",
    );

    // `require` wants a key from WKD or better: the gossiped one does not do.
    let (ok, out) = swaks_to(
        outbound,
        "bob@example.org",
        "frank@partner.example",
        &[
            "--header",
            "From: <bob@example.org>\nTo: <frank@partner.example>",
            "--body",
            "NOT FOR GOSSIP",
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("5.7.1"), "{out}");
    let explain = s.ok(&[
        "policy",
        "explain",
        "--from",
        "bob@example.org",
        "--to",
        "frank@partner.example",
    ]);
    assert!(
        explain.contains("below the policy's minimum, wkd"),
        "{explain}"
    );
}
