//! The seam between the SMTP session and the rest of the gateway.

use std::future::Future;

use super::envelope::{Recipient, Sender};
use super::reply::Reply;
use super::transaction::{Client, Credentials, Transaction};

/// What a session asks of the gateway. Implemented by the pipeline, and by test doubles.
pub trait Backend: Send + Sync + 'static {
    /// At RCPT time: policy and local-domain checks. `Err` refuses this recipient with the
    /// reply (for example `550 5.7.1`), and the session goes on.
    fn check_recipient(
        &self,
        sender: &Sender,
        rcpt: &Recipient,
        client: &Client,
    ) -> impl Future<Output = Result<(), Reply>> + Send;

    /// After the final dot: process and relay. The reply goes to the client as it is; a
    /// 250 promises the message was delivered or durably spooled.
    fn deliver(&self, tx: Transaction) -> impl Future<Output = Reply> + Send;

    /// AUTH in passthrough mode: check the credentials upstream.
    fn authenticate(&self, creds: &Credentials) -> impl Future<Output = Result<(), Reply>> + Send;
}
