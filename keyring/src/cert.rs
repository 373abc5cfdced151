//! Reading untrusted key material: armored or binary, one certificate or many, public or
//! secret, or bare signatures (revocation certificates).

use std::io::Read;

use openpgp::armor;
use openpgp::cert::CertParser;
use openpgp::packet::{Packet, Signature};
use openpgp::parse::Parse;
use openpgp::Cert;
use openpgp::PacketPile;
use sequoia_openpgp as openpgp;

use crate::Error;

/// What an input held.
#[derive(Debug, Default)]
pub struct Parsed {
    pub certs: Vec<Cert>,
    /// Signatures that arrived without their certificate: revocation certificates, or
    /// third-party certifications, to be merged into a certificate already known.
    pub signatures: Vec<Signature>,
}

fn parse_error(reason: impl Into<String>) -> Error {
    Error::Parse {
        reason: reason.into(),
    }
}

/// Parses `data` completely before anything is stored, so that bad input changes nothing.
///
/// # Errors
/// `Error::Parse` with a one-line reason: empty, not OpenPGP, truncated, or no certificate.
pub fn parse(data: &[u8]) -> Result<Parsed, Error> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(parse_error("no OpenPGP data found (the input is empty)"));
    }
    let binary = dearmor(data)?;
    let Some(&first) = binary.first() else {
        return Err(parse_error("no OpenPGP data found"));
    };
    // Every OpenPGP packet starts with a header byte whose top bit is set. Checking it
    // first turns random input into a clear error without running the packet parser.
    if first & 0x80 == 0 {
        return Err(parse_error(
            "not OpenPGP data (neither an armored block nor binary OpenPGP packets)",
        ));
    }
    let first_tag = PacketPile::from_bytes(&binary[..binary.len().min(1 << 20)])
        .ok()
        .and_then(|p| p.children().next().map(|p| p.tag()));
    if matches!(first_tag, Some(openpgp::packet::Tag::Signature)) {
        return signatures_only(&binary);
    }
    let mut parsed = Parsed::default();
    for cert in CertParser::from_bytes(&binary).map_err(|e| describe(&e))? {
        parsed.certs.push(cert.map_err(|e| describe(&e))?);
    }
    if parsed.certs.is_empty() {
        return Err(parse_error(
            "no OpenPGP certificate found (is this a message or a signature?)",
        ));
    }
    Ok(parsed)
}

/// A revocation certificate, as gpg writes it: an armored "public key block" holding only
/// signature packets.
fn signatures_only(binary: &[u8]) -> Result<Parsed, Error> {
    let pile = PacketPile::from_bytes(binary).map_err(|e| describe(&e))?;
    let mut parsed = Parsed::default();
    for packet in pile.into_children() {
        match packet {
            Packet::Signature(sig) => parsed.signatures.push(sig),
            other => {
                return Err(parse_error(format!(
                    "unexpected {} packet after a signature; expected a certificate or a revocation certificate",
                    other.tag()
                )))
            }
        }
    }
    Ok(parsed)
}

