//! Several gateways on one keyring in a real PostgreSQL, started by the tests themselves
//! (initdb and pg_ctl in a temporary directory, on a free loopback port, as `nobody`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::common::{relay_config, start, swaks_to, write, Gpg, Sealpost, Server};
use super::upstream::{free_port, wait_for, ScriptedUpstream};

const LONG: Duration = Duration::from_secs(60);
const NOBODY: &str = "65534";

/// The directory of `initdb` and `pg_ctl`: on the PATH, or Debian's versioned one.
fn pg_bin() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !found.is_empty() {
            // Often a link into Debian's versioned directory, where pg_ctl sits too.
            let real = std::fs::canonicalize(&found).unwrap_or_else(|_| PathBuf::from(&found));
            if let Some(dir) = real.parent() {
                return dir.to_path_buf();
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (deploy/dev.sh test)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

/// `cmd ARGS` as `nobody` (PostgreSQL refuses to run as root).
fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ])
    .arg(program);
    c
}

/// A private PostgreSQL cluster, stopped when dropped, and when the test process ends
/// without dropping it (the shared one lives in a static).
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    /// Server settings beyond the port and address (`-c name=value …`).
    settings: String,
    /// A shell waiting on a pipe only this process writes to: when the process ends, the
    /// pipe closes and the shell stops the cluster.
    _reaper: std::sync::Mutex<std::process::Child>,
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_with(|_| String::new())
    }

    /// A cluster that offers TLS only, with `cert_pem` and its `key_pem`: plain TCP
    /// connections are refused by pg_hba.conf, so whatever connects speaks TLS.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        Postgres::start_with(|dir| {
            use std::os::unix::fs::PermissionsExt;
            let cert = write(dir, "server.crt", cert_pem.as_bytes());
            let key = write(dir, "server.key", key_pem.as_bytes());
            // PostgreSQL refuses a key file others can read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            let hba = write(
                dir,
                "pg_hba.conf",
                b"local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            );
            for f in [&cert, &key, &hba] {
                let status = Command::new("chown")
                    .arg(format!("{NOBODY}:{NOBODY}"))
                    .arg(f)
                    .status()
                    .expect("chown");
                assert!(status.success());
            }
            format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c hba_file={}",
                cert.display(),
                key.display(),
                hba.display()
            )
        })
    }

    /// A cluster whose settings `configure` returns, given its directory to put files in.
    fn start_with(configure: impl FnOnce(&Path) -> String) -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("chown")
            .arg(format!("{NOBODY}:{NOBODY}"))
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
        let bin = pg_bin();
        let data = dir.path().join("data");
        let out = as_nobody(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "sealpost", "--auth=trust", "-E", "UTF8"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {out:?}");
        let settings = configure(dir.path());
        let reaper = Command::new("sh")
            .arg("-c")
            .arg(r#"read -r _ignored; setpriv --reuid="$1" --regid="$1" --clear-groups "$2" -D "$3" -m fast -w stop"#)
            .arg("sh")
            .arg(NOBODY)
            .arg(bin.join("pg_ctl"))
            .arg(&data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh");
        let pg = Postgres {
            port: free_port(),
            dir,
            bin,
            settings,
            _reaper: std::sync::Mutex::new(reaper),
        };
        pg.ctl_start();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let out = as_nobody(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    pub fn ctl_stop(&self) {
        let _ = as_nobody(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }

    /// Runs SQL on `db` through psql.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let psql = Some(self.bin.join("psql"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let out = Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "sealpost",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new, empty database, and its URL.
    pub fn database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://sealpost@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.ctl_stop();
    }
}

/// One cluster for the tests that do not stop it.
fn shared() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(Postgres::start)
}

/// A gateway with its own data directory on the keyring at `url`, with the passphrase
/// every gateway of that keyring shares.
fn gateway() -> Sealpost {
    Sealpost::with_passphrase("one passphrase for the whole fleet")
}

fn keys(s: &Sealpost, url: &str, args: &[&str]) -> std::process::Output {
    let mut c = s.command();
    c.env("SEALPOST_KEYRING_URL", url).args(args);
    c.output().expect("sealpost keys")
}

fn keys_ok(s: &Sealpost, url: &str, args: &[&str]) -> String {
    let out = keys(s, url, args);
    assert!(
        out.status.success(),
        "sealpost {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `serve` with `[keyring] url` in its configuration, relaying to `upstream`.
fn serve(s: &Sealpost, url: &str, upstream: &str) -> Server {
    let config = relay_config(upstream, &format!("[keyring]\nurl = \"{url}\"\n"));
    start(s.serve_command(&config))
}

fn send(port: u16, to: &str, body: &str) -> (bool, String) {
    swaks_to(port, "alice@example.org", to, &["--body", body])
}

/// A key imported through one process is used by every gateway for its next message, and
/// one removed stops being used everywhere within a second.
#[test]
fn two_gateways_share_one_keyring() {
    let pg = shared();
    let url = pg.database("fleet_one");
    let a = gateway();
    let b = gateway();
    keys_ok(&a, &url, &["keys", "generate", "alice@example.org"]);
    let up = ScriptedUpstream::start();
    let ga = serve(&a, &url, &up.address());
    let gb = serve(&b, &url, &up.address());

    let gpg = Gpg::new();
    gpg.generate("<bob@example.net>", "default", "default", "never");
    let bob = gpg.ok(&["--armor", "--export", "bob@example.net"]);
    let file = write(a.dir.path(), "bob.asc", &bob);
    // Imported by a third process (the admin's CLI), with both gateways running.
    let admin = gateway();
    keys_ok(
        &admin,
        &url,
        &["keys", "import", file.to_str().expect("path")],
    );

    // Bob checks Alice's signature with her certificate.
    gpg.ok_with_input(
        &["--import"],
        keys_ok(&a, &url, &["keys", "export", "alice@example.org"]).as_bytes(),
    );
    let (ok, t) = send(gb.port(), "bob@example.net", "to bob through b");
    assert!(ok, "{t}");
    let got = up.wait_received(1, LONG);
    let text = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(text.contains("BEGIN PGP MESSAGE"), "not encrypted: {text}");
    let plain = gpg.ok_with_input(&["--decrypt"], &got[0].data);
    assert!(String::from_utf8_lossy(&plain).contains("to bob through b"));
    // Alice's secret key, made through the CLI, signs on gateway a.
    let (ok, t) = send(ga.port(), "bob@example.net", "to bob through a");
    assert!(ok, "{t}");
    let got = up.wait_received(2, LONG);
    assert!(String::from_utf8_lossy(&got[1].data).contains("BEGIN PGP MESSAGE"));

    let fpr = gpg.fingerprint("bob@example.net");
    keys_ok(&admin, &url, &["keys", "remove", &fpr]);
    std::thread::sleep(Duration::from_secs(1));
    for (gw, n) in [(&ga, 3), (&gb, 4)] {
        let (ok, t) = send(gw.port(), "bob@example.net", "after the removal");
        assert!(ok, "{t}");
        let got = up.wait_received(n, LONG);
        let text = String::from_utf8_lossy(&got[n - 1].data).into_owned();
        assert!(
            !text.contains("BEGIN PGP MESSAGE"),
            "a removed key is still used: {text}"
        );
    }
}

/// Two processes importing two different updates of one certificate at the same moment:
/// both updates are kept, round after round. Each update carries one new user ID and no
/// other's, so a lost update loses a user ID. Both processes have the keyring open (their
/// connections are seen by the server) before either gets its input on stdin, so their
/// imports start together.
#[test]
fn concurrent_imports_of_one_certificate_merge() {
    use std::io::Write;
    const ROUNDS: usize = 12;
    let pg = shared();
    let url = pg.database("fleet_merge");
    let s = gateway();
    let gpg = Gpg::new();
    gpg.generate("<carol@example.net>", "default", "default", "never");
    let fpr = gpg.fingerprint("carol@example.net");
    let base = write(
        s.dir.path(),
        "base.asc",
        &gpg.ok(&["--armor", "--export", &fpr]),
    );
    keys_ok(&s, &url, &["keys", "import", base.to_str().expect("path")]);
    let connected = || {
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = 'fleet_merge' AND application_name = 'sealpost'",
        )
        .trim()
        .parse::<usize>()
        .expect("a count")
    };
    let mut expected = vec!["carol@example.net".to_string()];
    for round in 0..ROUNDS {
        // One update per side: the certificate with only its own new user ID.
        let updates: Vec<(String, Vec<u8>)> = ["a", "b"]
            .iter()
            .map(|side| {
                let email = format!("carol.{round}.{side}@example.net");
                gpg.ok(&["--quick-add-uid", &fpr, &format!("<{email}>")]);
                let update = gpg.ok(&[
                    "--armor",
                    "--export-filter",
                    &format!("keep-uid=mbox = {email}"),
                    "--export",
                    &fpr,
                ]);
                assert!(!update.is_empty());
                (email, update)
            })
            .collect();
        let mut children: Vec<_> = updates
            .iter()
            .map(|_| {
                let mut c = s.command();
                c.env("SEALPOST_KEYRING_URL", &url)
                    .args(["keys", "import", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                c.spawn().expect("spawn import")
            })
            .collect();
        wait_for(LONG, "both importers connected", || {
            (connected() == 2).then_some(())
        });
        // The barrier: both have opened the keyring and wait for their input.
        let mut stdins: Vec<_> = children
            .iter_mut()
            .map(|c| c.stdin.take().expect("stdin"))
            .collect();
        for (stdin, (_, update)) in stdins.iter_mut().zip(&updates) {
            stdin.write_all(update).expect("write update");
        }
        drop(stdins);
        for c in children {
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        expected.extend(updates.into_iter().map(|(email, _)| email));
        let shown = keys_ok(&s, &url, &["keys", "show", &fpr]);
        for email in &expected {
            assert!(
                shown.contains(&format!("<{email}>")),
                "round {round}: {email} was lost: {shown}"
            );
        }
        wait_for(LONG, "both importers gone", || {
            (connected() == 0).then_some(())
        });
    }
}

/// With the database down, a client is told to try again (451) and nothing leaves in
/// plaintext for a `require` recipient; once it is back, the next message is encrypted,
/// with no restart.
#[test]
fn a_database_outage_is_temporary_and_never_plaintext() {
    let pg = Postgres::start();
    let url = pg.database("fleet_down");
    let s = gateway();
    let gpg = Gpg::new();
    gpg.generate("<dave@example.net>", "default", "default", "never");
    let file = write(
        s.dir.path(),
        "dave.asc",
        &gpg.ok(&["--armor", "--export", "dave@example.net"]),
    );
    keys_ok(&s, &url, &["keys", "import", file.to_str().expect("path")]);
    let up = ScriptedUpstream::start();
    let config = relay_config(
        &up.address(),
        &format!("[keyring]\nurl = \"{url}\"\n\n[policy]\nmode = \"require\"\n"),
    );
    let gw = start(s.serve_command(&config));

    pg.ctl_stop();
    let (ok, t) = send(gw.port(), "erin@example.net", "while the database is down");
    assert!(!ok, "{t}");
    assert!(t.contains("451 4.3.0"), "{t}");
    assert!(up.received().is_empty());

    pg.ctl_start();
    let t = wait_for(LONG, "the gateway back on the database", || {
        let (ok, t) = send(gw.port(), "dave@example.net", "after the outage");
        ok.then_some(t)
    });
    let got = up.wait_received(1, LONG);
    assert!(
        String::from_utf8_lossy(&got[0].data).contains("BEGIN PGP MESSAGE"),
        "{t}"
    );
}

/// Each bad setup is a one-line error naming the URL without its password, and writes
/// nothing.
#[test]
fn bad_keyring_databases_are_refused_in_one_line() {
    let pg = shared();
    let s = gateway();
    let port = pg.port;

    let first_line = |out: &std::process::Output| {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("hunter2"), "the password is shown: {err}");
        err
    };
    let err = first_line(&keys(
        &s,
        "mysql://u:hunter2@127.0.0.1/x",
        &["keys", "list"],
    ));
    assert!(err.contains("postgres://"), "{err}");
    let unknown_user = format!("postgres://nobody_here:hunter2@127.0.0.1:{port}/postgres");
    let err = first_line(&keys(&s, &unknown_user, &["keys", "list"]));
    assert!(err.contains("nobody_here"), "{err}");

    let other = pg.database("someone_elses");
    pg.sql("someone_elses", "CREATE TABLE invoices (id int)");
    let err = first_line(&keys(&s, &other, &["keys", "list"]));
    assert!(err.contains("another application"), "{err}");
    assert_eq!(
        pg.sql(
            "someone_elses",
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        .trim(),
        "1"
    );

    let newer = pg.database("from_the_future");
    keys_ok(&s, &newer, &["keys", "list"]);
    pg.sql("from_the_future", "INSERT INTO sealpost_schema VALUES (99)");
    let err = first_line(&keys(&s, &newer, &["keys", "list"]));
    assert!(err.contains("newer"), "{err}");

    // A second passphrase on a keyring that has one.
    let fleet = pg.database("two_passphrases");
    keys_ok(&s, &fleet, &["keys", "generate", "frank@example.org"]);
    let other_pass = Sealpost::with_passphrase("another passphrase");
    let err = first_line(&keys(&other_pass, &fleet, &["keys", "list"]));
    assert!(err.contains("is wrong"), "{err}");
    // No secret key without the passphrase in the shared database.
    let none = Sealpost::new();
    let err = first_line(&keys(
        &none,
        &fleet,
        &["keys", "generate", "gina@example.org"],
    ));
    assert!(err.contains("SEALPOST_PASSPHRASE_FILE"), "{err}");
}

/// `keyring copy` moves a data directory's keyring into the database, secrets still
/// sealed; a gateway on the database then decrypts with the copied secret key, and a
/// second run copies nothing new.
#[test]
fn keyring_copy_moves_a_sled_keyring_into_the_database() {
    let pg = shared();
    let url = pg.database("fleet_copy");
    let old = gateway();
    old.generate("henry@example.org", &[]);
    let gpg = Gpg::new();
    gpg.generate("<ida@example.net>", "default", "default", "never");
    let ida = write(
        old.dir.path(),
        "ida.asc",
        &gpg.ok(&["--armor", "--export", "ida@example.net"]),
    );
    old.ok(&["keys", "import", ida.to_str().expect("path")]);
    let from = old.data_dir();
    let args = [
        "keyring",
        "copy",
        "--from",
        from.to_str().expect("path"),
        "--to",
        url.as_str(),
    ];
    let out = old.ok(&args);
    assert!(
        out.contains("2 new, 0 updated, 0 unchanged; 1 with a secret key"),
        "{out}"
    );
    let out = old.ok(&args);
    assert!(out.contains("0 new, 0 updated, 2 unchanged"), "{out}");

    // A new gateway with nothing in its data directory decrypts mail for Henry.
    let fresh = gateway();
    let maildir = fresh.dir.path().join("Maildir");
    let config = format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\ndeliver = \"maildir:{}\"\nlocal_domains = [\"example.org\"]\n\n\
         [keyring]\nurl = \"{url}\"\n",
        maildir.display()
    );
    let gw = start(fresh.serve_command(&config));
    gpg.ok_with_input(
        &["--import"],
        keys_ok(&fresh, &url, &["keys", "export", "henry@example.org"]).as_bytes(),
    );
    let armored = gpg.ok_with_input(
        &["--armor", "--encrypt", "-r", "henry@example.org"],
        b"copied and still secret\n",
    );
    let body = write(fresh.dir.path(), "m.asc", &armored);
    let (ok, t) = swaks_to(
        gw.port(),
        "ida@example.net",
        "henry@example.org",
        &["--body", &format!("@{}", body.display())],
    );
    assert!(ok, "{t}");
    let delivered = wait_for(LONG, "a delivered message", || {
        let files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.first().cloned()
    });
    let text = std::fs::read_to_string(delivered).expect("read delivered");
    assert!(text.contains("copied and still secret"), "{text}");
    assert!(text.contains("encryption=decrypted"), "{text}");
}

/// The deployment files for several gateways say what the README says: one keyring in
/// PostgreSQL from a secret, a volume (spool and vault) per gateway, and, in Kubernetes,
/// three replicas, a disruption budget and readiness on `/readyz`, which the container's
/// configuration serves. (No container runtime here: the files are checked, not run.)
#[test]
fn the_deployment_files_for_several_gateways_agree() {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let read = |p: &str| std::fs::read_to_string(deploy.join(p)).expect("deploy file");
    let compose = read("compose.ha.yaml");
    assert!(compose.contains("image: docker.io/library/postgres:"));
    for volume in [
        "gateway-a-data:/var/lib/sealpost",
        "gateway-b-data:/var/lib/sealpost",
    ] {
        assert!(compose.contains(volume), "{volume}");
    }
    assert!(compose.contains("SEALPOST_KEYRING_URL"));
    assert!(compose.contains("SEALPOST_PASSPHRASE_FILE"));

    let kube = read("kubernetes/sealpost-ha.yaml");
    for needed in [
        "replicas: 3",
        "kind: PodDisruptionBudget",
        "minAvailable: 2",
        "name: SEALPOST_KEYRING_URL",
        "secretKeyRef: { name: sealpost-keyring, key: url }",
        "volumeClaimTemplates:",
        "httpGet: { path: /readyz, port: 9925 }",
        "runAsNonRoot: true",
        // TLS to the database, checked against its CA.
        "sslmode=require&sslrootcert=/etc/sealpost/keyring-ca/ca.crt",
        "mountPath: /etc/sealpost/keyring-ca",
    ] {
        assert!(kube.contains(needed), "sealpost-ha.yaml lacks {needed:?}");
    }
    let config = read("container/sealpost.toml");
    assert!(
        config.contains("[admin]") && config.contains("http = \"0.0.0.0:9925\""),
        "the container's configuration does not serve /readyz on 9925"
    );
}

/// TLS to the database through rustls: a PostgreSQL that accepts only TLS, with a
/// certificate from a test CA. With `sslmode=require` (or `verify-full`) and that CA as
/// `sslrootcert`, the CLI and a gateway work over TLS; with another CA, with the
/// system's roots, or with a certificate for another name, each is refused in one line,
/// and nothing falls back to plain TCP.
#[test]
fn the_keyring_database_is_reached_over_verified_tls() {
    let issued = super::common::issue("sealpost test database CA", &["127.0.0.1"]);
    let (ca, cert, key) = (issued.ca_pem, issued.cert_pem, issued.key_pem);
    let pg = Postgres::start_tls(&cert, &key);
    let s = gateway();
    let ca_file = write(s.dir.path(), "db-ca.pem", ca.as_bytes());
    let other_ca = super::common::issue("another CA", &["127.0.0.1"]).ca_pem;
    let other_ca_file = write(s.dir.path(), "other-ca.pem", other_ca.as_bytes());
    pg.sql("postgres", "CREATE DATABASE fleet_tls");
    let base = format!(
        "postgres://sealpost:hunter2@127.0.0.1:{}/fleet_tls",
        pg.port
    );
    let url = format!("{base}?sslmode=require&sslrootcert={}", ca_file.display());

    keys_ok(&s, &url, &["keys", "generate", "tls@example.org"]);
    let full = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    assert!(keys_ok(&s, &full, &["keys", "list"]).contains("tls@example.org"));

    let up = ScriptedUpstream::start();
    let gw = serve(&s, &url, &up.address());
    // The gateway's own connection, as the server sees it.
    let over_tls = pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'sealpost' AND ssl",
    );
    assert_eq!(
        over_tls.trim(),
        "1",
        "the gateway is not connected over TLS"
    );
    let (ok, t) = send(gw.port(), "someone@example.net", "over a TLS keyring");
    assert!(ok, "{t}");
    drop(gw);

    let refused = |url: &str, what: &str| {
        let out = keys(&s, url, &["keys", "list"]);
        assert!(!out.status.success(), "{what}: accepted");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(
            !err.contains("hunter2"),
            "{what}: the password is shown: {err}"
        );
        assert!(err.contains("sealpost:***@"), "{what}: {err}");
        err
    };
    let err = refused(
        &format!(
            "{base}?sslmode=require&sslrootcert={}",
            other_ca_file.display()
        ),
        "another CA",
    );
    assert!(err.contains("certificate"), "{err}");
    let err = refused(&format!("{base}?sslmode=require"), "the system's roots");
    assert!(err.contains("certificate"), "{err}");
    // The certificate names 127.0.0.1, not localhost.
    let err = refused(
        &format!(
            "postgres://sealpost:hunter2@localhost:{}/fleet_tls?sslmode=require&sslrootcert={}",
            pg.port,
            ca_file.display()
        ),
        "another name",
    );
    assert!(err.contains("certificate"), "{err}");
    // Plain TCP is what the server refuses; the gateway does not fall back to it.
    let err = refused(&format!("{base}?sslmode=disable"), "no TLS");
    assert!(err.contains("pg_hba.conf"), "{err}");
}

/// A key revoked through one process stops being used by every gateway within a second,
/// even by gateways that have just used it (their caches warm): a `require` recipient
/// whose key is revoked is refused at RCPT, and an `opportunistic` one gets a copy that
/// is signed, not encrypted. One key is revoked by its revocation certificate, the other
/// by an update of the certificate that carries the revocation.
#[test]
fn a_key_revoked_through_one_process_is_dropped_by_every_gateway_within_a_second() {
    let pg = shared();
    let url = pg.database("fleet_revoke");
    let a = gateway();
    let b = gateway();
    let admin = gateway();
    keys_ok(&admin, &url, &["keys", "generate", "alice@example.org"]);
    let gpg = Gpg::new();
    gpg.generate("<rita@strict.example>", "default", "default", "never");
    gpg.generate("<sam@example.net>", "default", "default", "never");
    let both = gpg.ok(&[
        "--armor",
        "--export",
        "rita@strict.example",
        "sam@example.net",
    ]);
    let file = write(admin.dir.path(), "both.asc", &both);
    keys_ok(
        &admin,
        &url,
        &["keys", "import", file.to_str().expect("path")],
    );

    let up = ScriptedUpstream::start();
    let policy = "[policy]\nmode = \"opportunistic\"\n\n\
                  [policy.address.\"rita@strict.example\"]\nmode = \"require\"\n";
    let config = relay_config(
        &up.address(),
        &format!("[keyring]\nurl = \"{url}\"\n\n{policy}"),
    );
    let ga = start(a.serve_command(&config));
    let gb = start(b.serve_command(&config));

    // Both gateways use both keys, and so hold them in their caches.
    let mut n = 0;
    for gw in [&ga, &gb] {
        for to in ["rita@strict.example", "sam@example.net"] {
            let (ok, t) = send(gw.port(), to, "while the keys are good");
            assert!(ok, "{t}");
            n += 1;
            let got = up.wait_received(n, LONG);
            let text = String::from_utf8_lossy(&got[n - 1].data).into_owned();
            assert!(text.contains("BEGIN PGP MESSAGE"), "not encrypted: {text}");
        }
    }

    let rita = gpg.fingerprint("rita@strict.example");
    let revocation = write(admin.dir.path(), "rita.rev", &gpg.revocation_cert(&rita));
    let sam = gpg.fingerprint("sam@example.net");
    gpg.ok_with_input(&["--import"], &gpg.revocation_cert(&sam));
    let revoked_sam = write(
        admin.dir.path(),
        "sam-revoked.asc",
        &gpg.ok(&["--armor", "--export", &sam]),
    );
    for f in [&revocation, &revoked_sam] {
        let out = keys_ok(&admin, &url, &["keys", "import", f.to_str().expect("path")]);
        assert!(out.starts_with("updated"), "{out}");
    }
    std::thread::sleep(Duration::from_secs(1));

    for gw in [&ga, &gb] {
        let (ok, t) = send(gw.port(), "rita@strict.example", "after the revocation");
        assert!(!ok, "a revoked key was used for a `require` recipient: {t}");
        assert!(
            t.contains("550 5.7.1 <rita@strict.example>: no valid OpenPGP key"),
            "{t}"
        );
        let (ok, t) = send(gw.port(), "sam@example.net", "after the revocation");
        assert!(ok, "{t}");
        n += 1;
        let got = up.wait_received(n, LONG);
        let text = String::from_utf8_lossy(&got[n - 1].data).into_owned();
        assert!(
            !text.contains("BEGIN PGP MESSAGE"),
            "a revoked key is still used: {text}"
        );
        assert!(text.contains("multipart/signed"), "not signed: {text}");
        assert!(text.contains("after the revocation"), "{text}");
    }
}

/// `keyring passphrase change` on a shared keyring, with the gateways running: every
/// secret key in the database moves to the new passphrase in one transaction, the old
/// passphrase no longer opens it, and a gateway still running with the old one refuses
/// what needs a secret key (451, /readyz failing, saying why) instead of sending mail
/// unsigned. Run again on that gateway's data directory with it stopped, it moves the
/// gateway's own vault; started with the new passphrase, the gateway signs again.
#[test]
fn the_passphrase_of_a_shared_keyring_changes_with_the_gateways_running() {
    let pg = shared();
    let url = pg.database("fleet_passphrase");
    let admin = gateway();
    let mut b = gateway();
    keys_ok(&admin, &url, &["keys", "generate", "alice@example.org"]);
    keys_ok(&admin, &url, &["keys", "generate", "anna@example.org"]);
    let gpg = Gpg::new();
    gpg.generate("<bob@example.net>", "default", "default", "never");
    let bob = write(
        admin.dir.path(),
        "bob.asc",
        &gpg.ok(&["--armor", "--export", "bob@example.net"]),
    );
    keys_ok(
        &admin,
        &url,
        &["keys", "import", bob.to_str().expect("path")],
    );
    gpg.ok_with_input(
        &["--import"],
        keys_ok(&admin, &url, &["keys", "export", "alice@example.org"]).as_bytes(),
    );

    let up = ScriptedUpstream::start();
    let http = free_port();
    let config = relay_config(
        &up.address(),
        &format!("[keyring]\nurl = \"{url}\"\n\n[admin]\nhttp = \"127.0.0.1:{http}\"\n"),
    );
    let mut gb = start(b.serve_command(&config));
    let signed_and_encrypted = |n: usize| {
        let got = up.wait_received(n, LONG);
        let data = &got[n - 1].data;
        assert!(String::from_utf8_lossy(data).contains("BEGIN PGP MESSAGE"));
        let out = gpg.run_with_input(&["--decrypt"], data);
        assert!(out.status.success(), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("Good signature"), "not signed: {said}");
    };
    let (ok, t) = send(gb.port(), "bob@example.net", "before the change");
    assert!(ok, "{t}");
    signed_and_encrypted(1);
    assert_eq!(super::ops::get(http, "/readyz").0, 200);

    let old = admin.passphrase_file.clone().expect("passphrase file");
    let new = write(
        admin.dir.path(),
        "new-passphrase",
        b"the fleet's new passphrase\n",
    );
    let wrong = write(
        admin.dir.path(),
        "wrong-passphrase",
        b"not the passphrase\n",
    );
    let change = |s: &Sealpost, old: &Path| {
        keys(
            s,
            &url,
            &[
                "keyring",
                "passphrase",
                "change",
                "--old-passphrase-file",
                old.to_str().expect("path"),
                "--new-passphrase-file",
                new.to_str().expect("path"),
            ],
        )
    };
    // A wrong old passphrase changes nothing.
    let out = change(&admin, &wrong);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is wrong"), "{err}");
    keys_ok(
        &admin,
        &url,
        &[
            "keys",
            "export",
            "--secret",
            "--unprotected",
            "alice@example.org",
        ],
    );

    let out = change(&admin, &old);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("sealed 2 secret key(s)") && said.contains("in one transaction"),
        "{said}"
    );
    // Every secret key opens with the new passphrase, none with the old.
    let with_new = {
        let mut s = gateway();
        s.passphrase_file = Some(new.clone());
        s
    };
    for who in ["alice@example.org", "anna@example.org"] {
        let key = keys_ok(
            &with_new,
            &url,
            &["keys", "export", "--secret", "--unprotected", who],
        );
        assert!(key.contains("PRIVATE KEY BLOCK"), "{key}");
    }
    let err = String::from_utf8_lossy(&keys(&admin, &url, &["keys", "list"]).stderr).into_owned();
    assert!(err.contains("is wrong"), "{err}");

    // The gateway still on the old passphrase: no unsigned mail, a reason in /readyz.
    std::thread::sleep(Duration::from_secs(1));
    let (ok, t) = send(gb.port(), "bob@example.net", "after the change");
    assert!(!ok, "{t}");
    assert!(t.contains("451 4.3.0"), "{t}");
    assert_eq!(up.received().len(), 1);
    let (status, body) = super::ops::get(http, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("passphrase in the database was changed"),
        "{body}"
    );

    // Restarted on the new passphrase: its own vault is still under the old one, until
    // the command moves it, with the gateway stopped.
    gb.terminate();
    b.passphrase_file = Some(new.clone());
    let out = b
        .command()
        .arg("serve")
        .arg("--config")
        .arg(b.dir.path().join("sealpost.toml"))
        .output()
        .expect("serve");
    assert!(
        !out.status.success(),
        "started on a vault under the old passphrase"
    );
    let out = change(&b, &old);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("under the new passphrase already"), "{said}");
    assert!(said.contains("spooled cop"), "{said}");
    let gb = start(b.serve_command(&config));
    let (ok, t) = send(gb.port(), "bob@example.net", "after the restart");
    assert!(ok, "{t}");
    signed_and_encrypted(2);
    assert_eq!(super::ops::get(http, "/readyz").0, 200);

    // `set` on a shared keyring that has no passphrase yet, once.
    let unset = pg.database("fleet_passphrase_set");
    let none = Sealpost::new();
    let set = |file: &Path| {
        keys(
            &none,
            &unset,
            &[
                "keyring",
                "passphrase",
                "set",
                "--new-passphrase-file",
                file.to_str().expect("path"),
            ],
        )
    };
    keys_ok(&none, &unset, &["keys", "list"]);
    let out = set(&new);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sealed 0 secret key(s)"));
    let out = set(&new);
    assert!(String::from_utf8_lossy(&out.stdout).contains("under the new passphrase already"));
    let out = set(&wrong);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has a passphrase already"));
    keys_ok(&with_new, &unset, &["keys", "generate", "ada@example.org"]);
    // A gateway without the passphrase on it is not ready, and says why.
    let http = free_port();
    let config = relay_config(
        &up.address(),
        &format!("[keyring]\nurl = \"{unset}\"\n\n[admin]\nhttp = \"127.0.0.1:{http}\"\n"),
    );
    let _gw = start(none.serve_command(&config));
    let (status, body) = super::ops::get(http, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("started without one"), "{body}");
}
