//! MAIL FROM: the sender and its parameters.

use smtp_proto::{MailFrom, MAIL_BODY_8BITMIME, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8};

use crate::smtp::address::Address;
use crate::smtp::config::SessionConfig;
use crate::smtp::envelope::{Ret, Sender};
use crate::smtp::reply::{Enhanced, Reply};

/// Validates MAIL's parameters against this listener and builds the sender.
///
/// # Errors
/// The reply to send when the command is refused.
pub fn sender(cfg: &SessionConfig, from: MailFrom<String>) -> Result<Sender, Reply> {
    let limit = cfg.message_limit();
    if from.size > limit {
        if limit < cfg.max_message_size {
            return Err(Reply::new(
                552,
                Enhanced(5, 3, 4),
                format!(
                    "Message size exceeds the limit of {limit} bytes: the next hop's own \
                     limit, less the room the gateway's changes take"
                ),
            ));
        }
        return Err(too_big(limit));
    }
    let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
    if smtputf8 && !cfg.smtputf8 {
        return Err(Reply::new(
            555,
            Enhanced(5, 5, 4),
            "SMTPUTF8 is not offered here (the next hop does not support it)",
        ));
    }
    if !smtputf8 && !from.address.is_ascii() {
        return Err(non_ascii());
    }
    let address = Address::parse(&from.address).map_err(|why| {
        Reply::new(
            553,
            Enhanced(5, 1, 7),
            format!("Sender address refused: {why}"),
        )
    })?;
    // ENVID comes back in DSN header fields: nothing in it may break a line.
    if from
        .env_id
        .as_deref()
        .is_some_and(|e| e.chars().any(char::is_control))
    {
        return Err(Reply::new(
            501,
            Enhanced(5, 5, 4),
            "ENVID must not contain control characters",
        ));
    }
    let ret = if from.flags & MAIL_RET_FULL != 0 {
        Some(Ret::Full)
    } else if from.flags & MAIL_RET_HDRS != 0 {
        Some(Ret::Headers)
    } else {
        None
    };
    Ok(Sender {
        address,
        eight_bit: from.flags & MAIL_BODY_8BITMIME != 0,
        smtputf8,
        ret,
        envid: from.env_id,
        size: (from.size > 0).then_some(from.size),
    })
}

pub fn accepted(sender: &Sender) -> Reply {
    Reply::new(
        250,
        Enhanced(2, 1, 0),
        format!("Sender <{}> OK", sender.address),
    )
}

pub fn too_big(limit: usize) -> Reply {
    Reply::new(
        552,
        Enhanced(5, 3, 4),
        format!("Message size exceeds the limit of {limit} bytes"),
    )
}

pub fn non_ascii() -> Reply {
    Reply::new(
        553,
        Enhanced(5, 6, 7),
        "Non-ASCII address requires SMTPUTF8",
    )
}

pub fn auth_required() -> Reply {
    Reply::new(
        530,
        Enhanced(5, 7, 0),
        "Authentication required: log in with AUTH before sending",
    )
}
