//! A private PostgreSQL for the benchmarks, started as the integration tests start theirs:
//! `initdb` and `pg_ctl` in a temporary directory, on a free loopback port, as `nobody`
//! when run as root (PostgreSQL refuses to run as root). Shared by the relay bench and the
//! keyring's lookup bench (`#[path]`), so it depends on std and tempfile only.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NOBODY: &str = "65534";

/// A running cluster, stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// Starts a cluster with one database, `bench`; `None`, with the reason printed,
    /// where PostgreSQL is not installed (Debian's `postgresql`, `deploy/dev.sh`).
    pub fn start() -> Option<Postgres> {
        let Some(bin) = pg_bin() else {
            eprintln!(
                "skipping the PostgreSQL keyring: initdb was not found on the PATH or under \
                 /usr/lib/postgresql (install the postgresql package, see deploy/dev.sh)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let root = is_root();
        if root {
            let ok = Command::new("chown")
                .arg(format!("{NOBODY}:{NOBODY}"))
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the PostgreSQL directory");
        }
        let data = dir.path().join("data");
        let out = run_as(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args(["-U", "sealpost", "--auth=trust", "-E", "UTF8"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {out:?}");
        let port = free_port();
        // Durable commits as in production (fsync, synchronous_commit stay on).
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
            dir.path().display()
        );
        let out = run_as(&bin.join("pg_ctl"), root)
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start: {out:?}");
        let pg = Postgres { dir, bin, port };
        let psql = Some(pg.bin.join("psql"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let ok = Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "sealpost"])
            .args(["-d", "postgres", "-c", "CREATE DATABASE bench"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "CREATE DATABASE bench");
        Some(pg)
    }

    /// The URL of the `bench` database.
    pub fn url(&self) -> String {
        format!("postgres://sealpost@127.0.0.1:{}/bench", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = run_as(&self.bin.join("pg_ctl"), is_root())
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}

/// The directory of `initdb` and `pg_ctl`: next to `initdb` on the PATH (often a link
/// into Debian's versioned directory), or the newest under /usr/lib/postgresql.
fn pg_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("initdb"))
            .find(|p| p.exists())
    });
    if let Some(found) = on_path {
        let real = std::fs::canonicalize(&found).unwrap_or(found);
        return real.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn run_as(program: &Path, root: bool) -> Command {
    if !root {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ])
    .arg(program);
    c
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
