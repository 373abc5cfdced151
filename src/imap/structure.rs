//! The MIME structure of a message the proxy serves in place of the stored one: its
//! `BODYSTRUCTURE` (RFC 9051 §7.5.2) and its numbered body sections (`BODY[1.2]`,
//! `BODY[2.MIME]`, `BODY[3.HEADER]` of an attached message), read with mail-parser, so
//! that a client that fetches a decrypted message part by part gets the parts of the
//! decrypted message, not of the encrypted container.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::num::NonZeroU32;

use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::core::{IString, NString};
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Deepest structure described: deeper parts are left out of the answer.
const MAX_DEPTH: usize = 20;

/// One body part: its MIME header (with the empty line after it) and its body, as slices
/// of the served message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    pub mime: &'a [u8],
    pub body: &'a [u8],
    /// Whether it is an attached message (`message/rfc822`), whose own header and text
    /// are sections of their own.
    pub message: bool,
}

/// The part at a section's number path (`[2, 1]` for `BODY[2.1]`) of `message`.
pub fn part<'a>(message: &'a [u8], path: &[NonZeroU32]) -> Option<Part<'a>> {
    let (first, rest) = path.split_first()?;
    let parsed = MessageParser::default().parse(message)?;
    let root = parsed.parts.first()?;
    let mut current = match &root.body {
        PartType::Multipart(children) => {
            let id = usize::try_from(*children.get(index(*first)?)?).ok()?;
            part_of(message, parsed.parts.get(id)?)?
        }
        // A message that is not multipart has one part, 1: its body, with the message
        // header as its MIME header.
        _ if first.get() == 1 => part_of(message, root)?,
        _ => return None,
    };
    let mut id_path = match &root.body {
        PartType::Multipart(children) => children
            .get(index(*first)?)
            .and_then(|id| usize::try_from(*id).ok()),
        _ => Some(0),
    };
    for (depth, n) in rest.iter().enumerate() {
        if depth > MAX_DEPTH {
            return None;
        }
        if current.message {
            // The remaining numbers go into the attached message.
            let remaining = path.get(depth + 1..)?;
            return part(current.body, remaining);
        }
        let here = parsed.parts.get(id_path?)?;
        let PartType::Multipart(children) = &here.body else {
            return None;
        };
        let id = usize::try_from(*children.get(index(*n)?)?).ok()?;
        current = part_of(message, parsed.parts.get(id)?)?;
        id_path = Some(id);
    }
    Some(current)
}

fn index(n: NonZeroU32) -> Option<usize> {
    usize::try_from(n.get()).ok()?.checked_sub(1)
}

fn part_of<'a>(message: &'a [u8], p: &MessagePart<'_>) -> Option<Part<'a>> {
    let at = |o: u32| usize::try_from(o).ok();
    let (h, b, e) = (at(p.offset_header)?, at(p.offset_body)?, at(p.offset_end)?);
    Some(Part {
        mime: message.get(h..b)?,
        body: message.get(b..e.max(b))?,
        message: is_message(p),
    })
}

fn is_message(p: &MessagePart<'_>) -> bool {
    p.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("message")
            && c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("rfc822"))
    })
}

/// `message`'s BODYSTRUCTURE, with the extension data (disposition) when `extended`
/// (without, it is `BODY`); `None` when mail-parser cannot read it.
pub fn body_structure(message: &[u8], extended: bool) -> Option<BodyStructure<'static>> {
    let parsed = MessageParser::default().parse(message)?;
    describe(message, &parsed, 0, 0, extended)
}

