//! Discovered keys: trust records, offers, the review queue and Autocrypt peer state.

use super::*;
use crate::autocrypt::{Header, PreferEncrypt};
use crate::store::Tree;

fn day(n: u64) -> Duration {
    Duration::from_secs(n * 86400)
}

/// A certificate with a user ID per address given.
fn cert_with(uids: &[&str]) -> Cert {
    let mut b = CertBuilder::general_purpose(None::<&str>).set_validity_period(None);
    for u in uids {
        b = b.add_userid(*u);
    }
    b.generate().unwrap().0
}

/// A certificate created at `t`, without expiry.
fn cert_at(uid: &str, t: SystemTime) -> Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_creation_time(t)
        .set_validity_period(None)
        .generate()
        .unwrap()
        .0
}

#[test]
fn certificates_without_a_record_are_pinned_and_imports_record_the_admin() {
    let k = keyring();
    let c = cert("<old@example.org>");
    // As a keyring from before trust records holds it: the certificate and its index only.
    let mut ops = k.index_ops(&c, true);
    ops.push(store::Op::Put(
        Tree::Certs,
        c.fingerprint().as_bytes().to_vec(),
        c.to_vec().unwrap(),
    ));
    k.inner.store.apply(ops).unwrap();
    assert_eq!(k.key_meta(&c.fingerprint()).unwrap(), KeyMeta::legacy());
    assert_eq!(
        k.lookup_encryption_trusted("old@example.org", SystemTime::now(), Trust::Pinned)
            .unwrap()
            .len(),
        1
    );

    let d = cert("<new@example.org>");
    k.import(&public(&d)).unwrap();
    let meta = k.key_meta(&d.fingerprint()).unwrap();
    assert_eq!((meta.source, meta.trust), (Source::Admin, Trust::Pinned));
    assert!(meta.since.is_some());
}

#[test]
fn a_new_discovered_key_is_stored_with_only_the_wanted_user_id() {
    let k = keyring();
    let c = cert_with(&["Bob <bob@example.net>", "<other@evil.example>"]);
    let now = SystemTime::now();
    let offer = k
        .offer_discovered("Bob@Example.NET", c.clone(), Source::Wkd, now)
        .unwrap();
    assert_eq!(
        offer,
        Offer::Stored {
            fingerprint: c.fingerprint(),
            new: true
        }
    );
    let stored = k.get(&c.fingerprint()).unwrap().unwrap();
    assert_eq!(
        crate::import::user_ids(&stored),
        vec!["Bob <bob@example.net>"]
    );
    assert!(k.find("other@evil.example").unwrap().is_empty());
    let meta = k.key_meta(&c.fingerprint()).unwrap();
    assert_eq!((meta.source, meta.trust), (Source::Wkd, Trust::Wkd));
    assert!(
        !k.has_secret(&c.fingerprint()).unwrap(),
        "secrets are stripped"
    );

    // The same offer again changes nothing; a better source raises the trust.
    assert_eq!(
        k.offer_discovered("bob@example.net", c.clone(), Source::Autocrypt, now)
            .unwrap(),
        Offer::Unchanged(c.fingerprint())
    );
    let d = cert("<dan@example.net>");
    k.offer_discovered("dan@example.net", d.clone(), Source::Autocrypt, now)
        .unwrap();
    assert_eq!(
        k.key_meta(&d.fingerprint()).unwrap().trust,
        Trust::Autocrypt
    );
    k.offer_discovered("dan@example.net", d.clone(), Source::Dane, now)
        .unwrap();
    let meta = k.key_meta(&d.fingerprint()).unwrap();
    assert_eq!((meta.source, meta.trust), (Source::Dane, Trust::Wkd));
}

