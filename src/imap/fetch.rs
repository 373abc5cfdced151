//! FETCH through the proxy, sans-I/O. A client's FETCH that asks for any part of a
//! message's content is sent upstream with the whole message added (`BODY.PEEK[]`), so
//! that the proxy can see whether it is encrypted. A message that is not protected at all
//! goes back as the upstream sent it (the added item taken out again); one that is
//! encrypted or signed goes through the inbound transform, and the content the client
//! asked for is answered from the message the transform delivers: the whole message, its
//! header (all of it, or chosen fields), its text, partial ranges, `RFC822*` and
//! `RFC822.SIZE`, and an `ENVELOPE` with the real Subject.
//!
//! The structure answers too (`BODYSTRUCTURE`, `BODY`, numbered sections such as
//! `BODY[1]` or `BODY[2.MIME]`) come from the opened message ([`super::structure`]), so
//! that a client that fetches part by part gets the decrypted parts.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::num::NonZeroU32;

use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::imap_types::bounded_static::IntoBoundedStatic;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{IString, Literal, NString, Quoted};
use imap_codec::imap_types::envelope::{Address, Envelope};
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section,
};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::{CommandCodec, ResponseCodec};

use crate::mime::headers::{self, Field};

/// What a client asked one FETCH for.
#[derive(Debug, Clone)]
pub struct Wanted {
    items: Vec<MessageDataItemName<'static>>,
    /// Whether the proxy added `BODY.PEEK[]` (then it is taken out of the answer).
    added_body: bool,
    /// What the proxy asks the upstream for: the items, the UID and the whole message.
    sent: Vec<MessageDataItemName<'static>>,
}

/// A client's command: rewritten when it is a FETCH of content, with the tag and what
/// was asked; `None` for any other command (it goes upstream as it came).
pub fn rewrite(line: &[u8]) -> Option<(Vec<u8>, String, Wanted)> {
    let (rest, command) = CommandCodec::default().decode(line).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let Command { tag, body } = command;
    let CommandBody::Fetch {
        sequence_set,
        macro_or_item_names,
        uid,
    } = body
    else {
        return None;
    };
    let items: Vec<MessageDataItemName<'static>> = match macro_or_item_names {
        MacroOrMessageDataItemNames::Macro(m) => m.expand().into_static(),
        MacroOrMessageDataItemNames::MessageDataItemNames(names) => names.into_static(),
    };
    if !items.iter().any(is_content) {
        return None;
    }
    let whole = items.iter().any(|i| {
        matches!(
            i,
            MessageDataItemName::BodyExt {
                section: None,
                partial: None,
                ..
            }
        )
    });
    let mut sent = items.clone();
    // The UID names the message in the cache.
    if !sent.iter().any(|i| matches!(i, MessageDataItemName::Uid)) {
        sent.push(MessageDataItemName::Uid);
    }
    if !whole {
        sent.push(MessageDataItemName::BodyExt {
            section: None,
            partial: None,
            peek: true,
        });
    }
    let command = Command {
        tag: tag.clone(),
        body: CommandBody::Fetch {
            sequence_set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(sent.clone()),
            uid,
        },
    };
    let bytes = CommandCodec::default().encode(&command).dump();
    Some((
        bytes,
        tag.inner().to_string(),
        Wanted {
            items,
            added_body: !whole,
            sent,
        },
    ))
}

impl Wanted {
    /// Whether the client asked for the whole message only (and perhaps its UID): then a
    /// cached message is answered without reading the upstream's response through the
    /// codec ([`whole_message_response`]).
    pub fn whole_only(&self) -> bool {
        self.items.iter().all(|i| {
            matches!(
                i,
                MessageDataItemName::Uid
                    | MessageDataItemName::BodyExt {
                        section: None,
                        partial: None,
                        ..
                    }
            )
        })
    }
}

