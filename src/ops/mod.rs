//! What an operator watches from outside: counters and gauges in the Prometheus format,
//! liveness and readiness over HTTP (`[admin] http`), and readiness to systemd.

pub mod http;
pub mod metrics;
pub mod notify;