#[test]
fn offers_that_cannot_help_are_ignored() {
    let k = keyring();
    let now = SystemTime::now();
    let c = cert("<carol@example.net>");
    let ignored = |o: Offer| match o {
        Offer::Ignored(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ignored(
            k.offer_discovered("mallory@example.net", c.clone(), Source::Wkd, now)
                .unwrap()
        ),
        Ignored::NoUserIdForAddress
    );
    assert_eq!(
        ignored(
            k.offer_discovered("not an address", c.clone(), Source::Wkd, now)
                .unwrap()
        ),
        Ignored::NotAnAddress
    );
    let (expired, _) = CertBuilder::general_purpose(Some("<exp@example.net>"))
        .set_creation_time(now - day(3))
        .set_validity_period(day(1))
        .generate()
        .unwrap();
    assert!(matches!(
        ignored(
            k.offer_discovered("exp@example.net", expired, Source::Wkd, now)
                .unwrap()
        ),
        Ignored::Unusable(r) if r.contains("expired")
    ));
    // A local user's key is the keyring's own business.
    let local = k
        .generate(&GenerateRequest {
            email: "me@example.org".into(),
            ..GenerateRequest::default()
        })
        .unwrap();
    assert_eq!(
        ignored(
            k.offer_discovered("me@example.org", Cert::clone(&local), Source::Wkd, now)
                .unwrap()
        ),
        Ignored::LocalKey
    );
    // Nor is another key for a local user's address, however it is offered.
    assert_eq!(
        ignored(
            k.offer_discovered(
                "me@example.org",
                cert("<me@example.org>"),
                Source::Gossip,
                now
            )
            .unwrap()
        ),
        Ignored::LocalKey
    );
    assert!(k
        .offer_discovered("carol@example.net", c, Source::Admin, now)
        .is_err());
    assert_eq!(
        k.list().unwrap().len(),
        1,
        "nothing but the local key stored"
    );
}

#[test]
fn a_different_key_is_queued_and_the_pinned_one_stays_until_accepted() {
    let k = keyring();
    let now = SystemTime::now();
    let pinned = cert("<erin@example.net>");
    k.import(&public(&pinned)).unwrap();
    let other = cert("<erin@example.net>");
    let offer = k
        .offer_discovered("erin@example.net", other.clone(), Source::Wkd, now)
        .unwrap();
    assert_eq!(
        offer,
        Offer::Queued {
            fingerprint: other.fingerprint(),
            current: vec![pinned.fingerprint()]
        }
    );
    let found = k.lookup_encryption("erin@example.net", now).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].fingerprint(), pinned.fingerprint());
    assert!(k.get(&other.fingerprint()).unwrap().is_none());

    let queue = k.review_list().unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].email, "erin@example.net");
    assert_eq!(queue[0].fingerprint, other.fingerprint().to_hex());
    assert_eq!(queue[0].source, Source::Wkd);
    assert_eq!(queue[0].current, vec![pinned.fingerprint().to_hex()]);
    assert_eq!(
        k.review_addresses(&other.fingerprint()).unwrap(),
        vec!["erin@example.net".to_string()]
    );

    let accepted = k
        .review_accept("erin@example.net", &other.fingerprint())
        .unwrap();
    assert_eq!(accepted.removed, vec![pinned.fingerprint()]);
    let found = k.lookup_encryption("erin@example.net", now).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].fingerprint(), other.fingerprint());
    let meta = k.key_meta(&other.fingerprint()).unwrap();
    assert_eq!((meta.source, meta.trust), (Source::Wkd, Trust::Pinned));
    assert!(k.review_list().unwrap().is_empty());
    assert!(k.get(&pinned.fingerprint()).unwrap().is_none());
}

/// Gossip is the least trusted source: a gossiped key waits for review beside a pinned or
/// a WKD key, and gossip of the WKD key itself leaves its trust as it was.
#[test]
fn gossip_never_replaces_a_pinned_or_better_trusted_key() {
    let k = keyring();
    let t0 = SystemTime::now() - day(1);
    let pinned = cert_at("<ivy@example.net>", t0 - day(1));
    k.import(&public(&pinned)).unwrap();
    let forged = cert_at("<ivy@example.net>", t0 - day(1));
    let offer = k
        .autocrypt_gossip("ivy@example.net", t0, forged.clone())
        .unwrap();
    assert!(matches!(offer, Offer::Queued { .. }), "{offer:?}");
    let found = k
        .lookup_encryption("ivy@example.net", SystemTime::now())
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].fingerprint(), pinned.fingerprint());

    let published = cert_at("<jay@example.net>", t0 - day(1));
    k.offer_discovered("jay@example.net", published.clone(), Source::Wkd, t0)
        .unwrap();
    let other = cert_at("<jay@example.net>", t0 - day(1));
    let offer = k.autocrypt_gossip("jay@example.net", t0, other).unwrap();
    assert!(matches!(offer, Offer::Queued { .. }), "{offer:?}");
    k.autocrypt_gossip("jay@example.net", t0, published.clone())
        .unwrap();
    let meta = k.key_meta(&published.fingerprint()).unwrap();
    assert_eq!((meta.source, meta.trust), (Source::Wkd, Trust::Wkd));
    let found = k
        .lookup_encryption("jay@example.net", SystemTime::now())
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].fingerprint(), published.fingerprint());
}

