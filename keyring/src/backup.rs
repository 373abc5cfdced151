//! One file that holds the whole keyring (certificates, secret keys, trust records, the
//! review queue, Autocrypt state, revocation certificates), as an OpenPGP message
//! encrypted to a passphrase or to a recovery key, so that a lost machine does not mean
//! lost mail.
//!
//! The plaintext is a small container of records (tree, key, value), each as stored
//! except the secret keys: those are unsealed from this machine's vault, which does not
//! travel, and sealed again by the keyring they are restored into. The indexes are not
//! included; a restore rebuilds them.

use std::io::{Read, Write};

use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
use openpgp::serialize::SerializeInto;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

use crate::import::{ImportOptions, ImportOutcome};
use crate::lookup::fpr_from;
use crate::store::{Op, Tree};
use crate::{cert, Error, Keyring};

const MAGIC: &[u8] = b"sealpost keyring backup 1\n";

/// The trees a backup holds, besides the secret keys.
const TREES: [Tree; 5] = [
    Tree::Certs,
    Tree::Trust,
    Tree::Review,
    Tree::Autocrypt,
    Tree::Revocations,
];

/// What a backup is encrypted to.
pub enum BackupTo<'a> {
    Passphrase(&'a Password),
    /// A recovery certificate: its storage-encryption subkeys that can be used now.
    RecoveryKey(&'a Cert),
}

/// What opens a backup.
pub enum RestoreWith<'a> {
    Passphrase(&'a Password),
    /// The recovery key's secret key (its secret parts unencrypted).
    RecoveryKey(&'a Cert),
}

/// What a backup held, or what a restore brought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupCounts {
    pub certificates: usize,
    pub secret_keys: usize,
    /// Trust records, queued keys, Autocrypt peers and revocation certificates.
    pub records: usize,
}

/// What [`Keyring::copy_into`] brought: the counts, and what became of each certificate
/// in the target keyring (new, updated or unchanged).
#[derive(Debug, Clone)]
pub struct Copied {
    pub counts: BackupCounts,
    pub outcomes: Vec<ImportOutcome>,
}

fn crypto(e: impl std::fmt::Display) -> Error {
    Error::Crypto(e.to_string())
}

fn corrupt(what: &str) -> Error {
    Error::Parse {
        reason: format!("the backup is damaged or not a sealpost backup ({what})"),
    }
}

fn push_record(out: &mut Vec<u8>, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), Error> {
    let len = |n: usize| u32::try_from(n).map_err(|_| Error::Store("record too large".into()));
    out.push(tree as u8);
    out.extend(len(key.len())?.to_be_bytes());
    out.extend_from_slice(key);
    out.extend(len(value.len())?.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// One stored record: its tree, key and value, borrowed from the plaintext (which is
/// zeroed when dropped; a copy of a secret key would not be).
type Record<'a> = (Tree, &'a [u8], &'a [u8]);

/// Reads the records of a decrypted container.
fn records(plain: &[u8]) -> Result<Vec<Record<'_>>, Error> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
        let (a, b) = rest
            .split_at_checked(n)
            .ok_or_else(|| corrupt("truncated"))?;
        *rest = b;
        Ok(a)
    }
    fn length(rest: &mut &[u8]) -> Result<usize, Error> {
        let raw: [u8; 4] = take(rest, 4)?.try_into().map_err(|_| corrupt("length"))?;
        Ok(u32::from_be_bytes(raw) as usize)
    }
    let mut rest = plain.strip_prefix(MAGIC).ok_or_else(|| corrupt("header"))?;
    let mut out = Vec::new();
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        let tree = TREES
            .iter()
            .chain(std::iter::once(&Tree::Secrets))
            .find(|t| **t as u8 == tag)
            .copied()
            .ok_or_else(|| corrupt("unknown record"))?;
        let klen = length(&mut rest)?;
        let key = take(&mut rest, klen)?;
        let vlen = length(&mut rest)?;
        let value = take(&mut rest, vlen)?;
        out.push((tree, key, value));
    }
    Ok(out)
}

