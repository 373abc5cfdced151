//! Keyring behaviour over the memory store and a real sled store.

use std::time::{Duration, SystemTime};

use openpgp::cert::CertBuilder;
use openpgp::packet::Packet;
use openpgp::serialize::SerializeInto;
use openpgp::types::ReasonForRevocation;

use super::*;

mod discovery;
mod lifecycle;
mod secrets;

fn keyring() -> Keyring {
    Keyring::open_memory(OpenOptions::default()).unwrap()
}

fn cert(uid: &str) -> Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_validity_period(None)
        .generate()
        .unwrap()
        .0
}

/// The primary key of a freshly generated (unencrypted) certificate, ready to sign.
fn primary_signer(c: &Cert) -> openpgp::crypto::KeyPair {
    c.primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap()
}

fn public(c: &Cert) -> Vec<u8> {
    c.armored().to_vec().unwrap()
}

fn snapshot(k: &Keyring) -> String {
    serde_json::to_string(&k.list().unwrap()).unwrap()
}

#[test]
fn import_lookup_and_normalisation() {
    let k = keyring();
    let alice = cert("Alice <Alice@Example.ORG>");
    let out = k.import(&public(&alice)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, ImportStatus::New);
    assert!(!out[0].secret);

    let now = SystemTime::now();
    for q in [
        "alice@example.org",
        "ALICE@example.org",
        "Alice <alice@EXAMPLE.org>",
    ] {
        let found = k.lookup_encryption(q, now).unwrap();
        assert_eq!(found[0].fingerprint(), alice.fingerprint(), "{q}");
    }
    // By fingerprint, key ID, and a subkey's ID.
    let fpr = alice.fingerprint().to_hex();
    assert_eq!(k.find(&fpr).unwrap().len(), 1);
    assert_eq!(k.find(&alice.keyid().to_hex()).unwrap().len(), 1);
    let sub = alice.keys().subkeys().next().unwrap().key().keyid();
    assert_eq!(
        k.find(&sub.to_hex()).unwrap()[0].fingerprint(),
        alice.fingerprint()
    );
    let subfpr = alice.keys().subkeys().next().unwrap().key().fingerprint();
    assert_eq!(k.find(&subfpr.to_hex()).unwrap().len(), 1);

    let err = k.lookup_encryption("nobody@example.org", now).unwrap_err();
    assert!(
        err.to_string().contains("no certificate for this address"),
        "{err}"
    );

    assert_eq!(
        k.import(&public(&alice)).unwrap()[0].status,
        ImportStatus::Unchanged
    );
}

#[test]
fn merge_new_user_id_and_attach_secret() {
    let k = keyring();
    let (c, _) = CertBuilder::general_purpose(Some("<bob@example.org>"))
        .generate()
        .unwrap();
    k.import(&c.to_vec().unwrap()).unwrap();
    assert!(!k.has_secret(&c.fingerprint()).unwrap());

    // A new user ID, signed by the primary key, merges in.
    let mut signer = primary_signer(&c);
    let uid = openpgp::packet::UserID::from("<robert@example.org>");
    let sig = uid
        .bind(
            &mut signer,
            &c,
            openpgp::packet::signature::SignatureBuilder::new(
                openpgp::types::SignatureType::PositiveCertification,
            ),
        )
        .unwrap();
    let (c2, _) = c
        .clone()
        .insert_packets(vec![Packet::from(uid), sig.into()])
        .unwrap();
    let out = k
        .import(&c2.clone().strip_secret_key_material().to_vec().unwrap())
        .unwrap();
    assert_eq!(out[0].status, ImportStatus::Updated);
    assert_eq!(
        k.lookup_encryption("robert@example.org", SystemTime::now())
            .unwrap()
            .len(),
        1
    );

    // The secret key attaches to the certificate imported before it.
    let out = k.import(&c2.as_tsk().to_vec().unwrap()).unwrap();
    assert_eq!(out[0].status, ImportStatus::Updated);
    assert!(out[0].secret);
    let tsk = k
        .secret_for(&KeyHandle::from(
            c.keys().subkeys().next().unwrap().key().keyid(),
        ))
        .unwrap()
        .unwrap();
    assert!(tsk.is_tsk());
    assert!(k
        .signing_cert_for("bob@example.org", SystemTime::now())
        .unwrap()
        .is_some());
    assert!(k
        .signing_cert_for("eve@example.org", SystemTime::now())
        .unwrap()
        .is_none());
}

#[test]
fn revocation_certificate_revokes_and_lookup_refuses() {
    let k = keyring();
    let (c, rev) = CertBuilder::general_purpose(Some("<carol@example.org>"))
        .generate()
        .unwrap();
    k.import(&public(&c)).unwrap();
    assert!(k
        .lookup_encryption("carol@example.org", SystemTime::now())
        .is_ok());

    let mut armored = Vec::new();
    {
        use std::io::Write;
        let mut w =
            openpgp::armor::Writer::new(&mut armored, openpgp::armor::Kind::PublicKey).unwrap();
        w.write_all(&Packet::from(rev).to_vec().unwrap()).unwrap();
        w.finalize().unwrap();
    }
    let out = k.import(&armored).unwrap();
    assert_eq!(out[0].status, ImportStatus::Updated);
    let err = k
        .lookup_encryption("carol@example.org", SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("revoked"), "{err}");
    let info = &k.list().unwrap()[0];
    assert!(
        matches!(info.validity, Validity::Revoked { .. }),
        "{:?}",
        info.validity
    );
}

