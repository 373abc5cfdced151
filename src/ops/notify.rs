//! systemd's readiness protocol (`sd_notify(3)`, `Type=notify`): one datagram to the
//! socket named by `NOTIFY_SOCKET`. Without that variable (not started by systemd)
//! nothing is sent.

use std::os::unix::net::UnixDatagram;

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
