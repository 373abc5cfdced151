//! A Web Key Directory lookup: sequoia-net builds the advanced and the direct URL, tries
//! them in the draft's order and parses the answer; we supply the HTTPS client, and note
//! each URL asked with what it answered, for `keys discover` and the log.

use std::future::Future;
use std::sync::Mutex;

use sealpost_keyring::openpgp::Cert;
use url::Url;

use super::http::Client;

/// What a WKD lookup asked and got.
#[derive(Debug)]
pub struct Answer {
    /// Each URL asked, with what it answered.
    pub asked: Vec<String>,
    /// The certificates with a user ID for the address, or why there are none.
    pub certs: Result<Vec<Cert>, String>,
}

/// Looks `email` up in its domain's Web Key Directory.
pub async fn lookup(client: &Client, email: &str) -> Answer {
    let recording = Recording {
        client,
        asked: Mutex::new(Vec::new()),
    };
    let result = sequoia_net::wkd::get_with_client(&recording, email).await;
    let asked = recording
        .asked
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let certs = match result {
        Ok(found) => {
            let mut certs = Vec::new();
            let mut bad = Vec::new();
            for c in found {
                match c {
                    Ok(c) => certs.push(c),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            if certs.is_empty() {
                Err(format!("no readable certificate: {}", bad.join("; ")))
            } else {
                Ok(certs)
            }
        }
        Err(e) => Err(words(&e)),
    };
    Answer { asked, certs }
}

/// sequoia-net's errors, as one line: the HTTP errors are ours, already in words.
fn words(e: &anyhow::Error) -> String {
    match e.downcast_ref::<sequoia_net::Error>() {
        Some(sequoia_net::Error::NotFound) => "no key published for the address".into(),
        Some(sequoia_net::Error::EmailNotInUserids(a)) => {
            format!("the published key has no user ID for {a}")
        }
        _ => {
            let mut text = e.to_string();
            if let Some(cause) = e.chain().nth(1) {
                text = format!("{text}: {cause}");
            }
            text
        }
    }
}

/// The client, noting each GET and its outcome.
struct Recording<'a> {
    client: &'a Client,
    asked: Mutex<Vec<String>>,
}

impl Recording<'_> {
    fn note(&self, line: String) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(line);
        }
    }
}

impl sequoia_net::HttpClient for Recording<'_> {
    fn get(
        &'_ self,
        url: Url,
    ) -> Box<dyn Future<Output = sequoia_net::Result<Vec<u8>>> + Send + '_> {
        Box::new(async move {
            let got = self.client.get(&url).await;
            match &got {
                Ok(body) => self.note(format!("{url}: {} bytes", body.len())),
                Err(e) => self.note(format!("{url}: {e}")),
            }
            got.map_err(|e| match e {
                // sequoia-net tells "nothing there" from a failure by this error.
                super::http::HttpError::NotFound => sequoia_net::Error::NotFound.into(),
                e => anyhow::Error::new(e),
            })
        })
    }

    fn post(
        &'_ self,
        _url: Url,
        _post_data: Vec<u8>,
    ) -> Box<dyn Future<Output = sequoia_net::Result<()>> + Send + '_> {
        // Discovery only reads; nothing is ever uploaded.
        Box::new(async { Err(anyhow::anyhow!("key discovery does not upload")) })
    }
}
