//! Local password checks (argon2) on a fixed set of threads that reuse their argon2
//! memory, so that work done before authentication is bounded however many clients try.
//!
//! One check of a `sealpost hash-password` hash fills 19 MiB. Run on tokio's blocking
//! pool, every concurrent AUTH took a thread and 19 MiB of its own (30 clients: 1.7 GB),
//! and glibc's per-thread arenas kept much of it after the checks ended. Here at most
//! [`MAX_THREADS`] checks run at once, process-wide; each thread allocates its blocks once
//! and reuses them, so the memory is the same after a thousand guesses as after one.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{oneshot, Semaphore};
use zeroize::Zeroizing;

/// At most this many threads check passwords, however many CPUs there are: each keeps
/// the argon2 memory of the largest hash it has checked (19 MiB for `hash-password`'s).
pub const MAX_THREADS: usize = 4;

/// Checked for a user name that is not configured, so that the answer takes as long as
/// for a real one and does not tell which names exist. The parameters are those of
/// `sealpost hash-password` (argon2's defaults); no password matches its output.
const DUMMY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2VhbHBvc3QtZHVtbXk$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Why a check gave no answer; the client gets a temporary failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("every password thread stayed busy for {0:?}")]
    Busy(Duration),
    #[error("the password threads are not running")]
    Stopped,
}

/// Why a configured hash cannot be checked.
#[derive(Debug, thiserror::Error)]
enum HashError {
    #[error("not a valid argon2 PHC string: {0}")]
    Phc(#[from] argon2::password_hash::Error),
    #[error("argon2: {0}")]
    Argon2(#[from] argon2::Error),
    #[error("the PHC string has no salt or no hash")]
    Incomplete,
}

/// Users and their PHC hashes, as in [`crate::smtp::config::AuthMode::Local`].
pub type Users = Arc<Vec<(String, String)>>;

struct Job {
    users: Users,
    user: String,
    /// Zeroed when the check is done with it.
    pass: Zeroizing<String>,
    answer: oneshot::Sender<bool>,
}

/// The threads, and a permit per thread: a check waits for a permit, so no more than
/// one job per thread is ever queued.
struct Pool {
    permits: Semaphore,
    jobs: mpsc::Sender<Job>,
}

/// Whether `pass` is `user`'s password. Waits at most `wait` for a free thread.
///
/// # Errors
/// [`Error::Busy`] when no thread became free in time, [`Error::Stopped`] when the threads
/// could not be started.
pub async fn check(users: &Users, user: &str, pass: &str, wait: Duration) -> Result<bool, Error> {
    let pool = pool();
    let permit = tokio::time::timeout(wait, pool.permits.acquire())
        .await
        .map_err(|_| Error::Busy(wait))?
        .map_err(|_| Error::Stopped)?;
    let (answer, answered) = oneshot::channel();
    let job = Job {
        users: users.clone(),
        user: user.to_string(),
        pass: Zeroizing::new(pass.to_string()),
        answer,
    };
    pool.jobs.send(job).map_err(|_| Error::Stopped)?;
    let ok = answered.await.map_err(|_| Error::Stopped)?;
    drop(permit);
    Ok(ok)
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let wanted = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for i in 0..wanted {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || work(&queue));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "cannot start a password thread"),
            }
        }
        // No thread, no permit: checks then fail at once instead of waiting forever.
        Pool {
            permits: Semaphore::new(started),
            jobs,
        }
    })
}

/// One password thread: takes jobs until the process ends, reusing `memory`.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        let ok = password_ok(&job.users, &job.user, &job.pass, &mut memory);
        // The client may have gone; nobody is left to tell then.
        let _ = job.answer.send(ok);
    }
}

/// Whether `pass` matches `user`'s PHC hash, computed in `memory` (grown when a hash
/// needs more, and kept for the next check). An unknown user costs one hash as well.
fn password_ok(
    users: &[(String, String)],
    user: &str,
    pass: &str,
    memory: &mut Vec<Block>,
) -> bool {
    let stored = users.iter().find(|(name, _)| name == user).map(|(_, h)| h);
    let hash = stored.map_or(DUMMY, String::as_str);
    match verify(hash, pass, memory) {
        Ok(matched) => matched && stored.is_some(),
        Err(e) => {
            if stored.is_some() {
                tracing::warn!(user, error = %e, "the configured password hash cannot be checked");
            } else {
                tracing::error!(error = %e, "the dummy password hash cannot be checked");
            }
            false
        }
    }
}

/// Computes the hash of `pass` with the algorithm, parameters and salt of `phc`, and
/// compares it with `phc`'s output in constant time.
fn verify(phc: &str, pass: &str, memory: &mut Vec<Block>) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(phc)?;
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(HashError::Incomplete);
    };
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out_buf = [0u8; Output::MAX_LENGTH];
    let out = out_buf
        .get_mut(..expected.len())
        .ok_or(HashError::Incomplete)?;
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        pass.as_bytes(),
        salt,
        out,
        &mut *memory,
    )?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(out)? == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};

    fn hash(password: &str, params: Params) -> String {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    #[test]
    fn passwords_are_checked_against_their_own_parameters() {
        let small = Params::new(64, 1, 2, Some(32)).unwrap();
        let users = vec![
            ("alice".to_string(), hash("secret", Params::default())),
            ("carol".to_string(), hash("other", small)),
            ("bob".into(), "garbage".into()),
        ];
        let mut memory = Vec::new();
        assert!(password_ok(&users, "alice", "secret", &mut memory));
        let default_blocks = memory.len();
        assert_eq!(default_blocks, Params::default().block_count());
        assert!(!password_ok(&users, "alice", "wrong", &mut memory));
        assert!(!password_ok(&users, "alice", "", &mut memory));
        // A hash with other parameters (and two lanes) in the same, larger memory.
        assert!(password_ok(&users, "carol", "other", &mut memory));
        assert!(!password_ok(&users, "carol", "secret", &mut memory));
        assert_eq!(memory.len(), default_blocks, "memory is reused, not grown");
        assert!(!password_ok(&users, "mallory", "", &mut memory));
        assert!(!password_ok(&users, "bob", "garbage", &mut memory));
        // A hash made by argon2's own verifier agrees.
        let phc = hash("secret", Params::default());
        let parsed = PasswordHash::new(&phc).unwrap();
        use argon2::password_hash::PasswordVerifier;
        assert!(Argon2::default()
            .verify_password(b"secret", &parsed)
            .is_ok());
        assert!(verify(&phc, "secret", &mut memory).unwrap());
    }

    #[test]
    fn the_dummy_hash_costs_a_full_check() {
        let mut memory = Vec::new();
        assert!(!verify(DUMMY, "", &mut memory).unwrap());
        assert_eq!(memory.len(), Params::default().block_count());
    }

    #[tokio::test]
    async fn concurrent_checks_each_get_their_own_answer() {
        let small = Params::new(64, 1, 1, Some(32)).unwrap();
        let users: Users = Arc::new(vec![("alice".into(), hash("secret", small))]);
        let checks: Vec<_> = (0..32)
            .map(|i| {
                let users = users.clone();
                tokio::spawn(async move {
                    let pass = if i % 2 == 0 { "secret" } else { "wrong" };
                    check(&users, "alice", pass, Duration::from_secs(30)).await
                })
            })
            .collect();
        for (i, c) in checks.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), i % 2 == 0);
        }
    }
}