impl Wanted {
    /// What to ask the upstream for first, when every content item the client asked for
    /// can be answered from a cached message and none of them sets `\Seen` (which the
    /// upstream must see): the UID and the items that are not content (`FLAGS`,
    /// `INTERNALDATE` …). The messages not in the cache are then fetched whole.
    pub fn probe_items(&self) -> Option<Vec<MessageDataItemName<'static>>> {
        use MessageDataItemName as N;
        let mut out = vec![N::Uid];
        for i in &self.items {
            match i {
                N::BodyExt { peek: false, .. } | N::Rfc822 | N::Rfc822Text => return None,
                N::Uid
                | N::BodyExt { .. }
                | N::Envelope
                | N::BodyStructure
                | N::Body
                | N::Rfc822Size
                | N::Rfc822Header => {}
                other => out.push(other.clone()),
            }
        }
        Some(out)
    }
}

/// The same FETCH (or UID FETCH) command, asking for `items`.
pub fn probe_command(line: &[u8], items: Vec<MessageDataItemName<'static>>) -> Option<Vec<u8>> {
    let (_, command) = CommandCodec::default().decode(line).ok()?;
    let Command { tag, body } = command;
    let CommandBody::Fetch {
        sequence_set, uid, ..
    } = body
    else {
        return None;
    };
    let command = Command {
        tag,
        body: CommandBody::Fetch {
            sequence_set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid,
        },
    };
    Some(CommandCodec::default().encode(&command).dump())
}

/// UID ranges in one FETCH of the proxy's own: its line stays far below the 8 KiB that
/// RFC 7162 §4 asks servers to take at least.
const RANGES_PER_FETCH: usize = 500;

/// The FETCHes by UID that the proxy sends itself for the messages a [`probe_command`]
/// found not in the cache, asking for what `wanted` sends upstream, each with its tag
/// (`tag-sealpost-N`).
pub fn by_uid(tag: &str, uids: &[u32], wanted: &Wanted) -> Vec<(String, Vec<u8>)> {
    let mut uids = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    let mut ranges = Vec::new();
    let mut i = 0;
    while let Some(&first) = uids.get(i) {
        let mut last = first;
        while uids.get(i + 1) == Some(&last.saturating_add(1)) {
            i += 1;
            last += 1;
        }
        ranges.push(if first == last {
            first.to_string()
        } else {
            format!("{first}:{last}")
        });
        i += 1;
    }
    ranges
        .chunks(RANGES_PER_FETCH)
        .enumerate()
        .filter_map(|(n, set)| {
            let own = format!("{tag}-sealpost-{n}");
            let command = Command {
                tag: imap_codec::imap_types::core::Tag::try_from(own.clone()).ok()?,
                body: CommandBody::Fetch {
                    sequence_set: set.join(",").as_str().try_into().ok()?,
                    macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(
                        wanted.sent.clone(),
                    ),
                    uid: true,
                },
            };
            Some((own, CommandCodec::default().encode(&command).dump()))
        })
        .collect()
}

