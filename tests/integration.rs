//! End-to-end tests: the real `sealpost` binary driven by real peers (gpg, sq, swaks,
//! smtp-sink). One test binary, so that the suite links once.

mod integration {
    mod admin;
    mod admin_ops;
    mod attacks;
    mod backscatter;
    mod common;
    mod dane;
    mod discovery;
    mod faults;
    mod imap;
    mod inbound;
    mod inbound_tls;
    mod keys;
    mod lifecycle;
    mod lmtp;
    mod memory;
    mod ops;
    mod outbound;
    mod postfix;
    mod postgres;
    mod publish;
    mod relay;
    mod secrets;
    mod shredding;
    mod smuggling;
    mod upstream;
    mod wkd;
}
