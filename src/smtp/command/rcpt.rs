//! RCPT TO: a recipient and its DSN parameters.

use smtp_proto::{
    RcptTo, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};

use crate::smtp::address::Address;
use crate::smtp::envelope::{Notify, Recipient, Sender};
use crate::smtp::reply::{Enhanced, Reply};

/// Builds the recipient, or the reply that refuses it.
///
/// # Errors
/// Syntax and encoding problems the client must fix.
pub fn recipient(sender: &Sender, to: RcptTo<String>) -> Result<Recipient, Reply> {
    if to.address.is_empty() || !to.address.contains('@') {
        return Err(Reply::new(
            501,
            Enhanced(5, 1, 3),
            format!(
                "<{}>: a recipient must be a full address",
                to.address.escape_debug()
            ),
        ));
    }
    if !sender.smtputf8 && !to.address.is_ascii() {
        return Err(super::mail::non_ascii());
    }
    let address = Address::parse(&to.address).map_err(|why| {
        Reply::new(
            553,
            Enhanced(5, 1, 3),
            format!("Recipient address refused: {why}"),
        )
    })?;
    // ORCPT comes back in DSN header fields: nothing in it may break a line.
    if to
        .orcpt
        .as_deref()
        .is_some_and(|o| o.chars().any(char::is_control))
    {
        return Err(Reply::new(
            501,
            Enhanced(5, 5, 4),
            "ORCPT must not contain control characters",
        ));
    }
    let mut notify = Vec::new();
    for (flag, n) in [
        (RCPT_NOTIFY_NEVER, Notify::Never),
        (RCPT_NOTIFY_SUCCESS, Notify::Success),
        (RCPT_NOTIFY_FAILURE, Notify::Failure),
        (RCPT_NOTIFY_DELAY, Notify::Delay),
    ] {
        if to.flags & flag != 0 {
            notify.push(n);
        }
    }
    Ok(Recipient {
        address,
        notify,
        orcpt: to.orcpt,
    })
}

pub fn accepted(rcpt: &Recipient) -> Reply {
    Reply::new(
        250,
        Enhanced(2, 1, 5),
        format!("Recipient <{}> OK", rcpt.address),
    )
}

pub fn too_many(limit: usize) -> Reply {
    Reply::new(
        452,
        Enhanced(4, 5, 3),
        format!("Too many recipients; at most {limit} per message, send the rest separately"),
    )
}
