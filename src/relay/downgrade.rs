//! What a copy looks like on a given next hop (RFC 6152 §3): 8-bit data goes as it is, with
//! `BODY=8BITMIME`, to a hop that offers 8BITMIME; to one that does not, it is re-encoded
//! 7-bit first, or, when that is not possible, not sent at all (`554 5.6.3`).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use crate::blob::Blob;
use crate::mime::headers;
use crate::mime::seven_bit::single_part;
use crate::smtp::reply::{Enhanced, Reply};

/// A copy's data as it goes to one next hop.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub data: Blob,
    /// Send `BODY=8BITMIME`: the data has 8-bit bytes and the hop takes them.
    pub body_8bit: bool,
}

/// A spilled copy that cannot be read back: a local, temporary problem.
pub fn unreadable(e: &std::io::Error) -> Reply {
    tracing::error!(error = %e, "cannot read a spilled message back");
    Reply::new(
        451,
        Enhanced(4, 3, 0),
        "Temporary local problem: the stored message cannot be read; try again later",
    )
}

/// Whether any byte is 8-bit.
pub fn has_8bit(data: &[u8]) -> bool {
    // std's check reads a word at a time: this runs over every copy that goes out.
    !data.is_ascii()
}

/// The data to send to a hop that does (`offers_8bitmime`) or does not offer 8BITMIME.
///
/// The re-encoding parses the message, so it runs off the async threads.
///
/// # Errors
/// `554 5.6.3` when the data has 8-bit bytes, the hop lacks 8BITMIME, and the message
/// cannot be re-encoded (8-bit header fields, a preamble, an attached message, a part
/// claiming base64 or quoted-printable already).
pub async fn prepare(data: &Blob, offers_8bitmime: bool) -> Result<Prepared, Reply> {
    let eight_bit = match data.as_slice() {
        Some(bytes) => has_8bit(bytes),
        None if !data.is_spilled() => {
            let mut any = false;
            data.for_each_piece(|p| {
                any |= has_8bit(p);
                Ok(())
            })
            .map_err(|e| unreadable(&e))?;
            any
        }
        // A spilled message is read whole (one chunk at a time) and every chunk
        // authenticated: off the async threads, and before anything is sent, so that a
        // file that cannot be read fails the copy before MAIL rather than in the data.
        None => {
            let input = data.clone();
            tokio::task::spawn_blocking(move || {
                let mut any = false;
                input.for_each_piece(|p| {
                    any |= has_8bit(p);
                    Ok(())
                })?;
                Ok(any)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| unreadable(&e))?
        }
    };
    if !eight_bit {
        return Ok(Prepared {
            data: data.clone(),
            body_8bit: false,
        });
    }
    if offers_8bitmime {
        return Ok(Prepared {
            data: data.clone(),
            body_8bit: true,
        });
    }
    // The re-encoding works on the whole message in memory, also for a spilled one: a
    // streaming MIME rewrite is not worth it for the rare 8-bit message to a hop without
    // 8BITMIME (RFC 6152 has been common for two decades). The result is in memory too.
    let input = data.clone();
    let converted =
        tokio::task::spawn_blocking(move || input.bytes().ok().and_then(|b| seven_bit(&b)))
            .await
            .unwrap_or(None);
    match converted {
        Some(out) => {
            tracing::debug!(
                from = data.len(),
                to = out.len(),
                "8-bit message re-encoded for a next hop without 8BITMIME"
            );
            Ok(Prepared {
                data: Blob::from(out),
                body_8bit: false,
            })
        }
        None => Err(Reply::new(
            554,
            Enhanced(5, 6, 3),
            "Conversion required but not possible: the next hop does not accept 8-bit data \
             (no 8BITMIME) and the message cannot be re-encoded",
        )),
    }
}

/// The message with every 8-bit body part re-encoded (quoted-printable for text, base64
/// otherwise); `None` when 8-bit bytes would remain.
pub fn seven_bit(message: &[u8]) -> Option<Vec<u8>> {
    let (head, body) = headers::split_bytes(message);
    // Header fields cannot be re-encoded here: that is SMTPUTF8's business, not 8BITMIME's.
    if has_8bit(head) {
        return None;
    }
    let (fields, _) = headers::split(message);
    // The last of repeated fields counts, as for every other reader in sealpost.
    let content_type = headers::effective(&fields, "Content-Type")
        .map(|f| f.value().to_ascii_lowercase())
        .unwrap_or_default();
    let out = if content_type.starts_with("multipart/") {
        crate::mime::seven_bit::rewrite(message).ok()?
    } else {
        single_part(message, &fields, &content_type, body)?
    };
    (!has_8bit(&out)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded_text(m: &[u8]) -> String {
        let parsed = mail_parser::MessageParser::default().parse(m).unwrap();
        parsed.body_text(0).unwrap().into_owned()
    }

    #[test]
    fn a_text_part_becomes_quoted_printable_with_the_same_text() {
        let m = "From: a@example.org\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding:\r\n 8bit\r\n\r\nGrüße aus Köln\r\n.dot\r\n";
        let out = seven_bit(m.as_bytes()).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!has_8bit(&out));
        assert!(
            text.starts_with("From: a@example.org\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe"),
            "{text}"
        );
        assert_eq!(text.matches("Content-Transfer-Encoding").count(), 1);
        // Repeated fields: the last one counts, here as everywhere else.
        let repeated = "From: a@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\u{fc}\u{df}e\r\n";
        let again = seven_bit(repeated.as_bytes()).expect("a text part is re-encoded");
        let again = String::from_utf8(again).unwrap();
        assert!(
            again.contains("Content-Transfer-Encoding: quoted-printable"),
            "{again}"
        );
        assert_eq!(decoded_text(&out), decoded_text(m.as_bytes()));
    }

    #[test]
    fn other_single_parts_become_base64_and_multiparts_are_rewritten() {
        let m = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\r\n\xff\xfe\x00bin\r\n";
        let out = seven_bit(m).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Content-Transfer-Encoding: base64\r\n\r\n//4AYmluDQo=\r\n"));
        assert_eq!(text.matches("MIME-Version").count(), 1);
        let m = "From: a@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve\r\n--x--\r\n";
        let out = seven_bit(m.as_bytes()).unwrap();
        assert!(!has_8bit(&out));
        assert_eq!(decoded_text(&out), "naïve");
    }

    #[test]
    fn what_cannot_be_re_encoded_is_none() {
        for m in [
            &b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nbody\r\n"[..],
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xc3\xbc\r\n",
            b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n\xc3\xbc\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\npr\xc3\xa9ambule\r\n--x\r\n\r\nok\r\n--x--\r\n",
        ] {
            assert_eq!(seven_bit(m), None, "{}", String::from_utf8_lossy(m));
        }
    }

    #[tokio::test]
    async fn prepared_for_each_kind_of_hop() {
        let same =
            |a: &Blob, b: &Blob| a.as_slice().unwrap().as_ptr() == b.as_slice().unwrap().as_ptr();
        let seven = Blob::from(b"Subject: x\r\n\r\nplain\r\n".to_vec());
        let p = prepare(&seven, false).await.unwrap();
        assert!(same(&p.data, &seven) && !p.body_8bit);
        let eight = Blob::from("Subject: x\r\n\r\ngrüße\r\n".as_bytes().to_vec());
        let p = prepare(&eight, true).await.unwrap();
        assert!(same(&p.data, &eight) && p.body_8bit, "sent as it is");
        let p = prepare(&eight, false).await.unwrap();
        assert!(!has_8bit(&p.data.to_vec().unwrap()) && !p.body_8bit);
        let broken = Blob::from(b"Subject: \xff\r\n\r\nx\r\n".to_vec());
        let r = prepare(&broken, false).await.unwrap_err();
        assert_eq!(r.code, 554);
        assert_eq!(r.enhanced, Some(Enhanced(5, 6, 3)));
    }
}
