//! Idle connections to a next hop, kept for the next copy so that a busy gateway does not
//! pay connect, greeting, EHLO or LHLO (and AUTH, and QUIT) for every message. Shared by
//! the SMTP upstream and LMTP; each says what a connection is and what tells two apart
//! (a login, or nothing).
//!
//! The limits are Postfix's connection cache's: a connection idle for [`IDLE_FOR`] is
//! dropped rather than reused (the server may have timed it out), and one is retired
//! after [`MAX_TRANSACTIONS`] or [`MAX_AGE`], whichever comes first
//! (`smtp_connection_reuse_count_limit` and `…_time_limit`), so that a server's
//! per-connection limits and state (and a load balancer's choice) are renewed now and
//! then. A reused connection may still have been closed by the server meanwhile: the
//! client finds out on its first command, before anything of the message went, and opens
//! a fresh one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connections idle longer than this are closed rather than reused.
pub const IDLE_FOR: Duration = Duration::from_secs(20);
/// Idle connections kept at most per next hop.
pub const MAX_IDLE: usize = 32;
/// Transactions a connection serves before it is retired.
pub const MAX_TRANSACTIONS: u32 = 100;
/// How long a connection serves before it is retired.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// Idle connections `C`, each kept under the key `K` of what it can be used for.
pub struct Pool<K, C> {
    idle: Mutex<Vec<Idle<K, C>>>,
}

impl<K, C> Default for Pool<K, C> {
    fn default() -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }
}

struct Idle<K, C> {
    key: K,
    conn: Kept<C>,
    since: Instant,
}

/// A connection and what the pool counts of it.
pub struct Kept<C> {
    pub conn: C,
    /// Transactions begun on it (MAIL sent).
    transactions: u32,
    opened: Instant,
    /// Taken from the pool rather than opened for this copy: the server may have closed
    /// it since.
    reused: bool,
}

impl<C> Kept<C> {
    /// A connection opened now.
    pub fn new(conn: C) -> Kept<C> {
        Kept {
            conn,
            transactions: 0,
            opened: Instant::now(),
            reused: false,
        }
    }

    /// Counts a transaction begun on the connection.
    pub fn begun(&mut self) {
        self.transactions += 1;
    }

    /// Whether it was idle in the pool before this use.
    pub fn reused(&self) -> bool {
        self.reused
    }

    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    fn spent(&self) -> bool {
        self.transactions >= MAX_TRANSACTIONS || self.opened.elapsed() >= MAX_AGE
    }
}

impl<K: PartialEq, C> Pool<K, C> {
    /// The most recently used idle connection kept under `key`, if any.
    pub fn take(&self, key: &K) -> Option<Kept<C>> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|i| i.since.elapsed() < IDLE_FOR);
        let at = idle.iter().rposition(|i| &i.key == key)?;
        let mut kept = idle.swap_remove(at).conn;
        kept.reused = true;
        Some(kept)
    }

    /// Keeps `conn` for the next copy under `key`. A connection that has served its time
    /// is handed back, for the caller to close politely (QUIT); one that finds the pool
    /// full is dropped.
    pub fn put(&self, key: K, conn: Kept<C>) -> Option<C> {
        if conn.spent() {
            return Some(conn.conn);
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|i| i.since.elapsed() < IDLE_FOR);
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    key,
                    conn,
                    since: Instant::now(),
                });
            }
        }
        None
    }

    /// How many transactions each idle connection has served, oldest first.
    #[cfg(test)]
    pub fn idle_transactions(&self) -> Vec<u32> {
        self.idle
            .lock()
            .map(|i| i.iter().map(|i| i.conn.transactions).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves every idle connection's last use `by` into the past.
    fn idle_for<K, C>(pool: &Pool<K, C>, by: Duration) {
        for i in pool.idle.lock().unwrap().iter_mut() {
            i.since = i.since.checked_sub(by).unwrap();
        }
    }

    #[test]
    fn connections_are_kept_per_key_until_idle_too_long() {
        let pool: Pool<&str, u32> = Pool::default();
        assert!(pool.put("bob", Kept::new(1)).is_none());
        assert!(pool.put("eve", Kept::new(2)).is_none());
        assert!(pool.take(&"alice").is_none());
        let bob = pool.take(&"bob").expect("kept");
        assert_eq!(bob.conn, 1);
        assert!(bob.reused());
        assert!(!Kept::new(3).reused());
        assert!(pool.take(&"bob").is_none(), "taken once");
        idle_for(&pool, IDLE_FOR - Duration::from_secs(1));
        assert!(pool.put("bob", bob).is_none());
        assert!(pool.take(&"eve").is_some(), "not idle too long yet");
        idle_for(&pool, IDLE_FOR);
        assert!(pool.take(&"bob").is_none(), "idle too long");
    }

    #[test]
    fn a_connection_is_retired_after_its_transactions_or_its_age() {
        let pool: Pool<(), u32> = Pool::default();
        let mut c = Kept::new(1);
        for _ in 0..MAX_TRANSACTIONS - 1 {
            c.begun();
        }
        assert!(pool.put((), c).is_none());
        let mut c = pool.take(&()).expect("kept");
        c.begun();
        assert_eq!(pool.put((), c), Some(1), "handed back to be closed");
        assert!(pool.take(&()).is_none());

        let mut old = Kept::new(2);
        old.opened = old.opened.checked_sub(MAX_AGE).unwrap();
        assert_eq!(pool.put((), old), Some(2));
    }

    #[test]
    fn a_full_pool_keeps_no_more() {
        let pool: Pool<(), usize> = Pool::default();
        for i in 0..MAX_IDLE + 5 {
            assert!(pool.put((), Kept::new(i)).is_none());
        }
        assert_eq!(pool.idle_transactions().len(), MAX_IDLE);
    }
}
