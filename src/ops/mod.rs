//! What an operator watches from outside: counters and gauges in the Prometheus format,
//! liveness and readiness over HTTP (`[admin] http`), readiness to systemd, and the
//! decision trail of each message.

pub mod http;
pub mod metrics;
pub mod notify;
pub mod trail;