/// The UID a FETCH response's first line names (`UID n` after `(` or a space), read
/// without the codec.
pub fn uid_in(response: &[u8]) -> Option<u32> {
    let end = memchr::memmem::find(response, b"\r\n").unwrap_or(response.len());
    let line = response.get(..end)?;
    let at = memchr::memmem::find_iter(line, b"UID ")
        .find(|&i| i > 0 && matches!(line.get(i - 1), Some(b'(' | b' ')))?;
    let digits: Vec<u8> = line
        .get(at + 4..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// A FETCH response of the shape `* SEQ FETCH (UID UID)`: its sequence number and UID.
pub fn uid_response(response: &[u8]) -> Option<(u32, u32)> {
    let line = std::str::from_utf8(response.strip_suffix(b")\r\n")?).ok()?;
    let (seq, uid) = line.strip_prefix("* ")?.split_once(" FETCH (UID ")?;
    Some((seq.parse().ok()?, uid.parse().ok()?))
}

/// A FETCH response of the shape `* SEQ FETCH (UID UID BODY[] {N}` + N bytes + `)`,
/// read without the codec: its sequence number and UID.
pub fn whole_message_response(response: &[u8]) -> Option<(u32, u32)> {
    let end = memchr::memmem::find(response, b"\r\n")?;
    let line = std::str::from_utf8(response.get(..end)?).ok()?;
    let rest = line.strip_prefix("* ")?;
    let (seq, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("FETCH (UID ")?;
    let (uid, rest) = rest.split_once(' ')?;
    let n = rest.strip_prefix("BODY[] {")?.strip_suffix('}')?;
    let n: usize = n.parse().ok()?;
    // Nothing after the literal but the closing parenthesis.
    (response.len() == end + 2 + n + 3 && response.ends_with(b")\r\n")).then_some(())?;
    Some((seq.parse().ok()?, uid.parse().ok()?))
}

/// What comes before a message of `len` bytes in the answer to a FETCH of the whole
/// message (and its UID); [`WHOLE_MESSAGE_END`] comes after it.
pub fn whole_message_head(seq: u32, uid: u32, len: usize) -> Vec<u8> {
    format!("* {seq} FETCH (UID {uid} BODY[] {{{len}}}\r\n").into_bytes()
}

/// The end of the answer [`whole_message_head`] begins.
pub const WHOLE_MESSAGE_END: &[u8] = b")\r\n";

/// Whether an item shows a message's content (or its size, which the content decides).
fn is_content(i: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName as N;
    matches!(
        i,
        N::Body
            | N::BodyExt { .. }
            | N::BodyStructure
            | N::Envelope
            | N::Rfc822
            | N::Rfc822Header
            | N::Rfc822Size
            | N::Rfc822Text
    )
}

/// An untagged FETCH response of the upstream, read: the whole message in it, when there
/// is one.
pub struct Fetched {
    response: Response<'static>,
}

impl Fetched {
    /// `bytes` when it is one whole `* n FETCH (…)` response.
    pub fn parse(bytes: &[u8]) -> Option<Fetched> {
        let (rest, response) = ResponseCodec::default().decode(bytes).ok()?;
        if !rest.is_empty() {
            return None;
        }
        matches!(response, Response::Data(Data::Fetch { .. })).then(|| Fetched {
            response: response.into_static(),
        })
    }

    /// The message's UID, when the response names it.
    pub fn uid(&self) -> Option<u32> {
        let Response::Data(Data::Fetch { items, .. }) = &self.response else {
            return None;
        };
        items.as_ref().iter().find_map(|i| match i {
            MessageDataItem::Uid(u) => Some(u.get()),
            _ => None,
        })
    }

    /// The whole message the response carries (`BODY[]`).
    pub fn message(&self) -> Option<&[u8]> {
        let Response::Data(Data::Fetch { items, .. }) = &self.response else {
            return None;
        };
        items.as_ref().iter().find_map(|i| match i {
            MessageDataItem::BodyExt {
                section: None,
                origin: None,
                data: NString(Some(s)),
            } => Some(s.as_ref()),
            _ => None,
        })
    }

    /// The response as the client asked for it when the upstream was asked for the items
    /// that are not content ([`Wanted::probe_items`]): those, and the content items from
    /// `served`, the opened message in the cache; `None` when it has no such part.
    pub fn composed(self, wanted: &Wanted, served: &[u8]) -> Option<Vec<u8>> {
        use MessageDataItemName as N;
        let Response::Data(Data::Fetch { seq, items }) = self.response else {
            return None;
        };
        let message = Served::of(served);
        let mut out: Vec<MessageDataItem<'static>> = items.into_iter().collect();
        for w in &wanted.items {
            out.push(match w {
                N::BodyExt { section, .. } => {
                    let bytes = message.section(section.as_ref())?;
                    let (origin, bytes) = partial(&wanted.items, section.as_ref(), bytes);
                    MessageDataItem::BodyExt {
                        section: section.clone(),
                        origin,
                        data: nstring(&bytes),
                    }
                }
                N::Rfc822Header => {
                    MessageDataItem::Rfc822Header(nstring(&[message.head, b"\r\n"].concat()))
                }
                N::Rfc822Size => {
                    MessageDataItem::Rfc822Size(u32::try_from(served.len()).unwrap_or(u32::MAX))
                }
                N::Envelope => MessageDataItem::Envelope(envelope(message.head)),
                N::BodyStructure => {
                    MessageDataItem::BodyStructure(super::structure::body_structure(served, true)?)
                }
                N::Body => MessageDataItem::Body(super::structure::body_structure(served, false)?),
                _ => continue,
            });
        }
        Some(encode(seq, out))
    }

    /// The response as the client asked for it, with the message the upstream sent: the
    /// added `BODY[]` taken out again.
    pub fn as_sent(self, wanted: &Wanted) -> Vec<u8> {
        let Response::Data(Data::Fetch { seq, items }) = self.response else {
            return Vec::new();
        };
        let kept: Vec<MessageDataItem<'static>> = items
            .into_iter()
            .filter(|i| !(wanted.added_body && is_whole(i)))
            .collect();
        encode(seq, kept)
    }

    /// The response as the client asked for it, answered from `served` (the message the
    /// transform delivered) wherever the item shows content.
    pub fn served(self, wanted: &Wanted, served: &[u8]) -> Vec<u8> {
        let Response::Data(Data::Fetch { seq, items }) = self.response else {
            return Vec::new();
        };
        let message = Served::of(served);
        let head = message.head;
        let mut out: Vec<MessageDataItem<'static>> = Vec::new();
        for item in items {
            let replaced = match &item {
                MessageDataItem::BodyExt {
                    section, origin, ..
                } => {
                    if wanted.added_body && section.is_none() && origin.is_none() {
                        continue;
                    }
                    message.section(section.as_ref()).map(|bytes| {
                        let (origin, bytes) = partial(&wanted.items, section.as_ref(), bytes);
                        MessageDataItem::BodyExt {
                            section: section.clone(),
                            origin,
                            data: nstring(&bytes),
                        }
                    })
                }
                MessageDataItem::Rfc822(_) => Some(MessageDataItem::Rfc822(nstring(served))),
                MessageDataItem::Rfc822Header(_) => Some(MessageDataItem::Rfc822Header(nstring(
                    &[message.head, b"\r\n"].concat(),
                ))),
                MessageDataItem::Rfc822Text(_) => {
                    Some(MessageDataItem::Rfc822Text(nstring(message.body)))
                }
                MessageDataItem::Rfc822Size(_) => Some(MessageDataItem::Rfc822Size(
                    u32::try_from(served.len()).unwrap_or(u32::MAX),
                )),
                MessageDataItem::Envelope(_) => Some(MessageDataItem::Envelope(envelope(head))),
                MessageDataItem::BodyStructure(_) => super::structure::body_structure(served, true)
                    .map(MessageDataItem::BodyStructure),
                // `BODY` is `BODYSTRUCTURE` without the extension data.
                MessageDataItem::Body(_) => {
                    super::structure::body_structure(served, false).map(MessageDataItem::Body)
                }
                _ => None,
            };
            out.push(replaced.unwrap_or(item));
        }
        encode(seq, out)
    }
}

fn is_whole(i: &MessageDataItem<'_>) -> bool {
    matches!(
        i,
        MessageDataItem::BodyExt {
            section: None,
            origin: None,
            ..
        }
    )
}

fn encode(seq: NonZeroU32, items: Vec<MessageDataItem<'static>>) -> Vec<u8> {
    let Ok(items) = items.try_into() else {
        // Nothing left to say about this message.
        return Vec::new();
    };
    ResponseCodec::default()
        .encode(&Response::Data(Data::Fetch { seq, items }))
        .dump()
}

/// The message the proxy serves in place of the upstream's.
struct Served<'a> {
    whole: &'a [u8],
    /// The header section with its last CRLF, without the empty line.
    head: &'a [u8],
    body: &'a [u8],
}

impl Served<'_> {
    /// A section (RFC 9051 §6.4.5) of the served message; `None` when it has no such part
    /// (then the upstream's answer stays, as for a part number beyond the last).
    fn section(&self, section: Option<&Section<'_>>) -> Option<Vec<u8>> {
        let with_end = |fields: &[u8]| [fields, b"\r\n"].concat();
        // The attached message a numbered HEADER or TEXT section names.
        let attached = |p: &Part| -> Option<Served<'_>> {
            let part = super::structure::part(self.whole, p.0.as_ref())?;
            part.message.then(|| Served::of(part.body))
        };
        match section {
            None => Some(self.whole.to_vec()),
            Some(Section::Header(None)) => Some(with_end(self.head)),
            Some(Section::Text(None)) => Some(self.body.to_vec()),
            Some(Section::HeaderFields(None, names)) => {
                Some(with_end(&self.fields(names.as_ref(), true)))
            }
            Some(Section::HeaderFieldsNot(None, names)) => {
                Some(with_end(&self.fields(names.as_ref(), false)))
            }
            Some(Section::Part(p)) => {
                super::structure::part(self.whole, p.0.as_ref()).map(|part| part.body.to_vec())
            }
            Some(Section::Mime(p)) => {
                super::structure::part(self.whole, p.0.as_ref()).map(|part| part.mime.to_vec())
            }
            Some(Section::Header(Some(p))) => attached(p).map(|m| with_end(m.head)),
            Some(Section::Text(Some(p))) => attached(p).map(|m| m.body.to_vec()),
            Some(Section::HeaderFields(Some(p), names)) => {
                attached(p).map(|m| with_end(&m.fields(names.as_ref(), true)))
            }
            Some(Section::HeaderFieldsNot(Some(p), names)) => {
                attached(p).map(|m| with_end(&m.fields(names.as_ref(), false)))
            }
        }
    }

    fn of(whole: &[u8]) -> Served<'_> {
        let (head, body) = headers::split_bytes(whole);
        Served { whole, head, body }
    }

    /// The header fields named in `names` (or all others), byte for byte.
    fn fields(&self, names: &[imap_codec::imap_types::core::AString<'_>], named: bool) -> Vec<u8> {
        let wanted: Vec<String> = names
            .iter()
            .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_lowercase())
            .collect();
        let (fields, _) = headers::split(&[self.head, b"\r\n"].concat());
        fields
            .iter()
            .filter(|f| wanted.contains(&f.name.to_ascii_lowercase()) == named)
            .flat_map(|f| f.wire().into_bytes())
            .collect()
    }
}