impl Keyring {
    /// The whole keyring as one armored OpenPGP message encrypted to `to`, with the
    /// counts of what it holds.
    ///
    /// # Errors
    /// `Error::Crypto` when a recovery certificate has no usable encryption subkey;
    /// `Error::PassphraseNeeded` when a secret key cannot be unsealed; store errors.
    pub fn backup(&self, to: &BackupTo<'_>) -> Result<(Vec<u8>, BackupCounts), Error> {
        let (plain, counts) = self.dump()?;
        let mut sink = Vec::new();
        let message = Message::new(&mut sink);
        let message = Armorer::new(message)
            .kind(openpgp::armor::Kind::Message)
            .add_header("Comment", "sealpost keyring backup")
            .build()
            .map_err(crypto)?;
        let message = match to {
            BackupTo::Passphrase(p) => Encryptor::with_passwords(message, Some((*p).clone())),
            BackupTo::RecoveryKey(cert) => {
                let vc = cert
                    .with_policy(&self.inner.policy, None)
                    .map_err(|e| crypto(format!("the recovery key cannot be used: {e}")))?;
                let keys: Vec<_> = vc
                    .keys()
                    .supported()
                    .alive()
                    .revoked(false)
                    .for_storage_encryption()
                    .collect();
                if keys.is_empty() {
                    return Err(crypto(
                        "the recovery key has no encryption subkey that can be used now",
                    ));
                }
                Encryptor::for_recipients(message, keys)
            }
        };
        let message = message.build().map_err(crypto)?;
        let mut literal = LiteralWriter::new(message).build().map_err(crypto)?;
        literal.write_all(&plain)?;
        literal.finalize().map_err(crypto)?;
        Ok((sink, counts))
    }

    /// Copies everything a backup holds into `to` (another keyring, on another store),
    /// without a file in between: trust records, the review queue and Autocrypt state
    /// come along, which exporting and importing certificates would lose.
    ///
    /// # Errors
    /// As [`Keyring::backup`] on this side and [`Keyring::restore`] on the other.
    pub fn copy_into(&self, to: &Keyring) -> Result<Copied, Error> {
        let (plain, _) = self.dump()?;
        let (counts, outcomes) = to.load(&plain)?;
        Ok(Copied { counts, outcomes })
    }

    /// The plaintext of a backup, allocated once at its full size, so that growing it
    /// leaves no copy of a secret key in freed memory.
    fn dump(&self) -> Result<(Zeroizing<Vec<u8>>, BackupCounts), Error> {
        let mut counts = BackupCounts::default();
        let mut public: Vec<(Tree, Vec<u8>, Vec<u8>)> = Vec::new();
        for tree in TREES {
            for (key, value) in self.inner.store.scan(tree, b"")? {
                match tree {
                    Tree::Certs => counts.certificates += 1,
                    _ => counts.records += 1,
                }
                public.push((tree, key, value));
            }
        }
        let mut secrets: Vec<(Vec<u8>, Zeroizing<Vec<u8>>)> = Vec::new();
        for (key, _) in self.inner.store.scan(Tree::Secrets, b"")? {
            let fpr = fpr_from(&key)?;
            let Some(tsk) = self.load_secret(&fpr)? else {
                continue;
            };
            secrets.push((key, Zeroizing::new(tsk.as_tsk().to_vec().map_err(crypto)?)));
            counts.secret_keys += 1;
        }
        let size = MAGIC.len()
            + public
                .iter()
                .map(|(_, k, v)| 9 + k.len() + v.len())
                .sum::<usize>()
            + secrets
                .iter()
                .map(|(k, v)| 9 + k.len() + v.len())
                .sum::<usize>();
        let mut plain = Zeroizing::new(Vec::with_capacity(size));
        plain.extend_from_slice(MAGIC);
        for (tree, key, value) in &public {
            push_record(&mut plain, *tree, key, value)?;
        }
        for (key, value) in &secrets {
            push_record(&mut plain, Tree::Secrets, key, value)?;
        }
        Ok((plain, counts))
    }

