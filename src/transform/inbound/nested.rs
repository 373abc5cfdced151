//! OpenPGP data below the root of a plain message, found by one walk over its lines: the
//! MIME header sections and delimiter lines give the structure, text leaves are searched
//! for armor lines as they pass. Nothing is held but a header section at a time, so a
//! large message is walked while it is read from its sealed file.
//!
//! mail-parser's tree is not used here because it reads malformed MIME differently from
//! the root's classifier: it takes `--boundary` anywhere in a line, even followed by other
//! text, as a delimiter, turns an attached message whose header section never ends into
//! text, and panics on some trees.
//!
//! The structure is read as the root's classifier reads it ([`crate::mime::scan::parts`],
//! RFC 2046 §5.1.1): a delimiter line is `--boundary`, or `--boundary--` for the last,
//! followed by nothing but white space; a header section ends at the first empty line.
//! Two narrowings, kept on purpose: a quoted-printable text leaf is searched as encoded (a
//! soft line break inside an armor line hides it), and an attached message sent
//! base64-encoded is not looked into (the structure scan does not look into those either).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::io;

use base64::Engine;

use crate::mime::headers;
use crate::mime::structure::{MAX_DEPTH, MAX_LINE, MAX_PARTS};

use crate::mime::decode::{Cte, Finder};
use crate::mime::entity::ContentType;
use crate::mime::lines::{Lines, HEAD_MAX};

const NEEDLES: [&[u8]; 3] = [
    b"-----BEGIN PGP MESSAGE-----",
    b"-----BEGIN PGP SIGNED MESSAGE-----",
    b"-----BEGIN PGP SIGNATURE-----",
];

/// OpenPGP data found where it is never opened: below the root, or beside cleartext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nested {
    pub ciphertext: bool,
    pub signature: bool,
}

/// An open container: a multipart (its delimiter `--boundary`) or an attached message.
enum Frame {
    Multipart(Vec<u8>),
    Message,
}

enum Mode {
    /// Inside a header section; whether its entity is below the root.
    Header {
        head: Vec<u8>,
        below_root: bool,
    },
    Text(Leaf),
    Skip,
}

/// A text leaf being searched.
struct Leaf {
    cte: Cte,
    /// Base64 text short of a quad.
    carry: Vec<u8>,
    decoded: Vec<u8>,
    finder: Finder<'static>,
}

impl Leaf {
    fn new(cte: Cte) -> Leaf {
        Leaf {
            cte,
            carry: Vec::new(),
            decoded: Vec::new(),
            finder: Finder::new(&NEEDLES),
        }
    }

    fn feed(&mut self, piece: &[u8]) {
        if self.cte != Cte::Base64 {
            self.finder.feed(piece);
            return;
        }
        self.carry
            .extend(piece.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.carry.len() / 4 * 4;
        self.decoded.clear();
        let text = self.carry.get(..whole).unwrap_or_default();
        // Undecodable text has no armor lines in it.
        if base64::engine::general_purpose::STANDARD
            .decode_vec(text, &mut self.decoded)
            .is_err()
        {
            self.decoded.clear();
        }
        self.carry.drain(..whole);
        self.finder.feed(&self.decoded);
    }

    fn into_found(self, found: &mut Nested) {
        found.ciphertext |= self.finder.count(0) > 0;
        found.signature |= self.finder.count(1) > 0 || self.finder.count(2) > 0;
    }
}

/// Walks the whole message, read from `whole` (a spilled message's reader, or the bytes of
/// one in memory). A message over the structure limits is not looked into.
///
/// # Errors
/// Read errors.
pub fn walk(whole: impl io::Read) -> io::Result<Nested> {
    let mut found = Nested::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parts = 0usize;
    let mut mode = Mode::Header {
        head: Vec::new(),
        below_root: false,
    };
    let mut lines = Lines::new(whole);
    loop {
        let mut long_header = false;
        let Some(line) = lines.next(&mut |piece| match &mut mode {
            Mode::Header { .. } => long_header = true,
            Mode::Text(leaf) => leaf.feed(piece),
            Mode::Skip => {}
        })?
        else {
            break;
        };
        let content = line.content();
        if let Some((i, closing)) = content.and_then(|c| delimiter(&stack, c)) {
            if let Mode::Text(leaf) = std::mem::replace(&mut mode, Mode::Skip) {
                leaf.into_found(&mut found);
            }
            stack.truncate(i + 1);
            if closing {
                stack.truncate(i);
            } else {
                parts += 1;
                if parts > MAX_PARTS {
                    return Ok(Nested::default());
                }
                mode = Mode::Header {
                    head: Vec::new(),
                    below_root: true,
                };
            }
            continue;
        }
        match &mut mode {
            Mode::Header { head, below_root } => {
                let Some(c) = content.filter(|c| c.len() <= MAX_LINE && !long_header) else {
                    return Ok(Nested::default());
                };
                if c.is_empty() {
                    let below = *below_root;
                    let head = std::mem::take(head);
                    mode = entity(&head, below, &mut stack, &mut found);
                    if stack.len() > MAX_DEPTH {
                        return Ok(Nested::default());
                    }
                } else if head.len() < HEAD_MAX {
                    head.extend_from_slice(line.head);
                }
            }
            Mode::Text(leaf) => {
                if line.complete() {
                    leaf.feed(line.head);
                }
            }
            Mode::Skip => {}
        }
    }
    if let Mode::Text(leaf) = mode {
        leaf.into_found(&mut found);
    }
    Ok(found)
}

/// Which open multipart a `--…` line delimits, and whether it closes it (inner first).
fn delimiter(stack: &[Frame], line: &[u8]) -> Option<(usize, bool)> {
    if !line.starts_with(b"--") {
        return None;
    }
    let line = line.trim_ascii_end();
    stack.iter().enumerate().rev().find_map(|(i, f)| match f {
        Frame::Multipart(d) => match line.strip_prefix(d.as_slice())? {
            b"" => Some((i, false)),
            b"--" => Some((i, true)),
            _ => None,
        },
        Frame::Message => None,
    })
}

/// After a header section: what its type says about nested protection, and what follows.
fn entity(head: &[u8], below_root: bool, stack: &mut Vec<Frame>, found: &mut Nested) -> Mode {
    let section = [head, b"\r\n"].concat();
    let (fields, _) = headers::split(&section);
    let ct = ContentType::of(&fields);
    let cte = Cte::of(&fields);
    if let Some(ct) = ct.as_ref().filter(|_| below_root) {
        match (ct.kind.as_str(), ct.sub.as_str()) {
            ("multipart", "encrypted") | ("application", "pgp-encrypted") => {
                found.ciphertext = true
            }
            ("multipart", "signed") | ("application", "pgp-signature") => found.signature = true,
            _ => {}
        }
    }
    match &ct {
        Some(c) if c.kind == "multipart" => {
            if let Some(b) = c.param("boundary").filter(|b| !b.is_empty()) {
                stack.push(Frame::Multipart(format!("--{b}").into_bytes()));
            }
            Mode::Skip
        }
        Some(c) if c.kind == "message" && (c.sub == "rfc822" || c.sub == "global") => {
            if cte == Some(Cte::Identity) {
                stack.push(Frame::Message);
                Mode::Header {
                    head: Vec::new(),
                    below_root: true,
                }
            } else {
                Mode::Skip
            }
        }
        Some(c) if c.kind != "text" => Mode::Skip,
        _ => Mode::Text(Leaf::new(cte.unwrap_or(Cte::Identity))),
    }
}
