//! A lookup by address on a VKS keyserver (`/vks/v1/by-email/`, as keys.openpgp.org
//! serves it). Such a server publishes an address only after its owner confirmed it, so
//! what comes back is bound to the address; the keyring still keeps only the user IDs
//! with the address.

use sealpost_keyring::openpgp::cert::CertParser;
use sealpost_keyring::openpgp::parse::Parse;
use sealpost_keyring::openpgp::Cert;
use url::Url;

use super::http::{Client, HttpError};

/// The URL of `email` on `server` (an `https://` base URL).
pub fn url_for(server: &Url, email: &str) -> Option<Url> {
    let mut url = server.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["vks", "v1", "by-email", email]);
    Some(url)
}

/// The certificates `server` has for `email`, and the URL asked.
pub async fn lookup(
    client: &Client,
    server: &Url,
    email: &str,
) -> (String, Result<Vec<Cert>, String>) {
    let Some(url) = url_for(server, email) else {
        return (server.to_string(), Err("not a base URL".into()));
    };
    let asked = url.to_string();
    let body = match client.get(&url).await {
        Ok(b) => b,
        Err(HttpError::NotFound) => return (asked, Err("no key published for the address".into())),
        Err(e) => return (asked, Err(e.to_string())),
    };
    let certs: Vec<Cert> = match CertParser::from_bytes(&body) {
        Ok(p) => p.filter_map(Result::ok).collect(),
        Err(e) => return (asked, Err(format!("not OpenPGP data: {e}"))),
    };
    if certs.is_empty() {
        return (asked, Err("no readable certificate in the answer".into()));
    }
    (asked, Ok(certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_one_escaped_path_segment() {
        let server = Url::parse("https://keys.example.org").unwrap();
        assert_eq!(
            url_for(&server, "a/b@example.net").unwrap().as_str(),
            "https://keys.example.org/vks/v1/by-email/a%2Fb@example.net"
        );
        let server = Url::parse("https://keys.example.org/base/").unwrap();
        assert_eq!(
            url_for(&server, "bob@example.net").unwrap().as_str(),
            "https://keys.example.org/base/vks/v1/by-email/bob@example.net"
        );
    }
}
