//! What several fuzz targets (and the seed generator) share: the fixed test keys, a
//! keyring holding them, and checks on what the inbound transform gives back.
//!
//! The keys in `keys/` are test keys made for fuzzing only (`examples/make_seeds.rs`);
//! the inbound seeds are encrypted to them, so they must stay as they are.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Once;
use std::time::SystemTime;

use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sealpost::blob::Blob;
use sealpost::mime::headers;
use sealpost::transform::inbound::{self, Opened, Settings, Signature};
use sealpost_keyring::{openpgp, Keyring, OpenOptions};

/// The local user: the inbound keyring holds this secret key.
pub const BOB: &str = "Bob <bob@example.net>";
pub const BOB_ADDRESS: &str = "bob@example.net";
/// A correspondent: the inbound keyring holds this certificate only.
pub const ALICE: &str = "Alice <alice@example.org>";
pub const ALICE_ADDRESS: &str = "alice@example.org";
/// Someone whose key the keyring does not hold.
pub const CAROL: &str = "Carol <carol@example.com>";

/// Every plaintext the seed generator encrypts holds this line; nothing else in the
/// corpus does. A ciphertext the fuzzer did not get from a seed cannot be made without
/// the keys, so whatever decrypts holds it.
pub const MARKER: &str = "sealpost-fuzz-plaintext-3b9e1c47";

/// Our authserv-id in the result fields.
pub const AUTHSERV_ID: &str = "gw.fuzz.test";

thread_local! {
    /// The last panic's message, location and stack, for when nothing caught it.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs one input where sealpost catches panics itself: the OpenPGP parser has panicked
/// on crafted packets, and the transforms turn such a panic into a verdict (inbound) or
/// "not ciphertext" (outbound) with `catch_unwind`. libFuzzer's panic hook aborts on
/// every panic, caught or not; this one only records it, and a panic that reaches this
/// function, which sealpost did not catch, is printed and aborts as usual.
pub fn run_catching(f: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let trace = std::backtrace::Backtrace::force_capture();
            LAST_PANIC.with(|p| *p.borrow_mut() = format!("{info}\n{trace}"));
        }));
    });
    if panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
        LAST_PANIC.with(|p| eprintln!("uncaught panic: {}", p.borrow()));
        std::process::abort();
    }
}

/// `data` with every bare CR or LF made a CRLF: what the DATA reader lets through (it
/// refuses a message with a bare CR or LF), so what the transforms can be given.
pub fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        match b {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// Where the fixed test keys are kept.
pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys")
}

/// A fixed test key (`NAME.tsk.asc` in `keys/`), with its secret key material.
///
/// # Panics
/// When the file is missing or not a key: run `examples/make_seeds.rs` first.
pub fn fixed_key(name: &str) -> Cert {
    let path = keys_dir().join(format!("{name}.tsk.asc"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Cert::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A memory keyring with `local`'s secret key and `known` certificates (public parts only).
///
/// # Panics
/// When the keyring cannot be made.
pub fn keyring(local: &Cert, known: &[&Cert]) -> Keyring {
    let keyring = Keyring::open_memory(OpenOptions::default()).expect("memory keyring");
    keyring
        .import(&local.as_tsk().to_vec().expect("TSK"))
        .expect("local user's key");
    for c in known {
        let public = (*c).clone().strip_secret_key_material();
        keyring
            .import(&public.to_vec().expect("certificate"))
            .expect("known certificate");
    }
    keyring
}

/// The settings every target opens mail with; `spill` sends plaintext to sealed files.
pub fn settings(spill: Option<sealpost::blob::Spill>) -> Settings {
    Settings {
        authserv_id: AUTHSERV_ID.into(),
        max_plaintext: 1 << 20,
        spill,
    }
}

/// One opened copy with its bytes read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Copy {
    pub recipients: Vec<usize>,
    pub message: Vec<u8>,
    pub verdict: inbound::Verdict,
}

/// Opens `message` and reads every copy back.
///
/// # Panics
/// When `open` fails: with a memory keyring that is a bug, not a temporary failure.
pub fn open(message: &Blob, rcpts: &[&str], keyring: &Keyring, settings: &Settings) -> Vec<Copy> {
    inbound::open(message, rcpts, keyring, settings, SystemTime::now())
        .unwrap_or_else(|e| panic!("open failed: {e}"))
        .into_iter()
        .map(|o: Opened| Copy {
            recipients: o.recipients,
            message: o.message.to_vec().expect("opened bytes"),
            verdict: o.verdict,
        })
        .collect()
}

/// A signature that checked out cryptographically (whatever the From binding says).
pub fn good_signature(s: Signature) -> bool {
    matches!(
        s,
        Signature::Valid
            | Signature::FromMismatch
            | Signature::MultipleFrom
            | Signature::SenderMismatch
            | Signature::DisplayNameMismatch
    )
}

/// Rule 4: the delivered header carries exactly one `Authentication-Results` with our
/// authserv-id and one `X-Sealpost-Verdict`, ours, on top; nothing forged survives.
///
/// # Panics
/// When it does not.
pub fn check_result_fields(message: &[u8]) {
    let (fields, _) = headers::split(message);
    let ours = |f: &&headers::Field| {
        f.is("Authentication-Results")
            && f.value()
                .split(';')
                .next()
                .is_some_and(|id| id.trim().eq_ignore_ascii_case(AUTHSERV_ID))
    };
    let results: Vec<_> = fields.iter().filter(ours).collect();
    let verdicts: Vec<_> = fields
        .iter()
        .filter(|f| f.is("X-Sealpost-Verdict"))
        .collect();
    assert_eq!(
        (results.len(), verdicts.len()),
        (1, 1),
        "result fields in {:?}",
        String::from_utf8_lossy(&message[..message.len().min(2000)])
    );
    assert!(
        fields.first().is_some_and(|f| ours(&f)),
        "our Authentication-Results is not on top"
    );
}
