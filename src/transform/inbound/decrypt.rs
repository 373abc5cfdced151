//! Decryption with one envelope recipient's own keys only (security rule 2), releasing
//! plaintext only after the whole message was read and its integrity checked (rule 1).
//! Only this module makes a [`Plaintext`].
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::time::SystemTime;

use openpgp::crypto::SessionKey;
use openpgp::packet::{Tag, PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::Policy;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, Fingerprint, KeyHandle};
use sealpost_keyring::{openpgp, Keyring};

use crate::blob::{self, Blob, Spill};
use crate::wipe::{self, Buf};

use super::error::Error;
use super::verdict::Encryption;
use super::verify::{self, Check, Found};

/// How much plaintext sequoia holds back before handing it out; we keep it all anyway
/// and release nothing before the end. Sequoia zero-fills buffers of this size (1 MB
/// cost a sixth of the instructions for a 10 KB message), and the writer is where the
/// plaintext waits.
const HOLD_BACK: usize = 64 << 10;
/// How much plaintext is moved to the writer at a time.
const CHUNK: usize = 64 << 10;
/// Spare room in the plaintext buffer for the delivered message's header.
const HEADROOM: usize = 16 * 1024;

/// What an OpenPGP message is, from its outer packets, without decrypting anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SEIPD container (v1 with MDC, or v2 with AEAD).
    Encrypted,
    /// A SED container: no integrity protection (RFC 2440). Never decrypted.
    NoIntegrity,
    /// No encryption container: signed, compressed or literal data.
    NotEncrypted,
}

/// OpenPGP data as sequoia reads it: decoded up front when it is small and in memory
/// (sequoia reads a byte slice with less work than a reader: it zero-fills a fresh
/// buffer per read), read as it comes otherwise.
pub enum Input<'a> {
    Bytes(Vec<u8>),
    Reader(Box<dyn Read + Send + Sync + 'a>),
}

impl Input<'_> {
    /// About how many bytes it holds, when known.
    fn len_hint(&self) -> usize {
        match self {
            Input::Bytes(b) => b.len(),
            Input::Reader(_) => 0,
        }
    }
}

/// Reads the top-level packets of `data` (armored or binary; sequoia tells them apart).
/// `None` when it is not an OpenPGP message.
///
/// Every top-level packet is read, because a SED packet anywhere makes the message
/// `NoIntegrity`. Nothing is decrypted or decompressed.
pub fn kind(data: Input<'_>) -> Option<Kind> {
    match data {
        Input::Bytes(b) => kind_of(PacketParser::from_bytes(&b)),
        Input::Reader(r) => kind_of(PacketParser::from_reader(r)),
    }
}

fn kind_of(ppr: openpgp::Result<PacketParserResult<'_>>) -> Option<Kind> {
    let mut ppr = ppr.ok()?;
    let mut kind = Kind::NotEncrypted;
    let mut packets = 0;
    while let PacketParserResult::Some(pp) = ppr {
        packets += 1;
        match pp.packet.tag() {
            Tag::SED => kind = Kind::NoIntegrity,
            Tag::SEIP if kind != Kind::NoIntegrity => kind = Kind::Encrypted,
            _ => {}
        }
        // `next` skips a container's body: nothing is decrypted or decompressed here.
        ppr = match pp.next() {
            Ok((_, next)) => next,
            // A broken encryption container (truncated, say) is for decryption to refuse.
            Err(_) if kind != Kind::NotEncrypted => return Some(kind),
            Err(_) => return None,
        };
    }
    (packets > 0).then_some(kind)
}

/// Plaintext whose integrity was checked: the only way decrypted bytes leave this module.
/// `B` holds the bytes: a vector, or a [`Blob`] that went to a sealed file when large.
#[derive(Debug)]
pub struct Plaintext<B = Vec<u8>> {
    bytes: B,
    key: Fingerprint,
    checks: Vec<Check>,
}

impl Plaintext {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Plaintext<Blob> {
    /// The same plaintext as a vector when it is whole in memory (it did not spill).
    pub fn into_memory(self) -> Result<Plaintext, Plaintext<Blob>> {
        if self.bytes.is_spilled() {
            return Err(self);
        }
        match self.bytes.into_vec() {
            Ok(bytes) => Ok(Plaintext {
                bytes,
                key: self.key,
                checks: self.checks,
            }),
            // Not reached for bytes in memory; the blob is gone, so nothing is released.
            Err(_) => Err(Plaintext {
                bytes: Blob::default(),
                key: self.key,
                checks: self.checks,
            }),
        }
    }

    pub fn blob(&self) -> &Blob {
        &self.bytes
    }
}

impl<B> Plaintext<B> {
    /// The plaintext itself, for building the delivered message in its buffer.
    pub fn into_bytes(self) -> B {
        self.bytes
    }

