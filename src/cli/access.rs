//! Whether another account (the one `serve` runs as) can read or write a path, judged
//! from the file modes of the path and of every directory above it, the way the kernel
//! judges them. Run as root, `check-config` can read everything itself; this tells the
//! admin what the service user will meet. POSIX ACLs and capabilities are not read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An account from `/etc/passwd`, with its groups from `/etc/group`.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Account {
    /// `NAME`, `UID`, or `UID:GID` (an account the password file need not list, as a
    /// container's user).
    ///
    /// # Errors
    /// A name the password file does not list, or a malformed number.
    pub fn lookup(spec: &str) -> Result<Account, String> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        Account::from_files(spec, &passwd, &group)
    }

    fn from_files(spec: &str, passwd: &str, group: &str) -> Result<Account, String> {
        let entries: Vec<Vec<&str>> = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4)
            .collect();
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("{spec:?} is not a user name, a uid or UID:GID"))
        };
        let (name, uid, primary) = if let Some((u, g)) = spec.split_once(':') {
            let uid = number(u)?;
            let name = entries
                .iter()
                .find(|f| f[2] == u)
                .map_or_else(|| format!("uid {uid}"), |f| f[0].to_string());
            (name, uid, number(g)?)
        } else {
            let found = entries
                .iter()
                .find(|f| f[0] == spec || (spec.parse::<u32>().is_ok() && f[2] == spec));
            match found {
                Some(f) => (f[0].to_string(), number(f[2])?, number(f[3])?),
                None => {
                    return Err(format!(
                        "no user {spec:?} in /etc/passwd; give the account `serve` runs as, \
                         or UID:GID"
                    ))
                }
            }
        };
        let mut gids = vec![primary];
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(gid) = f[2].parse::<u32>() {
                    gids.push(gid);
                }
            }
        }
        Ok(Account { name, uid, gids })
    }
}

/// What the account must be able to do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    /// Write to a file or socket, or create files in a directory.
    Write,
}

/// `Ok` when `account` can do `need` on `path`; else why not, naming the file or the
/// directory in the way with its mode and owner. A path that does not exist is reported
/// as such.
pub fn check(account: &Account, path: &Path, need: Need) -> Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // Every directory above must be searchable.
    let parents: Vec<PathBuf> = real.ancestors().skip(1).map(Path::to_path_buf).collect();
    for dir in parents.iter().rev() {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allowed(account, &meta, 0o1) {
            return Err(format!(
                "{} cannot reach {}: the directory {} is {}",
                account.name,
                path.display(),
                dir.display(),
                describe(&meta)
            ));
        }
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", path.display()))?;
    let (bits, verb) = match (need, meta.is_dir()) {
        (Need::Read, false) => (0o4, "read"),
        (Need::Read, true) => (0o5, "list"),
        (Need::Write, false) => (0o2, "write to"),
        (Need::Write, true) => (0o3, "create files in"),
    };
    if allowed(account, &meta, bits) {
        Ok(())
    } else {
        Err(format!(
            "{} cannot {verb} {}: it is {}",
            account.name,
            path.display(),
            describe(&meta)
        ))
    }
}

/// The kernel's rule: the owner's bits for the owner, else the group's for a member,
/// else the others'. Root may do anything but run what nobody may execute, which does
/// not arise here (directories are searched, never run).
fn allowed(account: &Account, meta: &std::fs::Metadata, bits: u32) -> bool {
    if account.uid == 0 {
        return true;
    }
    let mode = meta.mode();
    let class = if meta.uid() == account.uid {
        (mode >> 6) & 0o7
    } else if account.gids.contains(&meta.gid()) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    class & bits == bits
}

/// `mode 0640, owner root:sealpost`.
fn describe(meta: &std::fs::Metadata) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let name = |text: &str, id: u32| {
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[2] == id.to_string())
            .map_or_else(|| id.to_string(), |f| f[0].to_string())
    };
    format!(
        "mode {:04o}, owner {}:{}",
        meta.mode() & 0o7777,
        name(&passwd, meta.uid()),
        name(&group, meta.gid())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          sealpost:x:998:997::/var/lib/sealpost:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nsealpost:x:997:\ndovecot:x:120:sealpost,other\n";

    #[test]
    fn accounts_by_name_uid_or_pair() {
        let a = Account::from_files("sealpost", PASSWD, GROUP).unwrap();
        assert_eq!((a.uid, a.gids.clone()), (998, vec![997, 120]));
        assert_eq!(
            Account::from_files("998", PASSWD, GROUP).unwrap().name,
            "sealpost"
        );
        let c = Account::from_files("10025:10025", PASSWD, GROUP).unwrap();
        assert_eq!(
            (c.name.as_str(), c.uid, c.gids),
            ("uid 10025", 10025, vec![10025])
        );
        let err = Account::from_files("nosuch", PASSWD, GROUP).unwrap_err();
        assert!(err.contains("no user \"nosuch\""), "{err}");
    }

    #[test]
    fn modes_are_judged_as_the_kernel_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, "x").unwrap();
        let me = std::fs::metadata(&file).unwrap();
        let stranger = Account {
            name: "stranger".into(),
            uid: me.uid().wrapping_add(12345),
            gids: vec![me.gid().wrapping_add(12345)],
        };
        let member = Account {
            name: "member".into(),
            uid: me.uid().wrapping_add(12345),
            gids: vec![me.gid()],
        };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(check(&member, &file, Need::Read).is_ok());
        let err = check(&stranger, &file, Need::Read).unwrap_err();
        assert!(
            err.contains("stranger cannot read") && err.contains("mode 0640"),
            "{err}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = check(&member, &file, Need::Read).unwrap_err();
        assert!(
            err.contains("cannot reach") && err.contains("mode 0700"),
            "{err}"
        );
        let err = check(&member, &dir.path().join("missing"), Need::Read).unwrap_err();
        assert!(err.contains("No such file"), "{err}");
    }
}