#[test]
fn accepting_unbinds_the_address_from_a_certificate_with_others() {
    let k = keyring();
    let now = SystemTime::now();
    let both = cert_with(&["<fay@example.net>", "<fay@home.example>"]);
    k.import(&public(&both)).unwrap();
    let new = cert("<fay@example.net>");
    k.offer_discovered("fay@example.net", new.clone(), Source::Keyserver, now)
        .unwrap();
    let accepted = k
        .review_accept("fay@example.net", &new.fingerprint())
        .unwrap();
    assert_eq!(accepted.unbound, vec![both.fingerprint()]);
    assert_eq!(
        k.lookup_encryption("fay@home.example", now).unwrap()[0].fingerprint(),
        both.fingerprint()
    );
    assert_eq!(
        k.lookup_encryption("fay@example.net", now).unwrap()[0].fingerprint(),
        new.fingerprint()
    );
}

#[test]
fn a_discovered_address_on_a_pinned_certificate_waits_for_review() {
    let k = keyring();
    let now = SystemTime::now();
    // An admin pinned the key for one address; WKD shows it for another one.
    let both = cert_with(&["<pat@example.org>", "<pat@elsewhere.example>"]);
    k.import(&public(&keep_only(&both, "pat@example.org")))
        .unwrap();
    let offer = k
        .offer_discovered("pat@elsewhere.example", both.clone(), Source::Wkd, now)
        .unwrap();
    assert!(matches!(offer, Offer::Queued { .. }), "{offer:?}");
    assert!(k.lookup_encryption("pat@elsewhere.example", now).is_err());
    k.review_accept("pat@elsewhere.example", &both.fingerprint())
        .unwrap();
    assert_eq!(
        k.lookup_encryption("pat@elsewhere.example", now).unwrap()[0].fingerprint(),
        both.fingerprint()
    );
    assert_eq!(
        k.lookup_encryption("pat@example.org", now).unwrap()[0].fingerprint(),
        both.fingerprint()
    );
    let meta = k.key_meta(&both.fingerprint()).unwrap();
    assert_eq!((meta.source, meta.trust), (Source::Admin, Trust::Pinned));
}

/// `c` with only the user IDs of `email`.
fn keep_only(c: &Cert, email: &str) -> Cert {
    crate::offer::keep_address(c.clone(), email)
}

