//! Where secrets rest on disk: directories no one else can enter, and sled databases.

/// Creates `dir` (and missing parents) mode 0700 whatever the umask; an existing directory
/// is left as it is (`serve` warns when it is open to others).
///
/// # Errors
/// When a directory cannot be created.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates (or truncates) `path` for writing secrets: mode 0600 whatever the umask.
///
/// # Errors
/// When the file cannot be opened.
pub fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Opens a sled database. sled releases its lock from a background thread after the last
/// handle drops, so a store closed a moment ago may still be locked: this waits up to a
/// second before giving up.
///
/// # Errors
/// The last error from sled: a lock error (see [`is_lock_error`]) when another process
/// holds the database.
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let mut tries = 0;
    loop {
        match config.open() {
            Err(e) if is_lock_error(&e) && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Whether sled failed because another handle holds the database's lock.
pub fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock"))
}
