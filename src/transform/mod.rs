//! The cryptographic transforms, sans-I/O: bytes and keys in, bytes out, time passed in.
//!
//! Two folders, one per direction, over a few shared files:
//! - [`outbound`]: [`outbound::classify()`] comes first: already protected messages pass
//!   through byte-exact, malformed ones are refused. Then [`outbound::protect`] applies a
//!   [`outbound::Treatment`]: [`outbound::encrypt::seal`] builds RFC 3156 combined
//!   sign+encrypt PGP/MIME and [`outbound::sign::sign`] builds `multipart/signed`, both
//!   with RFC 9788 header protection ([`outbound::protection`]) and, when signed, an
//!   [`outbound::autocrypt`] header for the sender.
//! - [`inbound`]: opening mail for local users, below.
//! - Shared: [`imported`] (OpenSSL keys imported once, for signing and X25519).
//!
//! Both read and write MIME through [`crate::mime`] (header split, the From address, MIME
//! scan, charset checks, 7-bit encoding), which holds no crypto; neither direction
//! imports the other.
//!
//! Inbound, [`inbound::open`] decrypts and verifies mail for local users: it removes every
//! incoming copy of our result fields, looks only at the root entity (RFC 3156
//! `multipart/encrypted` or `multipart/signed`, or a text body that is exactly one armored
//! block), decrypts once per envelope recipient with that recipient's own keys, judges
//! signatures against the single From address, applies RFC 9788 protected fields only
//! under a valid signature, and writes `Authentication-Results` and `X-Sealpost-Verdict`.
//! What it finds is a verdict, never an error: what cannot be opened is delivered as
//! received, with our fields on top.
//!
//! # Security rules (`security.md`) and where they are kept
//!
//! - **Rule 1, EFAIL (inbound):** only the root is decrypted ([`inbound::root`]); nested
//!   ciphertext is reported `nested-ignored` (test `efail_ciphertext_between_html_parts_is_never_decrypted`).
//!   SED is refused before decryption, bad MDC and truncation after reading the whole
//!   plaintext, which is then discarded; plaintext is bounded by `max_plaintext`
//!   ([`inbound::decrypt`]; tests `sed_is_refused`, `a_bad_mdc_or_truncation_releases_nothing`,
//!   `a_compression_bomb_stops_at_the_limit`). Only `decrypt` makes a `Plaintext`.
//! - **Rule 2, reply oracles:** a secret key is used only when its certificate has a
//!   valid user ID with the envelope recipient's address (tests
//!   `ciphertext_for_another_local_user_is_not_decrypted`,
//!   `anonymous_recipients_are_tried_with_the_recipients_own_keys_only`).
//! - **Rule 3 (inbound):** [`inbound::verify::judge`] gives `valid` only for a signature
//!   over the whole (decrypted) root from a certificate with a user ID equal to the single
//!   From address; `partial`, `from-mismatch`, `multiple-from` otherwise (tests in
//!   `inbound/tests/signatures.rs`). Result fields carry only fixed words, hex
//!   fingerprints and validated addresses; protected values are sanitised
//!   (test `protected_values_cannot_inject_fields`).
//! - **Rules 4 and 5, forged results, encrypted is not authentic:** [`inbound::results`]
//!   strips our fields outside and in the payload (test
//!   `forged_results_are_removed_outside_and_inside`); protected fields replace outer ones
//!   only with the `Valid` proof only `judge` makes (tests
//!   `unsigned_protected_headers_are_kept_apart`,
//!   `the_outbound_path_output_opens_with_header_protection_applied`).
//!
//! - **Rule 3, signature spoofing:** a message is signed only as a whole root entity
//!   (the combined form, or the first part of `multipart/signed`), and only when it has
//!   exactly one From field with exactly one address ([`outbound::classify::classify`]; tests
//!   `bad_from_is_refused`). Nothing attacker-controlled is written into new header
//!   fields: the outer fields and `HP-Outer` copy the sender's own fields byte for byte,
//!   the Autocrypt `addr` is the validated From address. A v6 key never signs for v4
//!   recipients ([`outbound::encrypt::signer_fits`]; test `v6_signer_does_not_sign_for_v4`).
//! - **Rule 7, Bcc privacy:** the grouping is the pipeline's; here, `Bcc` is copied
//!   neither outside nor into the Cryptographic Payload (test `bcc_never_travels`), and
//!   [`outbound::Classification::named`] gives the To and Cc addresses that grouping needs.
//! - **Rule 10, limits:** NUL bytes, bare LF in the header, more than
//!   [`outbound::classify::MAX_FIELDS`] fields, header lines over 998 octets, MIME
//!   nesting deeper than [`MAX_DEPTH`](crate::mime::structure::MAX_DEPTH) and more than
//!   [`MAX_PARTS`](crate::mime::structure::MAX_PARTS) parts are refused with
//!   `554 5.6.0`, never a panic (tests `limits_are_5xx_not_panics`,
//!   `arbitrary_bytes_never_panic`). Bodies are streamed into the encryptor, not parsed.
//! - **Never half-protected:** every failure is an error, never a plaintext fallback:
//!   input errors are `554 5.6.0`, key and backend failures `451 4.3.0` (test
//!   `a_recipient_without_an_encryption_key_is_an_error_not_a_plaintext`).
//! - **Compatibility:** SEIPDv2 only when every recipient advertises it (sequoia's
//!   `Encryptor`), so gpg 2.2 and sq 0.27 read what they are sent (test
//!   `a_v6_and_a_v4_recipient_both_read_it_gpg_gets_seipdv1`).
//!
//! Neither direction speaks SMTP: each returns its own error, saying what is wrong with
//! the message or what failed locally, and the pipeline turns it into the reply
//! ([`crate::pipeline::reply`]; the codes above are its).

pub mod imported;
pub mod inbound;
pub mod outbound;