#[test]
fn expired_and_sign_only_are_reported_never_returned() {
    let k = keyring();
    let created = SystemTime::now() - Duration::from_secs(3 * 86400);
    let (expired, _) = CertBuilder::general_purpose(Some("<old@example.org>"))
        .set_creation_time(created)
        .set_validity_period(Duration::from_secs(86400))
        .generate()
        .unwrap();
    let (sign_only, _) = CertBuilder::new()
        .add_userid("<signer@example.org>")
        .add_signing_subkey()
        .generate()
        .unwrap();
    k.import(&public(&expired)).unwrap();
    k.import(&public(&sign_only)).unwrap();
    let now = SystemTime::now();
    let e = k
        .lookup_encryption("old@example.org", now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expired on"), "{e}");
    let e = k
        .lookup_encryption("signer@example.org", now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no encryption subkey"), "{e}");
    // Before it expired, the same certificate was usable: time is an input.
    assert!(k
        .lookup_encryption("old@example.org", created + Duration::from_secs(60))
        .is_ok());
    // And the cached positive answer does not outlive the expiry.
    assert!(k.lookup_encryption("old@example.org", now).is_err());
}

#[test]
fn a_revoked_subkey_leaves_no_usable_key() {
    let k = keyring();
    let (c, _) = CertBuilder::general_purpose(Some("<dan@example.org>"))
        .generate()
        .unwrap();
    let mut signer = primary_signer(&c);
    let sub = c
        .keys()
        .subkeys()
        .find(|ka| ka.key().pk_algo().for_encryption())
        .unwrap();
    let rev = openpgp::cert::SubkeyRevocationBuilder::new()
        .set_reason_for_revocation(ReasonForRevocation::KeyCompromised, b"lost")
        .unwrap()
        .build(&mut signer, &c, sub.key(), None)
        .unwrap();
    let (revoked, _) = c.clone().insert_packets(Some(rev)).unwrap();
    k.import(&public(&c)).unwrap();
    assert!(k
        .lookup_encryption("dan@example.org", SystemTime::now())
        .is_ok());
    k.import(&public(&revoked)).unwrap();
    assert!(
        k.lookup_encryption("dan@example.org", SystemTime::now())
            .is_err(),
        "cache invalidated on update"
    );
}

#[test]
fn bad_input_changes_nothing() {
    let k = keyring();
    k.import(&public(&cert("<erin@example.org>"))).unwrap();
    let before = snapshot(&k);
    let good = cert("<frank@example.org>").to_vec().unwrap();
    for bad in [
        b"".to_vec(),
        b"garbage".to_vec(),
        good[..good.len() - 10].to_vec(),
        vec![0xff; 4096],
    ] {
        assert!(k.import(&bad).is_err());
        assert_eq!(snapshot(&k), before);
    }
    // A keyring file whose second certificate is truncated imports nothing.
    let mut two = cert("<gina@example.org>").to_vec().unwrap();
    two.extend_from_slice(&good[..good.len() / 2]);
    assert!(k.import(&two).is_err());
    assert_eq!(snapshot(&k), before);
}

#[test]
fn generate_profiles() {
    let k = keyring();
    let v4 = k
        .generate(&GenerateRequest {
            email: "Jo@Example.org".into(),
            name: Some("Jo Example".into()),
            profile: Profile::Rfc4880,
            cipher: Cipher::Cv25519,
            ..GenerateRequest::default()
        })
        .unwrap();
    assert_eq!(v4.primary_key().key().version(), 4);
    let features = v4
        .with_policy(k.policy(), None)
        .unwrap()
        .direct_key_signature()
        .ok()
        .and_then(|s| s.features())
        .or_else(|| {
            v4.with_policy(k.policy(), None)
                .ok()?
                .primary_userid()
                .ok()?
                .binding_signature()
                .features()
        })
        .unwrap();
    assert!(
        features.supports_seipdv1() && !features.supports_seipdv2(),
        "v4 keys stay readable by gpg 2.2"
    );
    // gpg 2.2 and PGPy reject SHA3 in the hash preferences of a v4 key.
    let vc = v4.with_policy(k.policy(), None).unwrap();
    let uid = vc.primary_userid().unwrap();
    let hashes = uid.binding_signature().preferred_hash_algorithms().unwrap();
    assert!(!hashes.is_empty());
    for h in hashes {
        assert!(
            matches!(
                h,
                openpgp::types::HashAlgorithm::SHA256
                    | openpgp::types::HashAlgorithm::SHA384
                    | openpgp::types::HashAlgorithm::SHA512
                    | openpgp::types::HashAlgorithm::SHA224
            ),
            "{h:?}"
        );
    }
    assert!(k.has_secret(&v4.fingerprint()).unwrap());
    assert!(k
        .lookup_encryption("jo@example.org", SystemTime::now())
        .is_ok());
    assert!(k
        .signing_cert_for("jo@example.org", SystemTime::now())
        .unwrap()
        .is_some());
    assert_eq!(
        k.info(&v4).user_ids,
        vec!["Jo Example <Jo@example.org>".to_string()]
    );
    let v6 = k
        .generate(&GenerateRequest {
            email: "kim@example.org".into(),
            name: None,
            profile: Profile::Rfc9580,
            cipher: Cipher::Cv25519,
            ..GenerateRequest::default()
        })
        .unwrap();
    assert_eq!(v6.primary_key().key().version(), 6);
    assert!(k.find(&v6.fingerprint().to_hex()).unwrap().len() == 1);
    assert_eq!(k.secret_domains().unwrap(), vec!["example.org".to_string()]);
}