    /// The primary fingerprint of the certificate whose key decrypted it.
    pub fn key(&self) -> &Fingerprint {
        &self.key
    }

    /// The signatures found inside (one-pass or prefixed), checked.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }
}

/// Decryption either yields checked plaintext or a reason why not.
#[derive(Debug)]
pub enum Outcome<B = Vec<u8>> {
    Plaintext(Plaintext<B>),
    Refused(Encryption),
}

/// Decrypts the OpenPGP data `data` makes for `recipient` (an envelope address) with
/// that recipient's own secret keys, at most `max` bytes of plaintext, written to a
/// [`blob::Writer`] that goes to a sealed temporary file past `spill.above`: a large
/// message's plaintext is never whole in memory. Sequoia hands plaintext out before it
/// has checked the MDC or the last AEAD chunk; the writer is only turned into a [`Blob`]
/// after the whole message was read and checked, and dropped (its unnamed file with it,
/// its memory zeroed) on any failure.
///
/// # Errors
/// A keyring failure, or the spill file failing (both temporary).
pub fn decrypt<'a>(
    data: impl FnOnce() -> Input<'a>,
    recipient: &str,
    keyring: &Keyring,
    ctx: (&dyn Policy, SystemTime),
    max: usize,
    spill: Option<&Spill>,
) -> Result<Outcome<Blob>, Error> {
    let (policy, now) = ctx;
    decrypt_with(recipient, keyring, policy, now, |keys| {
        let input = data();
        let hint = input.len_hint();
        let bytes: Vec<u8>;
        let builder = match input {
            Input::Bytes(b) => {
                bytes = b;
                DecryptorBuilder::from_bytes(&bytes)
            }
            Input::Reader(r) => DecryptorBuilder::from_reader(r),
        };
        let mut d = builder
            .map_err(|_| Read_::Failed)?
            .buffer_size(HOLD_BACK)
            .with_policy(policy, now, keys)
            .map_err(|_| Read_::Failed)?;
        let mut out = blob::Writer::new(spill.cloned());
        // Plaintext in memory is about the size of the data (unless it was compressed),
        // with room for the header put in front of it; sized once, so that no growth
        // leaves a copy behind.
        let room = hint.min(max).saturating_add(HEADROOM);
        if spill.is_none_or(|s| room <= s.above) {
            wipe::reserve_exact(out.memory_mut(), room);
        }
        // Plaintext passes through here: zeroed when dropped.
        let mut buf = Buf::from(vec![0u8; CHUNK]);
        let mut total = 0usize;
        loop {
            let n = d.read(&mut buf).map_err(|_| Read_::Failed)?;
            if n == 0 {
                break;
            }
            total = total.saturating_add(n);
            if total > max {
                return Err(Read_::TooLarge);
            }
            out.write(buf.get(..n).unwrap_or_default())
                .map_err(Read_::Spill)?;
        }
        if !d.message_processed() {
            return Err(Read_::Failed);
        }
        out.finish().map_err(Read_::Spill)
    })
}

/// The recipient check, the panic guard and the verdict around one read of the plaintext.
fn decrypt_with<B>(
    recipient: &str,
    keyring: &Keyring,
    policy: &dyn Policy,
    now: SystemTime,
    read: impl FnOnce(Keys<'_, '_>) -> Result<B, Read_>,
) -> Result<Outcome<B>, Error> {
    let Some(recipient) = sealpost_keyring::normalize_email(recipient).map(|a| a.to_lowercase())
    else {
        return Ok(Outcome::Refused(Encryption::NoKey));
    };
    let mut found = Found::default();
    let mut state = State::default();
    // sequoia 2.4.2 panics on some truncated SEIPv1 bodies (`data_consume_hard(..).unwrap()`
    // in parse.rs): that is a broken message, refused like any other, and nothing read is
    // kept.
    let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
        read(Keys {
            certs: verify::Certs {
                keyring,
                found: &mut found,
            },
            keyring,
            recipient: &recipient,
            policy,
            now,
            state: &mut state,
        })
    }))
    .unwrap_or_else(|_| {
        tracing::warn!("the OpenPGP parser panicked on this message: refused");
        Err(Read_::Failed)
    });
    if let Some(e) = found.failure.take() {
        return Err(Error::Keyring(e));
    }
    let refused = match read {
        Ok(bytes) => match state.used {
            Some(key) => {
                return Ok(Outcome::Plaintext(Plaintext {
                    bytes,
                    key,
                    checks: found.checks,
                }))
            }
            None => Encryption::NoKey,
        },
        // Too much data without a key of ours having opened anything: not encrypted to
        // this recipient (the in-memory path only decrypts what it saw encrypted).
        Err(Read_::TooLarge) if state.used.is_none() => Encryption::NoKey,
        Err(Read_::TooLarge) => Encryption::TooLarge,
        Err(Read_::Spill(e)) => return Err(Error::Spill(e)),
        Err(Read_::Failed) if !state.eligible => Encryption::NoKey,
        Err(Read_::Failed) => Encryption::IntegrityFailure,
    };
    Ok(Outcome::Refused(refused))
}

