//! A local key's life: generate, revoke, extend, expiry notices, backup and restore, and
//! protected imports.

use super::*;
use crate::autocrypt::{Header, PreferEncrypt};
use crate::store::Tree;

const DAY: Duration = Duration::from_secs(86400);

fn request(email: &str, validity: Option<Duration>) -> GenerateRequest {
    GenerateRequest {
        email: email.into(),
        validity,
        ..GenerateRequest::default()
    }
}

#[test]
fn generate_refuses_a_second_secret_key_and_keeps_a_revocation() {
    let k = keyring();
    let first = k
        .generate(&request("amy@example.org", Some(730 * DAY)))
        .unwrap();
    let exp = first
        .with_policy(k.policy(), None)
        .unwrap()
        .primary_key()
        .key_expiration_time()
        .unwrap();
    let left = exp.duration_since(SystemTime::now()).unwrap();
    assert!(left > 729 * DAY && left <= 730 * DAY, "{left:?}");

    let err = k.generate(&request("AMY@example.org", None)).unwrap_err();
    assert!(matches!(err, Error::SecretExists { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    // A certificate without a secret key is no reason to refuse.
    k.import(&public(&cert("<ben@example.org>"))).unwrap();
    k.generate(&request("ben@example.org", None)).unwrap();
    let forced = k
        .generate(&GenerateRequest {
            force: true,
            ..request("amy@example.org", None)
        })
        .unwrap();
    assert_ne!(forced.fingerprint(), first.fingerprint());

    // The stored revocation certificate revokes the key it was made with.
    let rev = k.revocation(&first.fingerprint()).unwrap();
    let text = String::from_utf8(rev.clone()).unwrap();
    assert!(
        text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{text}"
    );
    assert!(text.contains(&first.fingerprint().to_hex()), "{text}");
    let other = keyring();
    other.import(&public(&first)).unwrap();
    other.import(&rev).unwrap();
    assert!(matches!(
        other.list().unwrap()[0].validity,
        Validity::Revoked { .. }
    ));
    // A secret key generated elsewhere gets one made on request; a bare certificate none.
    let imported = cert("<cy@example.org>");
    k.import(&imported.as_tsk().to_vec().unwrap()).unwrap();
    assert!(k.revocation(&imported.fingerprint()).is_ok());
    let bare = cert("<di@example.org>");
    k.import(&public(&bare)).unwrap();
    assert!(matches!(
        k.revocation(&bare.fingerprint()),
        Err(Error::NoSecret(_))
    ));
}

#[test]
fn extend_renews_an_expiring_key_and_the_notice_stops() {
    let k = keyring();
    let now = SystemTime::now();
    let c = k
        .generate(&request("eve@example.org", Some(10 * DAY)))
        .unwrap();
    let fpr = c.fingerprint();
    let soon = k.expiring_local_keys(30 * DAY, now).unwrap();
    assert_eq!(soon.len(), 1);
    assert_eq!(soon[0].fingerprint, fpr);
    assert_eq!(soon[0].emails, vec!["eve@example.org".to_string()]);
    assert_eq!(log_expiring(&k, now).unwrap(), 1);
    // A discovered or imported certificate is not a local user's.
    k.import(&public(
        &CertBuilder::general_purpose(Some("<far@example.net>"))
            .set_validity_period(5 * DAY)
            .generate()
            .unwrap()
            .0,
    ))
    .unwrap();
    assert_eq!(k.expiring_local_keys(30 * DAY, now).unwrap().len(), 1);

    let target = now + 730 * DAY;
    k.extend(&fpr, Some(target), now).unwrap();
    assert!(k.expiring_local_keys(30 * DAY, now).unwrap().is_empty());
    let later = now + 365 * DAY;
    assert!(k.lookup_encryption("eve@example.org", later).is_ok());
    assert!(k
        .signing_cert_for("eve@example.org", later)
        .unwrap()
        .is_some());
    assert!(k
        .lookup_encryption("eve@example.org", target + DAY)
        .is_err());
    // Never expiring, too.
    k.extend(&fpr, None, now).unwrap();
    assert!(k
        .lookup_encryption("eve@example.org", now + 3650 * DAY)
        .is_ok());
    let bare = cert("<gil@example.org>");
    k.import(&public(&bare)).unwrap();
    assert!(matches!(
        k.extend(&bare.fingerprint(), None, now),
        Err(Error::NoSecret(_))
    ));
}

#[test]
fn the_daily_notice_counts_the_expiring_local_keys() {
    let k = keyring();
    k.generate(&request("kit@example.org", Some(20 * DAY)))
        .unwrap();
    k.generate(&request("lee@example.org", Some(200 * DAY)))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    rt.block_on(async {
        let task = tokio::spawn(expiry_notices(k.clone(), move |n| {
            let _ = tx.send(n);
        }));
        // The first check runs at once; the next would be a day later.
        let got = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap();
        task.abort();
        assert_eq!(got, Ok(1));
    });
}

#[test]
fn a_v6_key_is_extended_too() {
    let k = keyring();
    let now = SystemTime::now();
    let c = k
        .generate(&GenerateRequest {
            profile: Profile::Rfc9580,
            ..request("uma@example.org", Some(3 * DAY))
        })
        .unwrap();
    k.extend(&c.fingerprint(), Some(now + 400 * DAY), now)
        .unwrap();
    let later = now + 300 * DAY;
    assert!(k.lookup_encryption("uma@example.org", later).is_ok());
    assert!(k
        .signing_cert_for("uma@example.org", later)
        .unwrap()
        .is_some());
}

#[test]
fn an_expired_key_can_be_extended() {
    let k = keyring();
    let (c, _) = CertBuilder::general_purpose(Some("<hub@example.org>"))
        .set_creation_time(SystemTime::now() - 10 * DAY)
        .set_validity_period(2 * DAY)
        .generate()
        .unwrap();
    k.import(&c.as_tsk().to_vec().unwrap()).unwrap();
    let now = SystemTime::now();
    assert!(k.lookup_encryption("hub@example.org", now).is_err());
    k.extend(&c.fingerprint(), Some(now + 30 * DAY), now)
        .unwrap();
    assert!(k.lookup_encryption("hub@example.org", now).is_ok());
}

/// Everything a backup must carry, in one keyring.
fn populated(k: &Keyring) -> (Cert, Cert, Cert) {
    let local = k.generate(&request("ivy@example.org", None)).unwrap();
    let pinned = cert("<jan@example.net>");
    k.import(&public(&pinned)).unwrap();
    let queued = cert("<jan@example.net>");
    let now = SystemTime::now();
    k.offer_discovered("jan@example.net", queued.clone(), Source::Wkd, now)
        .unwrap();
    let ac = cert("<kai@example.net>");
    k.autocrypt_seen(
        "kai@example.net",
        now,
        Some(Header {
            cert: ac.clone(),
            prefer_encrypt: PreferEncrypt::Mutual,
        }),
    )
    .unwrap();
    (Cert::clone(&local), queued, ac)
}

#[test]
fn backup_and_restore_carry_the_whole_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let from = Keyring::open(
        &dir.path().join("a"),
        OpenOptions {
            passphrase: Some(Password::from("first machine")),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let (local, queued, ac) = populated(&from);
    let pass = Password::from("backup passphrase");
    let (file, counts) = from.backup(&BackupTo::Passphrase(&pass)).unwrap();
    assert_eq!(
        (counts.certificates, counts.secret_keys),
        (3, 1),
        "{counts:?}"
    );
    assert!(file.starts_with(b"-----BEGIN PGP MESSAGE-----"));
    // The secret key does not show through the encryption.
    let secret = local.as_tsk().to_vec().unwrap();
    let needle = &secret[secret.len() - 40..secret.len() - 20];
    assert!(!file.windows(needle.len()).any(|w| w == needle));

    let to = Keyring::open(
        &dir.path().join("b"),
        OpenOptions {
            passphrase: Some(Password::from("second machine")),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(to
        .restore(&file, &RestoreWith::Passphrase(&Password::from("wrong")))
        .is_err());
    assert!(
        to.list().unwrap().is_empty(),
        "a failed restore changes nothing"
    );
    let restored = to.restore(&file, &RestoreWith::Passphrase(&pass)).unwrap();
    assert_eq!(restored, counts);

    assert_eq!(snapshot(&to), snapshot(&from));
    assert_eq!(
        to.export(&local.fingerprint(), true).unwrap(),
        from.export(&local.fingerprint(), true).unwrap()
    );
    assert_eq!(
        to.revocation(&local.fingerprint()).unwrap(),
        from.revocation(&local.fingerprint()).unwrap()
    );
    assert_eq!(
        to.review_list().unwrap()[0].fingerprint,
        queued.fingerprint().to_hex()
    );
    assert_eq!(
        to.key_meta(&ac.fingerprint()).unwrap(),
        from.key_meta(&ac.fingerprint()).unwrap()
    );
    assert_eq!(
        to.autocrypt_peer("kai@example.net").unwrap(),
        from.autocrypt_peer("kai@example.net").unwrap()
    );
    assert!(to
        .signing_cert_for("ivy@example.org", SystemTime::now())
        .unwrap()
        .is_some());
    assert!(to.has_passphrase());
}

#[test]
fn a_backup_for_a_recovery_key_opens_only_with_it() {
    let k = keyring();
    populated(&k);
    let recovery = cert("<recovery@example.org>");
    let (file, _) = k
        .backup(&BackupTo::RecoveryKey(
            &recovery.clone().strip_secret_key_material(),
        ))
        .unwrap();
    let to = keyring();
    assert!(to
        .restore(&file, &RestoreWith::Passphrase(&Password::from("guess")))
        .is_err());
    assert!(to
        .restore(
            &file,
            &RestoreWith::RecoveryKey(&cert("<other@example.org>"))
        )
        .is_err());
    to.restore(&file, &RestoreWith::RecoveryKey(&recovery))
        .unwrap();
    assert_eq!(snapshot(&to), snapshot(&k));
    // Damaged input is refused with a reason, nothing stored.
    let empty = keyring();
    let err = empty
        .restore(
            b"not a backup",
            &RestoreWith::Passphrase(&Password::from("x")),
        )
        .unwrap_err();
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(empty.list().unwrap().is_empty());
}

#[test]
fn copy_into_another_keyring_keeps_trust_and_the_queue() {
    let from = keyring();
    let (_, queued, ac) = populated(&from);
    let to = keyring();
    let copied = from.copy_into(&to).unwrap();
    assert_eq!(to_counts(copied.counts), (3, 1));
    assert!(copied
        .outcomes
        .iter()
        .all(|o| o.status == crate::ImportStatus::New));
    assert_eq!(copied.outcomes.len(), 3);
    let again = from.copy_into(&to).unwrap();
    assert!(again
        .outcomes
        .iter()
        .all(|o| o.status == crate::ImportStatus::Unchanged));
    assert_eq!(snapshot(&to), snapshot(&from));
    assert_eq!(
        to.key_meta(&ac.fingerprint()).unwrap().trust,
        Trust::Autocrypt
    );
    assert_eq!(
        to.review_list().unwrap()[0].fingerprint,
        queued.fingerprint().to_hex()
    );
}

fn to_counts(c: BackupCounts) -> (usize, usize) {
    (c.certificates, c.secret_keys)
}

#[test]
fn a_protected_secret_key_imports_with_its_passphrase() {
    let k = keyring();
    let c = cert("<lou@example.org>");
    let plain = Keyring::open_memory(OpenOptions::default()).unwrap();
    plain.import(&c.as_tsk().to_vec().unwrap()).unwrap();
    let protected = plain
        .export_protected(&c.fingerprint(), &Password::from("gpg pass"))
        .unwrap();
    let err = k.import(&protected).unwrap_err();
    assert!(matches!(err, Error::SecretLocked { .. }), "{err}");
    assert!(err.to_string().contains("--passphrase-file"), "{err}");
    assert!(k
        .import_all_with(&[&protected], &[Password::from("not it")])
        .is_err());
    assert!(k.list().unwrap().is_empty());
    let out = k
        .import_all_with(&[&protected], &[Password::from("gpg pass")])
        .unwrap();
    assert!(out[0].secret);
    let tsk = k.export(&c.fingerprint(), true).unwrap();
    let tsk = Cert::from_bytes(&tsk).unwrap();
    assert!(tsk
        .keys()
        .secret()
        .all(|ka| ka.key().has_unencrypted_secret()));
    // Stored sealed by the keyring, not under the gpg passphrase.
    let record = k
        .inner
        .store
        .get(Tree::Secrets, c.fingerprint().as_bytes())
        .unwrap()
        .unwrap();
    assert!(vault::is_record(&record));
}