    /// Restores a backup made by [`Keyring::backup`] into this keyring, in one atomic
    /// change: certificates and secret keys are merged with what is here (secret keys
    /// sealed under this keyring's protection), the records the backup holds replace
    /// those here.
    ///
    /// # Errors
    /// `Error::Crypto` when `with` does not open the backup; `Error::Parse` when it is
    /// damaged; store errors.
    pub fn restore(&self, data: &[u8], with: &RestoreWith<'_>) -> Result<BackupCounts, Error> {
        let helper = Helper { with };
        let mut decryptor = DecryptorBuilder::from_bytes(data)
            .map_err(|e| corrupt(&e.to_string()))?
            .with_policy(&self.inner.policy, None, helper)
            .map_err(|e| {
                crypto(format!(
                    "cannot open the backup (wrong passphrase or recovery key?): {e}"
                ))
            })?;
        // The plaintext is smaller than the armored message: sized once, the buffer never
        // moves and leaves no copy of a secret key behind.
        let mut plain = Zeroizing::new(Vec::with_capacity(data.len()));
        decryptor
            .read_to_end(&mut plain)
            .map_err(|e| corrupt(&e.to_string()))?;
        Ok(self.load(&plain)?.0)
    }

    /// Stores the records of a backup's plaintext, in one atomic change.
    fn load(&self, plain: &[u8]) -> Result<(BackupCounts, Vec<ImportOutcome>), Error> {
        let mut counts = BackupCounts::default();
        let mut parsed = cert::Parsed::default();
        let mut extra = Vec::new();
        for (tree, key, value) in records(plain)? {
            match tree {
                Tree::Certs | Tree::Secrets => {
                    let c = Cert::from_bytes(value).map_err(|e| corrupt(&e.to_string()))?;
                    if fpr_from(key)? != c.fingerprint() {
                        return Err(corrupt("a certificate under another fingerprint"));
                    }
                    if tree == Tree::Secrets {
                        counts.secret_keys += 1;
                    } else {
                        counts.certificates += 1;
                    }
                    parsed.certs.push(c);
                }
                other => {
                    counts.records += 1;
                    extra.push(Op::Put(other, key.to_vec(), value.to_vec()));
                }
            }
        }
        let opts = ImportOptions {
            keep_trust: true,
            extra,
            ..ImportOptions::default()
        };
        let outcomes = self.import_parsed(parsed, opts)?;
        // Trust records and the queue may have changed without any certificate changing.
        self.inner.forget_all();
        tracing::info!(
            certificates = counts.certificates,
            secret_keys = counts.secret_keys,
            records = counts.records,
            "restored a keyring backup"
        );
        Ok((counts, outcomes))
    }
}

/// Opens a backup with a passphrase or a recovery key; a backup carries no signature.
struct Helper<'a> {
    with: &'a RestoreWith<'a>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        match self.with {
            RestoreWith::Passphrase(p) => {
                for skesk in skesks {
                    if let Ok((algo, sk)) = skesk.decrypt(p) {
                        if decrypt(algo, &sk) {
                            return Ok(None);
                        }
                    }
                }
            }
            RestoreWith::RecoveryKey(tsk) => {
                for ka in tsk.keys().unencrypted_secret() {
                    let Ok(mut pair) = ka.key().clone().into_keypair() else {
                        continue;
                    };
                    for pkesk in pkesks {
                        if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo) {
                            if decrypt(algo, &sk) {
                                return Ok(None);
                            }
                        }
                    }
                }
            }
        }
        Err(openpgp::anyhow::anyhow!(
            "neither the passphrase nor the recovery key given opens it"
        ))
    }
}