/// Turns every armored block into binary and concatenates them, so that a file of several
/// armored certificates (as `gpg --export --armor a b` writes) parses as one keyring.
fn dearmor(data: &[u8]) -> Result<Vec<u8>, Error> {
    const BEGIN: &[u8] = b"-----BEGIN PGP ";
    let first = data
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .copied()
        .unwrap_or(0);
    // Binary OpenPGP starts with a packet header (top bit set). Text may have a preamble
    // before the armor, as gpg's revocation certificates do.
    if first & 0x80 != 0 || find(data, BEGIN).is_none() {
        return Ok(data.to_vec());
    }
    if let Some(at) = find(data, b":-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        if at == 0 || data.get(at - 1) == Some(&b'\n') {
            return Err(parse_error(
                "this is a revocation certificate as gpg keeps it (openpgp-revocs.d), with a ':' \
                 before its armor line so that it is not imported by accident: importing it \
                 revokes the key for good. To revoke the key, remove the ':' from the start of \
                 that line and import the file again",
            ));
        }
    }
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(start) = find(rest, BEGIN) {
        let block = &rest[start..];
        let end = find(block, b"-----END PGP ")
            .and_then(|e| find(&block[e + 5..], b"-----").map(|x| e + 5 + x + 5))
            .ok_or_else(|| parse_error("truncated armored block (no END line)"))?;
        let mut reader =
            armor::Reader::from_bytes(&block[..end], armor::ReaderMode::Tolerant(None));
        reader
            .read_to_end(&mut out)
            .map_err(|e| parse_error(format!("malformed armor: {}", one_line(&e.to_string()))))?;
        rest = &block[end..];
    }
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A sequoia error as one line, with its root cause (which says "truncated" and the like).
fn describe(e: &openpgp::anyhow::Error) -> Error {
    let top = one_line(&e.to_string());
    let root = e.root_cause().to_string();
    let reason = if root != top && !top.contains(&root) {
        format!("malformed OpenPGP data: {top}: {}", one_line(&root))
    } else {
        format!("malformed OpenPGP data: {top}")
    };
    parse_error(reason)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use openpgp::serialize::SerializeInto;

    #[test]
    fn empty_garbage_and_random_are_clear_errors() {
        for (input, want) in [
            (&b""[..], "empty"),
            (&b"  \n"[..], "empty"),
            (&b"hello, I am not a key"[..], "not OpenPGP"),
        ] {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let mut noise = vec![0u8; 1 << 20];
        let mut x: u32 = 12345;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        noise[0] |= 0x80;
        let err = parse(&noise).unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn fifty_megabytes_of_random_bytes_fail_fast() {
        let mut noise = vec![0u8; 50 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        for first in [0x12, 0x99, 0xc6] {
            noise[0] = first;
            let start = std::time::Instant::now();
            let err = parse(&noise).unwrap_err();
            assert!(matches!(err, Error::Parse { .. }), "{err:?}");
            assert!(!err.to_string().contains('\n'), "{err}");
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "took {:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn a_revocation_certificate_gpg_protects_with_a_colon_is_refused() {
        let (c, rev) = CertBuilder::general_purpose(Some("<r@example.org>"))
            .generate()
            .unwrap();
        let mut armored = Vec::new();
        {
            use std::io::Write;
            let mut w = armor::Writer::new(&mut armored, armor::Kind::PublicKey).unwrap();
            w.write_all(&Packet::from(rev).to_vec().unwrap()).unwrap();
            w.finalize().unwrap();
        }
        let text = String::from_utf8(armored).unwrap();
        let gpg_style = format!(
            "This is a revocation certificate for the OpenPGP key:\n\npub   {}\n\n:{text}",
            c.fingerprint()
        );
        let err = parse(gpg_style.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("revocation certificate"), "{err}");
        assert!(err.contains("remove the ':'"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // Without the colon it is a revocation like any other.
        let plain = gpg_style.replace(":-----BEGIN", "-----BEGIN");
        assert_eq!(parse(plain.as_bytes()).unwrap().signatures.len(), 1);
    }

    #[test]
    fn several_armored_certificates_and_truncation() {
        let (a, _) = CertBuilder::general_purpose(Some("<a@example.org>"))
            .generate()
            .unwrap();
        let (b, _) = CertBuilder::general_purpose(Some("<b@example.org>"))
            .generate()
            .unwrap();
        let mut both = a.armored().to_vec().unwrap();
        both.extend(b.armored().to_vec().unwrap());
        assert_eq!(parse(&both).unwrap().certs.len(), 2);

        let bin = a.to_vec().unwrap();
        let err = parse(&bin[..bin.len() / 2]).unwrap_err().to_string();
        assert!(err.starts_with("malformed OpenPGP data"), "{err}");

        let armored = a.armored().to_vec().unwrap();
        let err = parse(&armored[..armored.len() / 2])
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