#[test]
fn a_rejected_key_is_ignored_when_offered_again() {
    let k = keyring();
    let now = SystemTime::now();
    k.import(&public(&cert("<gus@example.net>"))).unwrap();
    let other = cert("<gus@example.net>");
    k.offer_discovered("gus@example.net", other.clone(), Source::Autocrypt, now)
        .unwrap();
    assert!(k
        .review_reject("gus@example.net", &other.fingerprint())
        .unwrap());
    assert!(!k
        .review_reject("gus@example.net", &other.fingerprint())
        .unwrap());
    assert!(k.review_list().unwrap().is_empty());
    assert_eq!(
        k.offer_discovered("gus@example.net", other.clone(), Source::Autocrypt, now)
            .unwrap(),
        Offer::Ignored(Ignored::Rejected)
    );
    assert!(matches!(
        k.review_accept("gus@example.net", &other.fingerprint()),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn the_queue_holds_a_few_keys_per_address() {
    let k = keyring();
    k.import(&public(&cert("<hal@example.net>"))).unwrap();
    let start = SystemTime::now();
    let mut offered = Vec::new();
    for i in 0..MAX_QUEUED_PER_ADDRESS as u64 + 3 {
        let c = cert("<hal@example.net>");
        k.offer_discovered(
            "hal@example.net",
            c.clone(),
            Source::Autocrypt,
            start + day(i),
        )
        .unwrap();
        offered.push(c.fingerprint().to_hex());
    }
    let queued: Vec<String> = k
        .review_list()
        .unwrap()
        .into_iter()
        .map(|e| e.fingerprint)
        .collect();
    assert_eq!(queued.len(), MAX_QUEUED_PER_ADDRESS);
    for f in &offered[offered.len() - MAX_QUEUED_PER_ADDRESS..] {
        assert!(queued.contains(f), "the most recent stay");
    }
}

#[test]
fn an_update_of_the_same_certificate_merges_its_revocation() {
    let k = keyring();
    let now = SystemTime::now();
    let (c, rev) = CertBuilder::general_purpose(Some("<ida@example.net>"))
        .generate()
        .unwrap();
    // Pinned, then revoked by its owner and published: the revocation arrives.
    k.import(&public(&c)).unwrap();
    let (revoked, _) = c.clone().insert_packets(Some(rev)).unwrap();
    let offer = k
        .offer_discovered("ida@example.net", revoked, Source::Wkd, now)
        .unwrap();
    assert_eq!(
        offer,
        Offer::Stored {
            fingerprint: c.fingerprint(),
            new: false
        }
    );
    let err = k
        .lookup_encryption("ida@example.net", now)
        .unwrap_err()
        .to_string();
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(k.key_meta(&c.fingerprint()).unwrap().trust, Trust::Pinned);
}

#[test]
fn a_discovered_key_that_can_no_longer_be_used_makes_way() {
    let k = keyring();
    let now = SystemTime::now();
    let (short, _) = CertBuilder::general_purpose(Some("<jo@example.net>"))
        .set_creation_time(now - day(10))
        .set_validity_period(day(5))
        .generate()
        .unwrap();
    let offer = k
        .offer_discovered("jo@example.net", short.clone(), Source::Wkd, now - day(9))
        .unwrap();
    assert!(
        matches!(offer, Offer::Stored { new: true, .. }),
        "{offer:?}"
    );
    let fresh = cert("<jo@example.net>");
    let offer = k
        .offer_discovered("jo@example.net", fresh.clone(), Source::Wkd, now)
        .unwrap();
    assert!(
        matches!(offer, Offer::Stored { new: true, .. }),
        "{offer:?}"
    );
    assert_eq!(
        k.lookup_encryption("jo@example.net", now).unwrap()[0].fingerprint(),
        fresh.fingerprint()
    );
}

#[test]
fn minimum_trust_and_the_most_trusted_key() {
    let k = keyring();
    let now = SystemTime::now();
    let ac = cert("<kim@example.net>");
    k.offer_discovered("kim@example.net", ac.clone(), Source::Autocrypt, now)
        .unwrap();
    assert_eq!(
        k.lookup_encryption_trusted("kim@example.net", now, Trust::Autocrypt)
            .unwrap()[0]
            .1
            .source,
        Source::Autocrypt
    );
    let err = k
        .lookup_encryption_trusted("kim@example.net", now, Trust::Wkd)
        .unwrap_err()
        .to_string();
    assert!(err.contains("below the policy's minimum, wkd"), "{err}");

    // An admin imports another key for the address: only the pinned one is used.
    let pinned = cert("<kim@example.net>");
    k.import(&public(&pinned)).unwrap();
    let found = k.lookup_encryption("kim@example.net", now).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].fingerprint(), pinned.fingerprint());
    // And the admin importing the discovered key pins it too.
    let out = k.import(&public(&ac)).unwrap();
    assert_eq!(out[0].status, ImportStatus::Updated);
    assert_eq!(k.key_meta(&ac.fingerprint()).unwrap().trust, Trust::Pinned);
    assert_eq!(
        k.lookup_encryption("kim@example.net", now).unwrap().len(),
        2
    );
    assert_eq!("dane".parse::<Trust>().unwrap(), Trust::Wkd);
    assert!("sometimes".parse::<Trust>().is_err());
}

#[test]
fn autocrypt_state_follows_the_update_algorithm() {
    let k = keyring();
    let t0 = SystemTime::now() - day(30);
    let c = cert_at("<lea@example.net>", t0 - day(1));
    let offer = k
        .autocrypt_seen(
            "lea@example.net",
            t0,
            Some(Header {
                cert: c.clone(),
                prefer_encrypt: PreferEncrypt::Mutual,
            }),
        )
        .unwrap();
    assert!(matches!(offer, Some(Offer::Stored { new: true, .. })));
    let s = k.autocrypt_peer("LEA@example.net").unwrap().unwrap();
    assert_eq!(s.prefer_encrypt, PreferEncrypt::Mutual);
    assert_eq!(s.public_key, Some(c.fingerprint().to_hex()));
    assert_eq!(s.autocrypt_timestamp, Some(s.last_seen));

    // A later message without a header moves last_seen only.
    k.autocrypt_seen("lea@example.net", t0 + day(2), None)
        .unwrap();
    let s2 = k.autocrypt_peer("lea@example.net").unwrap().unwrap();
    assert_eq!(s2.last_seen, s.last_seen + 2 * 86400);
    assert_eq!(s2.autocrypt_timestamp, s.autocrypt_timestamp);

    // An older message than the last header changes nothing.
    let older = cert_at("<lea@example.net>", t0 - day(2));
    assert_eq!(
        k.autocrypt_seen(
            "lea@example.net",
            t0 - day(1),
            Some(Header {
                cert: older,
                prefer_encrypt: PreferEncrypt::NoPreference,
            }),
        )
        .unwrap(),
        None
    );
    assert_eq!(k.autocrypt_peer("lea@example.net").unwrap().unwrap(), s2);

    // Gossip about someone else is recorded and its key offered at autocrypt trust.
    let g = cert_at("<max@example.net>", t0 - day(1));
    let offer = k
        .autocrypt_gossip("max@example.net", t0, g.clone())
        .unwrap();
    assert!(matches!(offer, Offer::Stored { .. }));
    let meta = k.key_meta(&g.fingerprint()).unwrap();
    assert_eq!(
        (meta.source, meta.trust),
        (Source::Gossip, Trust::Autocrypt)
    );
    assert_eq!(
        k.autocrypt_peer("max@example.net")
            .unwrap()
            .unwrap()
            .gossip_key,
        Some(g.fingerprint().to_hex())
    );
}

/// Messages from and gossip about one peer recorded at once: each read-modify-write of
/// its state holds the writer lock, so that neither loses the other's update.
#[test]
fn concurrent_autocrypt_updates_of_one_peer_lose_nothing() {
    let k = keyring();
    let t0 = SystemTime::now() - day(30);
    const N: u64 = 50;
    for round in 0..8 {
        let addr = format!("peer{round}@example.net");
        let g = cert_at(&format!("<{addr}>"), t0 - day(1));
        // Both updates of each step start together, the last ones too.
        let step = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..N {
                    step.wait();
                    k.autocrypt_seen(&addr, t0 + Duration::from_secs(i), None)
                        .unwrap();
                }
            });
            s.spawn(|| {
                for i in 0..N {
                    step.wait();
                    k.autocrypt_gossip(&addr, t0 + Duration::from_secs(i), g.clone())
                        .unwrap();
                }
            });
        });
        let state = k.autocrypt_peer(&addr).unwrap().unwrap();
        let last = crate::trust::secs(t0 + Duration::from_secs(N - 1));
        assert_eq!(state.last_seen, last, "round {round}: {state:?}");
        assert_eq!(
            state.gossip_timestamp,
            Some(last),
            "round {round}: {state:?}"
        );
    }
}

#[test]
fn trust_and_queue_persist_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = cert("<ned@example.net>");
    let queued = cert("<ned@example.net>");
    let found = cert("<ola@example.net>");
    {
        let k = Keyring::open(dir.path(), OpenOptions::default()).unwrap();
        k.import(&public(&pinned)).unwrap();
        let now = SystemTime::now();
        k.offer_discovered("ned@example.net", queued.clone(), Source::Wkd, now)
            .unwrap();
        k.offer_discovered("ola@example.net", found.clone(), Source::Keyserver, now)
            .unwrap();
    }
    let k = Keyring::open(dir.path(), OpenOptions::default()).unwrap();
    assert_eq!(k.review_list().unwrap().len(), 1);
    assert_eq!(
        k.key_meta(&found.fingerprint()).unwrap().trust,
        Trust::Keyserver
    );
    k.remove(&found.fingerprint()).unwrap();
    assert!(k
        .inner
        .store
        .get(Tree::Trust, found.fingerprint().as_bytes())
        .unwrap()
        .is_none());
}