/// The bytes of a partial fetch (`BODY[]<0.100>`), with the origin the answer names.
fn partial(
    wanted: &[MessageDataItemName<'_>],
    section: Option<&Section<'_>>,
    bytes: Vec<u8>,
) -> (Option<u32>, Vec<u8>) {
    let range = wanted.iter().find_map(|w| match w {
        MessageDataItemName::BodyExt {
            section: s,
            partial: Some(p),
            ..
        } if s.as_ref() == section => Some(*p),
        _ => None,
    });
    let Some((start, len)) = range else {
        return (None, bytes);
    };
    let from = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let to = from
        .saturating_add(usize::try_from(len.get()).unwrap_or(usize::MAX))
        .min(bytes.len());
    (
        Some(start),
        bytes.get(from..to).unwrap_or_default().to_vec(),
    )
}

/// Bytes as an IMAP string: quoted when short and plain, a literal otherwise (a literal
/// takes every byte but NUL, which is dropped).
pub fn istring(bytes: &[u8]) -> IString<'static> {
    let quoted = bytes.len() < 256
        && bytes
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if quoted {
        if let Ok(q) = Quoted::try_from(String::from_utf8_lossy(bytes).into_owned()) {
            return IString::Quoted(q);
        }
    }
    let without_nul: Vec<u8> = bytes.iter().copied().filter(|&b| b != 0).collect();
    Literal::try_from(without_nul)
        .map(IString::Literal)
        .unwrap_or_else(|_| IString::Quoted(Quoted::unvalidated("")))
}

