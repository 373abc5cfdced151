//! AUTH PLAIN and LOGIN (RFC 4954): decoding the client's answers.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use base64::Engine;
use zeroize::Zeroizing;

use crate::smtp::reply::{Enhanced, Reply};
use crate::smtp::transaction::Credentials;

/// Decodes a PLAIN response: `authzid NUL authcid NUL password`.
///
/// # Errors
/// `501 5.5.2` for bad base64 or a malformed response.
pub fn plain(response: &str) -> Result<Credentials, Reply> {
    let raw = decode(response)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(_authzid), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    credentials(user, pass)
}

pub fn credentials(user: &[u8], pass: &[u8]) -> Result<Credentials, Reply> {
    let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
        return Err(malformed());
    };
    if user.is_empty() {
        return Err(malformed());
    }
    Ok(Credentials {
        username: user.to_string(),
        secret: Some(pass.into()),
    })
}

/// The decoded response, zeroed when dropped: it may hold the password.
pub fn decode(response: &str) -> Result<Zeroizing<Vec<u8>>, Reply> {
    let response = response.trim();
    // Decoded into a buffer of the final size: a growing one would leave copies behind.
    let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(
        response.len(),
    )));
    base64::engine::general_purpose::STANDARD
        .decode_vec(response, &mut out)
        .map_err(|_| Reply::new(501, Enhanced(5, 5, 2), "Invalid base64 in AUTH response"))?;
    Ok(out)
}

fn malformed() -> Reply {
    Reply::new(501, Enhanced(5, 5, 2), "Malformed AUTH response")
}

/// A 334 challenge; `text` is sent base64-encoded.
pub fn challenge(text: &str) -> Reply {
    Reply::bare(334, base64::engine::general_purpose::STANDARD.encode(text))
}

pub fn success() -> Reply {
    Reply::new(235, Enhanced(2, 7, 0), "Authentication successful")
}

pub fn failed() -> Reply {
    Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid")
}

pub fn cancelled() -> Reply {
    Reply::new(501, Enhanced(5, 0, 0), "Authentication cancelled")
}

pub fn needs_tls() -> Reply {
    Reply::new(
        538,
        Enhanced(5, 7, 11),
        "Encryption required for requested authentication mechanism; use STARTTLS first",
    )
}

pub fn not_offered() -> Reply {
    Reply::new(
        503,
        Enhanced(5, 5, 1),
        "AUTH is not available on this listener",
    )
}

pub fn unsupported() -> Reply {
    Reply::new(
        504,
        Enhanced(5, 5, 4),
        "Unrecognized authentication type; use PLAIN or LOGIN",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decodes_and_rejects_garbage() {
        let c = plain("AGFsaWNlAHNlY3JldA==").unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.secret.as_deref(), Some("secret"));
        assert_eq!(plain("!!!").unwrap_err().code, 501);
        assert_eq!(plain("YWxpY2U=").unwrap_err().code, 501);
    }
}