fn describe(
    raw: &[u8],
    parsed: &Message<'_>,
    id: usize,
    depth: usize,
    extended: bool,
) -> Option<BodyStructure<'static>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let p = parsed.parts.get(id)?;
    if let PartType::Multipart(children) = &p.body {
        let bodies: Vec<BodyStructure<'static>> = children
            .iter()
            .filter_map(|c| describe(raw, parsed, usize::try_from(*c).ok()?, depth + 1, extended))
            .collect();
        let subtype = p
            .content_type()
            .and_then(|c| c.subtype())
            .unwrap_or("mixed")
            .to_ascii_uppercase();
        return Some(BodyStructure::Multi {
            bodies: bodies.try_into().ok()?,
            subtype: istring(&subtype),
            extension_data: None,
        });
    }
    let part = part_of(raw, p)?;
    let (ctype, csub) = p
        .content_type()
        .map_or(("TEXT".to_string(), "PLAIN".to_string()), |c| {
            (
                c.ctype().to_ascii_uppercase(),
                c.subtype().unwrap_or("plain").to_ascii_uppercase(),
            )
        });
    let mut parameters: Vec<(IString<'static>, IString<'static>)> = p
        .content_type()
        .and_then(|c| c.attributes())
        .unwrap_or_default()
        .iter()
        .map(|a| (istring(&a.name.to_ascii_uppercase()), istring(&a.value)))
        .collect();
    if ctype == "TEXT" && !parameters.iter().any(|(n, _)| n.as_ref() == b"CHARSET") {
        parameters.push((istring("CHARSET"), istring("us-ascii")));
    }
    let basic = BasicFields {
        parameter_list: parameters,
        id: nstring(p.content_id().map(|i| format!("<{i}>"))),
        description: nstring(p.content_description().map(str::to_string)),
        content_transfer_encoding: istring(
            &p.content_transfer_encoding()
                .unwrap_or("7bit")
                .to_ascii_uppercase(),
        ),
        size: u32::try_from(part.body.len()).unwrap_or(u32::MAX),
    };
    let lines =
        u32::try_from(part.body.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u32::MAX);
    let specific = if part.message {
        let inner = MessageParser::default().parse(part.body)?;
        let (head, _) = crate::mime::headers::split_bytes(part.body);
        SpecificFields::Message {
            envelope: Box::new(super::fetch::envelope(head)),
            body_structure: Box::new(describe(part.body, &inner, 0, depth + 1, extended)?),
            number_of_lines: lines,
        }
    } else if ctype == "TEXT" {
        SpecificFields::Text {
            subtype: istring(&csub),
            number_of_lines: lines,
        }
    } else {
        SpecificFields::Basic {
            r#type: istring(&ctype),
            subtype: istring(&csub),
        }
    };
    let disposition = p.content_disposition().map(|d| {
        let params = d
            .attributes()
            .unwrap_or_default()
            .iter()
            .map(|a| (istring(&a.name.to_ascii_uppercase()), istring(&a.value)))
            .collect();
        (istring(&d.ctype().to_ascii_uppercase()), params)
    });
    Some(BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then_some(SinglePartExtensionData {
            md5: NString(None),
            tail: Some(Disposition {
                disposition,
                tail: None,
            }),
        }),
    })
}

fn istring(s: &str) -> IString<'static> {
    super::fetch::istring(s.as_bytes())
}

fn nstring(s: Option<String>) -> NString<'static> {
    NString(s.map(|s| istring(&s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::fetch::MessageDataItem;
    use imap_codec::imap_types::response::{Data, Response};
    use imap_codec::ResponseCodec;

    const MIXED: &[u8] = b"From: a@b.example\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\nthere\r\n--m\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--m\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.example\r\nSubject: inner\r\n\r\ninner text\r\n--m--\r\n";

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn numbered_parts_are_the_served_message_s() {
        let one = part(MIXED, &[n(1)]).unwrap();
        assert_eq!(one.body, b"Hello\r\nthere");
        assert!(one.mime.starts_with(b"Content-Type: text/plain"));
        let two = part(MIXED, &[n(2)]).unwrap();
        assert_eq!(two.body, b"JVBERg==");
        let three = part(MIXED, &[n(3)]).unwrap();
        assert!(three.message);
        assert!(three.body.starts_with(b"From: c@d.example"));
        let inner = part(MIXED, &[n(3), n(1)]).unwrap();
        assert_eq!(inner.body, b"inner text");
        assert_eq!(part(MIXED, &[n(4)]), None);
        let single = b"Subject: x\r\n\r\nbody\r\n";
        assert_eq!(part(single, &[n(1)]).unwrap().body, b"body\r\n");
        assert_eq!(part(single, &[n(2)]), None);
    }

    #[test]
    fn the_structure_describes_the_parts() {
        let s = body_structure(MIXED, true).unwrap();
        let wire = ResponseCodec::default()
            .encode(&Response::Data(Data::Fetch {
                seq: n(1),
                items: vec![MessageDataItem::BodyStructure(s)].try_into().unwrap(),
            }))
            .dump();
        let text = String::from_utf8(wire).unwrap();
        assert!(
            text.contains("(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 12 1"),
            "{text}"
        );
        assert!(
            text.contains("\"APPLICATION\" \"PDF\" (\"NAME\" \"a.pdf\") NIL NIL \"BASE64\" 8"),
            "{text}"
        );
        assert!(
            text.contains("(\"ATTACHMENT\" (\"FILENAME\" \"a.pdf\"))"),
            "{text}"
        );
        assert!(text.contains("\"MESSAGE\" \"RFC822\""), "{text}");
        assert!(text.contains("\"MIXED\""), "{text}");
    }
}