/// [`istring`], or NIL for bytes that cannot be sent without BINARY (a NUL byte, which
/// the transform never delivers).
fn nstring(bytes: &[u8]) -> NString<'static> {
    if bytes.contains(&0) {
        return NString(None);
    }
    NString(Some(istring(bytes)))
}

/// RFC 9051 §7.5.2's ENVELOPE of a header section: the fields as they are written
/// (encoded words stay encoded), the addresses split.
pub fn envelope(head: &[u8]) -> Envelope<'static> {
    let (fields, _) = headers::split(&[head, b"\r\n"].concat());
    let text = |name: &str| -> NString<'static> {
        headers::effective(&fields, name)
            .map(|f| nstring(unfold(f).as_bytes()))
            .unwrap_or(NString(None))
    };
    let addresses = |name: &str| -> Vec<Address<'static>> {
        headers::effective(&fields, name)
            .map(addresses_of)
            .unwrap_or_default()
    };
    let from = addresses("From");
    let or_from = |v: Vec<Address<'static>>| if v.is_empty() { from.clone() } else { v };
    Envelope {
        date: text("Date"),
        subject: text("Subject"),
        sender: or_from(addresses("Sender")),
        reply_to: or_from(addresses("Reply-To")),
        from: from.clone(),
        to: addresses("To"),
        cc: addresses("Cc"),
        bcc: addresses("Bcc"),
        in_reply_to: text("In-Reply-To"),
        message_id: text("Message-ID"),
    }
}

