//! The SMTP reply for what the transforms refuse: the transforms say what is wrong with
//! a message ([`Out`], [`inbound::Error`]), and this is the one place that
//! turns it into a reply code and text.

use crate::smtp::reply::{Enhanced, Reply};
use crate::transform::inbound;
use crate::transform::outbound::Error as Out;

/// The SMTP reply for a transform error.
pub trait ToReply {
    fn reply(&self) -> Reply;
}

impl ToReply for Out {
    /// A malformed message is refused for good (`554 5.6.0`); anything else is not the
    /// client's fault: try again later, and let the logs say why (`451 4.3.0`).
    fn reply(&self) -> Reply {
        let text = match self {
            Out::NoFrom | Out::SeveralFrom(_) | Out::FromAddresses(_) => {
                "The message needs exactly one From address to be signed or encrypted"
            }
            Out::NulByte | Out::BareLineFeed => {
                "The message is malformed (NUL bytes or bare LF line endings)"
            }
            Out::HeaderLineTooLong(_) | Out::TooManyFields(_) => {
                "The message header is over the limits (998 octets a line, 1000 fields)"
            }
            Out::TooDeep(_) | Out::TooManyParts(_) => {
                "The MIME structure of the message is nested too deep or has too many parts"
            }
            Out::InvalidCharset(_) => {
                "The message is malformed (a text part's bytes are not in its declared charset)"
            }
            _ => "Temporary failure while protecting the message; try again later",
        };
        if self.is_input() {
            Reply::new(554, Enhanced(5, 6, 0), text)
        } else {
            Reply::new(451, Enhanced(4, 3, 0), text)
        }
    }
}

impl ToReply for inbound::Error {
    /// Not the sender's fault: try again later.
    fn reply(&self) -> Reply {
        Reply::new(
            451,
            Enhanced(4, 3, 0),
            "Temporary local problem while opening the message; try again later",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_s_own_faults_are_permanent_everything_else_temporary() {
        for e in [
            Out::NoFrom,
            Out::SeveralFrom(2),
            Out::FromAddresses(0),
            Out::NulByte,
            Out::BareLineFeed,
            Out::HeaderLineTooLong(999),
            Out::TooManyFields(1001),
            Out::TooDeep(40),
            Out::TooManyParts(1000),
            Out::InvalidCharset("utf-8".into()),
        ] {
            let r = e.reply();
            assert_eq!((r.code, r.enhanced), (554, Some(Enhanced(5, 6, 0))), "{e}");
            assert!(!r.text().contains("try again"), "{e}");
        }
        for e in [Out::NoRecipients, Out::NotSevenBit] {
            let r = e.reply();
            assert_eq!((r.code, r.enhanced), (451, Some(Enhanced(4, 3, 0))), "{e}");
        }
        let io = inbound::Error::Spill(std::io::Error::other("disk full"));
        assert_eq!(io.reply().code, 451);
    }
}