/// Why reading stopped.
enum Read_ {
    TooLarge,
    Failed,
    /// The spill file failed: a local problem, not the message's.
    Spill(std::io::Error),
}

/// What the decryption helper learnt.
#[derive(Debug, Default)]
struct State {
    /// A PKESK named a key of this recipient (or a wildcard met one).
    eligible: bool,
    /// The certificate whose key decrypted the session key.
    used: Option<Fingerprint>,
}

/// The recipient's keys, as sequoia's decryption helper.
struct Keys<'a, 'f> {
    certs: verify::Certs<'f>,
    keyring: &'a Keyring,
    /// Lower-cased envelope address.
    recipient: &'a str,
    policy: &'a dyn Policy,
    now: SystemTime,
    state: &'a mut State,
}

impl VerificationHelper for Keys<'_, '_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        self.certs.get_certs(ids)
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        self.certs.check(structure)
    }
}

impl DecryptionHelper for Keys<'_, '_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            let Some(handle) = pkesk.recipient() else {
                continue;
            };
            let Some(tsk) = self.keyring_call(|k| k.secret_for(&handle))? else {
                continue;
            };
            if !self.owns(&tsk) {
                continue;
            }
            self.state.eligible = true;
            if try_keys(&tsk, Some(&handle), pkesk, sym_algo, decrypt) {
                return Ok(Some(self.used(&tsk)));
            }
        }
        if pkesks.iter().any(|p| p.recipient().is_none()) {
            // Anonymous recipients: only this recipient's own certificates are tried.
            let certs = self.keyring_call(|k| k.find(self.recipient))?;
            for cert in certs {
                let handle = KeyHandle::from(cert.fingerprint());
                let Some(tsk) = self.keyring_call(|k| k.secret_for(&handle))? else {
                    continue;
                };
                // An anonymous PKESK that this key cannot open was most likely for
                // someone else: that stays `no-key`, so `eligible` is not set here.
                if !self.owns(&tsk) {
                    continue;
                }
                for pkesk in pkesks.iter().filter(|p| p.recipient().is_none()) {
                    if try_keys(&tsk, None, pkesk, sym_algo, decrypt) {
                        return Ok(Some(self.used(&tsk)));
                    }
                }
            }
        }
        Err(openpgp::anyhow::anyhow!("no key of this recipient"))
    }
}

impl Keys<'_, '_> {
    /// A keyring call whose failure is kept for the caller (it is temporary).
    fn keyring_call<T>(
        &mut self,
        f: impl FnOnce(&Keyring) -> Result<T, sealpost_keyring::Error>,
    ) -> openpgp::Result<T> {
        f(self.keyring).map_err(|e| {
            self.certs.found.failure = Some(e);
            openpgp::anyhow::anyhow!("keyring failure")
        })
    }

    /// Whether the certificate has a valid, non-revoked user ID with the recipient's
    /// address: another local user's key is never used.
    fn owns(&self, tsk: &Cert) -> bool {
        tsk.with_policy(self.policy, self.now).is_ok_and(|vc| {
            vc.userids()
                .revoked(false)
                .any(|ua| verify::address_of(ua.userid()).as_deref() == Some(self.recipient))
        })
    }

    fn used(&mut self, tsk: &Cert) -> Cert {
        self.state.used = Some(tsk.fingerprint());
        tsk.clone().strip_secret_key_material()
    }
}

/// Tries the unencrypted secret keys of `tsk` (the one `handle` names, or every
/// encryption-capable one for an anonymous PKESK) on `pkesk`.
fn try_keys(
    tsk: &Cert,
    handle: Option<&KeyHandle>,
    pkesk: &PKESK,
    sym_algo: Option<SymmetricAlgorithm>,
    decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
) -> bool {
    for ka in tsk.keys().secret() {
        let key = ka.key();
        let fits = match handle {
            Some(h) => key.key_handle().aliases(h),
            None => key.pk_algo().for_encryption(),
        };
        if !fits || !key.has_unencrypted_secret() {
            continue;
        }
        let Ok(mut pair) = super::x25519::decryptor(key.role_as_unspecified()) else {
            continue;
        };
        if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo) {
            if decrypt(algo, &sk) {
                return true;
            }
        }
    }
    false
}
