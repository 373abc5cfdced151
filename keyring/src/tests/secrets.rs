//! Storage on disk and secret keys: persistence, locking, sealing at rest, protected imports.

use openpgp::serialize::SerializeInto;

use super::*;

#[test]
fn sled_store_persists_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let c = cert("<hal@example.org>");
    {
        let k = Keyring::open(dir.path(), OpenOptions::default()).unwrap();
        k.import(&c.as_tsk().to_vec().unwrap()).unwrap();
        let second = Keyring::open(dir.path(), OpenOptions::default());
        assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
    }
    let k = Keyring::open(dir.path(), OpenOptions::default()).unwrap();
    assert!(k.has_secret(&c.fingerprint()).unwrap());
    assert!(k.remove(&c.fingerprint()).unwrap());
    assert!(!k.remove(&c.fingerprint()).unwrap());
    assert!(k.find("hal@example.org").unwrap().is_empty());

    drop(k);

    // A data directory the keyring creates is private; an existing one keeps its mode
    // (`serve` warns about it instead of changing it behind the admin's back).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let before = mode(dir.path());
    let fresh = dir.path().join("fresh");
    drop(Keyring::open(&fresh, OpenOptions::default()).unwrap());
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(dir.path()), before);
}

#[test]
fn secrets_at_rest_are_sealed_with_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let c = cert("<ivy@example.org>");
    let tsk = c.as_tsk().to_vec().unwrap();
    let secret_scalar = {
        let key = c.keys().subkeys().secret().next().unwrap().key().clone();
        use openpgp::serialize::Marshal;
        let mut v = Vec::new();
        if let Some(openpgp::packet::key::SecretKeyMaterial::Unencrypted(u)) = key.optional_secret()
        {
            u.map(|m| m.serialize(&mut v).unwrap());
        }
        v
    };
    assert!(secret_scalar.len() > 16);
    let opts = OpenOptions {
        passphrase: Some(Password::from("hunter2 hunter2")),
        ..OpenOptions::default()
    };
    {
        let k = Keyring::open(dir.path(), opts.clone()).unwrap();
        assert!(k.has_passphrase());
        k.import(&tsk).unwrap();
    }
    let needle = &secret_scalar[secret_scalar.len() - 16..];
    let mut found = false;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(entry).unwrap();
        found |= bytes.windows(needle.len()).any(|w| w == needle);
    }
    assert!(!found, "secret key material is on disk in the clear");

    let k = Keyring::open(dir.path(), opts).unwrap();
    assert!(k.export(&c.fingerprint(), true).is_ok());
    drop(k);
    let wrong = OpenOptions {
        passphrase: Some(Password::from("wrong")),
        ..OpenOptions::default()
    };
    assert!(matches!(
        Keyring::open(dir.path(), wrong),
        Err(Error::BadPassphrase)
    ));
    assert!(matches!(
        Keyring::open(dir.path(), OpenOptions::default()),
        Err(Error::PassphraseNeeded)
    ));
}

/// Secret-key records written before the vault (plain, or sealed under the passphrase's
/// one key) are moved into it when the keyring opens, and keep working.
#[test]
fn older_records_move_into_the_vault() {
    let pass = Password::from("old times");
    for sealed in [false, true] {
        let store = crate::store::memory::MemoryStore::new();
        let c = cert("<old@example.org>");
        let tsk = c.as_tsk().to_vec().unwrap();
        // An older keyring: the certificate through an import, then the secret record
        // rewritten in the older format.
        let k = Keyring::with_store(Box::new(store), OpenOptions::default()).unwrap();
        k.import(&tsk).unwrap();
        let Inner { store, .. } = Arc::try_unwrap(k.inner).ok().unwrap();
        let old = if sealed {
            crate::secret::create_legacy(store.as_ref(), &pass)
                .unwrap()
                .seal(&tsk)
                .unwrap()
        } else {
            let mut r = vec![0u8];
            r.extend_from_slice(&tsk);
            r
        };
        store
            .apply(vec![Op::Put(
                Tree::Secrets,
                c.fingerprint().as_bytes().to_vec(),
                old,
            )])
            .unwrap();
        let opts = OpenOptions {
            passphrase: sealed.then(|| pass.clone()),
            ..OpenOptions::default()
        };
        let k = Keyring::with_store(store, opts).unwrap();
        let record = secret_record(&k, &c);
        assert!(crate::vault::is_record(&record), "sealed={sealed}");
        assert!(k.export(&c.fingerprint(), true).is_ok());
        assert_eq!(k.inner.store.scan(Tree::Meta, b"").unwrap().len(), 0);
    }
}

/// The stored secret-key record of `c`, as the store holds it.
fn secret_record(k: &Keyring, c: &Cert) -> Vec<u8> {
    k.inner
        .store
        .get(Tree::Secrets, c.fingerprint().as_bytes())
        .unwrap()
        .expect("a secret-key record")
}

/// A removed secret key's record stays in sled's files, but its key is gone from the
/// vault: no copy of it can be opened.
#[test]
fn a_removed_secret_key_cannot_be_opened_from_what_remains() {
    let dir = tempfile::tempdir().unwrap();
    let c = cert("<gone@example.org>");
    let k = Keyring::open(dir.path(), OpenOptions::default()).unwrap();
    k.import(&c.as_tsk().to_vec().unwrap()).unwrap();
    let record = secret_record(&k, &c);
    assert!(k.vault().open_record(&record).is_ok());
    assert!(k.remove(&c.fingerprint()).unwrap());
    assert!(k.vault().open_record(&record).is_err());
    drop(k);
    let k = Keyring::open(dir.path(), OpenOptions::default()).unwrap();
    assert!(k.vault().open_record(&record).is_err());
    assert_eq!(k.vault().count(crate::vault::Owner::Keyring).unwrap(), 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn protected_secret_keys_unlock_only_with_the_keyring_passphrase() {
    let (c, _) = CertBuilder::general_purpose(Some("<lea@example.org>"))
        .set_password(Some(Password::from("shared secret")))
        .generate()
        .unwrap();
    let tsk = c.as_tsk().to_vec().unwrap();

    let plain = keyring();
    assert!(matches!(
        plain.import(&tsk),
        Err(Error::SecretLocked { .. })
    ));
    assert!(plain.list().unwrap().is_empty(), "nothing imported");

    let other = Keyring::open_memory(OpenOptions {
        passphrase: Some(Password::from("another one")),
        ..OpenOptions::default()
    })
    .unwrap();
    assert!(matches!(
        other.import(&tsk),
        Err(Error::SecretLocked { .. })
    ));

    let same = Keyring::open_memory(OpenOptions {
        passphrase: Some(Password::from("shared secret")),
        ..OpenOptions::default()
    })
    .unwrap();
    assert!(same.import(&tsk).unwrap()[0].secret);
    let unlocked = same
        .secret_for(&KeyHandle::from(c.fingerprint()))
        .unwrap()
        .unwrap();
    assert!(unlocked
        .keys()
        .secret()
        .all(|ka| ka.key().has_unencrypted_secret()));
    assert_eq!(unlocked.keys().secret().count(), c.keys().count());
}
