//! systemd's readiness protocol (`sd_notify(3)`, `Type=notify`): one datagram to the
//! socket named by `NOTIFY_SOCKET`. Without that variable (not started by systemd)
//! nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Tells systemd that a reload begins: `RELOADING=1` with the time on the monotonic clock,
/// as `sd_notify(3)` asks for it; `READY=1` says when it is over (applied or not).
pub fn reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0) / 1000);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Tells systemd `state` (`READY=1`, `STOPPING=1`). A failure is logged, never fatal:
/// the gateway serves the same whether or not systemd hears it.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(error = %e, socket = ?path, state, "cannot notify systemd");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // systemd may name a socket in Linux's abstract namespace, written with a leading @.
    #[cfg(target_os = "linux")]
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
        return Ok(());
    }
    socket.send_to(state.as_bytes(), std::path::Path::new(path))?;
    Ok(())
}