/// A field's value unfolded, without the space after its colon.
fn unfold(f: &Field) -> String {
    f.raw.replace("\r\n", "").trim().to_string()
}

/// The addresses of an address field, as mail-parser reads them (groups flattened).
fn addresses_of(f: &Field) -> Vec<Address<'static>> {
    let wire = format!("{}\r\n", f.wire().trim_end());
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(wire.as_bytes()) else {
        return Vec::new();
    };
    let Some(list) = parsed.header(f.name.as_str()).and_then(|v| v.as_address()) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|a| {
            let addr = a.address.as_deref()?;
            let (mailbox, host) = addr.rsplit_once('@')?;
            Some(Address {
                name: a
                    .name
                    .as_deref()
                    .map_or(NString(None), |n| nstring(encoded_word(n).as_bytes())),
                adl: NString(None),
                mailbox: nstring(mailbox.as_bytes()),
                host: nstring(host.as_bytes()),
            })
        })
        .collect()
}

/// A display name as an IMAP string must carry it: ASCII as it is, anything else as an
/// RFC 2047 encoded word.
fn encoded_word(name: &str) -> String {
    use base64::Engine;
    if name.is_ascii() {
        return name.to_string();
    }
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_fetch_gets_the_whole_message_added() {
        let (bytes, tag, wanted) =
            rewrite(b"a7 UID FETCH 1:3 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n").unwrap();
        assert_eq!(tag, "a7");
        assert!(wanted.added_body);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("a7 UID FETCH 1:3 ("), "{text}");
        assert!(text.ends_with(" BODY.PEEK[])\r\n"), "{text}");
        let (_, _, all) = rewrite(b"b FETCH 1 ALL\r\n").unwrap();
        assert!(all.added_body);
        let (_, _, whole) = rewrite(b"c FETCH 1 (BODY[])\r\n").unwrap();
        assert!(!whole.added_body);
        assert!(rewrite(b"d FETCH 1 (FLAGS UID)\r\n").is_none());
        assert!(rewrite(b"e SELECT INBOX\r\n").is_none());
        assert!(rewrite(b"not imap at all\r\n").is_none());
    }

    #[test]
    fn a_whole_message_response_is_read_and_written_without_the_codec() {
        let r = b"* 3 FETCH (UID 9 BODY[] {5}\r\nabcde)\r\n";
        assert_eq!(whole_message_response(r), Some((3, 9)));
        assert_eq!(
            whole_message_response(b"* 3 FETCH (UID 9 BODY[] {5}\r\nabcde FLAGS ())\r\n"),
            None
        );
        assert_eq!(
            whole_message_response(b"* 3 FETCH (FLAGS () UID 9 BODY[] {5}\r\nabcde)\r\n"),
            None
        );
        let served = b"Subject: x\r\n\r\nhi\r\n";
        let answer = [
            &whole_message_head(3, 9, served.len())[..],
            served,
            WHOLE_MESSAGE_END,
        ]
        .concat();
        let parsed = Fetched::parse(&answer).unwrap();
        assert_eq!(parsed.uid(), Some(9));
        assert_eq!(parsed.message(), Some(&b"Subject: x\r\n\r\nhi\r\n"[..]));
        let (_, _, w) = rewrite(b"a UID FETCH 1:* (BODY.PEEK[])\r\n").unwrap();
        assert!(w.whole_only());
        let (_, _, w) = rewrite(b"a UID FETCH 1:* (FLAGS BODY.PEEK[])\r\n").unwrap();
        assert!(!w.whole_only());
        let (_, _, w) = rewrite(b"a FETCH 1:* (BODY.PEEK[])\r\n").unwrap();
        assert_eq!(w.probe_items(), Some(vec![MessageDataItemName::Uid]));
        let (_, _, w) = rewrite(b"a FETCH 1:* (BODY[])\r\n").unwrap();
        assert!(
            w.probe_items().is_none(),
            "BODY[] sets \\Seen: the upstream must see it"
        );
        let (_, _, w) = rewrite(b"a FETCH 1:* (RFC822.TEXT)\r\n").unwrap();
        assert!(w.probe_items().is_none());
        let (_, _, w) =
            rewrite(b"a FETCH 1:* (FLAGS ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
                .unwrap();
        assert_eq!(
            w.probe_items(),
            Some(vec![MessageDataItemName::Uid, MessageDataItemName::Flags])
        );
    }

    #[test]
    fn cached_messages_are_asked_for_by_uid_only() {
        let uid = || vec![MessageDataItemName::Uid];
        assert_eq!(
            probe_command(b"a7 UID FETCH 1:* (BODY.PEEK[])\r\n", uid()).unwrap(),
            b"a7 UID FETCH 1:* UID\r\n"
        );
        assert_eq!(
            probe_command(b"a8 FETCH 2,4:6 (UID BODY.PEEK[])\r\n", uid()).unwrap(),
            b"a8 FETCH 2,4:6 UID\r\n"
        );
        assert_eq!(uid_response(b"* 3 FETCH (UID 17)\r\n"), Some((3, 17)));
        assert_eq!(uid_response(b"* 3 FETCH (UID 17 FLAGS (\\Seen))\r\n"), None);
        assert_eq!(uid_response(b"* 3 EXPUNGE\r\n"), None);
        assert_eq!(
            uid_in(b"* 3 FETCH (FLAGS () UID 17 X-ODD {2}\r\nab)\r\n"),
            Some(17)
        );
        assert_eq!(uid_in(b"* 3 FETCH (XUID 17)\r\n"), None);
        let (_, _, whole) = rewrite(b"x FETCH 1 (BODY.PEEK[])\r\n").unwrap();
        assert_eq!(
            by_uid("t", &[9, 3, 4, 5, 7, 3], &whole),
            [(
                "t-sealpost-0".to_string(),
                b"t-sealpost-0 UID FETCH 3:5,7,9 (BODY.PEEK[] UID)\r\n".to_vec()
            )]
        );
        let (_, _, list) = rewrite(b"x FETCH 1 (FLAGS ENVELOPE)\r\n").unwrap();
        assert_eq!(
            by_uid("t", &[4], &list)[0].1,
            b"t-sealpost-0 UID FETCH 4 (FLAGS ENVELOPE UID BODY.PEEK[])\r\n"
        );
        let scattered: Vec<u32> = (1..1201).map(|n| n * 2).collect();
        let commands = by_uid("t", &scattered, &whole);
        assert_eq!(commands.len(), 3);
        assert!(commands.iter().all(|(_, l)| l.len() < 8192));
        assert!(commands[2]
            .1
            .starts_with(b"t-sealpost-2 UID FETCH 2002,2004,"));
    }

    #[test]
    fn a_message_list_is_composed_from_the_upstream_s_flags_and_the_cached_message() {
        let (_, _, wanted) = rewrite(
            b"a UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.3>)\r\n",
        )
        .unwrap();
        let upstream = b"* 4 FETCH (UID 9 FLAGS (\\Seen))\r\n";
        let served = b"From: Alice <alice@example.org>\r\nSubject: Real\r\n\r\nHello\r\n";
        let out = Fetched::parse(upstream)
            .unwrap()
            .composed(&wanted, served)
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with(
                "* 4 FETCH (UID 9 FLAGS (\\Seen) RFC822.SIZE 57 ENVELOPE (NIL \"Real\""
            ),
            "{out}"
        );
        assert!(
            out.contains("BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: Real\r\n\r\n"),
            "{out}"
        );
        assert!(out.ends_with(" BODY[TEXT]<0> \"Hel\")\r\n"), "{out}");
        // A part the message does not have: not composed (then fetched from the upstream).
        let (_, _, wanted) = rewrite(b"a UID FETCH 1 (BODY.PEEK[3])\r\n").unwrap();
        assert!(Fetched::parse(upstream)
            .unwrap()
            .composed(&wanted, served)
            .is_none());
    }

    #[test]
    fn content_is_answered_from_the_served_message() {
        let (_, _, wanted) = rewrite(
            b"a FETCH 1 (UID RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.3>)\r\n",
        )
        .unwrap();
        let upstream = b"* 1 FETCH (UID 9 RFC822.SIZE 99 ENVELOPE (NIL \"[...]\" NIL NIL NIL NIL NIL NIL NIL NIL) BODY[HEADER.FIELDS (SUBJECT)] {20}\r\nSubject: [...]\r\n\r\n\r\n BODY[TEXT]<0> {3}\r\nxyz BODY[] {5}\r\nabcde)\r\n";
        let fetched = Fetched::parse(upstream).unwrap();
        assert_eq!(fetched.message(), Some(&b"abcde"[..]));
        let served = b"From: Alice <alice@example.org>\r\nSubject: Real\r\n\r\nHello\r\n";
        let out = String::from_utf8(fetched.served(&wanted, served)).unwrap();
        assert!(out.starts_with("* 1 FETCH (UID 9 RFC822.SIZE 57 ENVELOPE (NIL \"Real\" ((\"Alice\" NIL \"alice\" \"example.org\"))"), "{out}");
        assert!(
            out.contains("BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: Real\r\n\r\n"),
            "{out}"
        );
        assert!(out.contains("BODY[TEXT]<0> \"Hel\""), "{out}");
        assert!(
            !out.contains("BODY[] "),
            "the added item is taken out: {out}"
        );
        let plain = Fetched::parse(upstream).unwrap().as_sent(&wanted);
        let plain = String::from_utf8(plain).unwrap();
        assert!(
            plain.contains("Subject: [...]") && !plain.contains("BODY[] "),
            "{plain}"
        );
    }
}
