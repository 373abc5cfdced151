//! Buffers that held a message or a password, zeroed before the allocator gets them back.
//!
//! Freed memory keeps its bytes until it is reused, so a core dump, a swapped-out page or
//! a read of the process's memory shows mail that was delivered long ago. A buffer is
//! zeroed when it is dropped ([`Buf`], or [`zeroize::Zeroizing`] for small ones), and
//! every way a buffer here moves its bytes is replaced by one that zeroes what it leaves
//! behind: growing (std's growth copies to a new allocation and frees the old one as it
//! is), cutting bytes off the front, and putting a header in front.
//!
//! Only a [`Buf`]'s length is zeroed, not its spare capacity: a large reservation that
//! was never written costs address space, not memory, and zeroing it would make it
//! resident. Whatever leaves spare bytes behind ([`vacated`]) zeroes them itself.

use std::fmt;
use std::ops::{Deref, DerefMut};

use zeroize::Zeroize;

/// Bytes zeroed (up to their length) when dropped.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Buf(Vec<u8>);

impl Buf {
    pub fn with_capacity(capacity: usize) -> Buf {
        Buf(Vec::with_capacity(capacity))
    }

    /// The vector, which the caller now zeroes (or hands to something that does).
    pub fn into_inner(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }

    /// Appends `data`, growing as [`reserve`] does.
    pub fn extend(&mut self, data: &[u8]) {
        extend(&mut self.0, data);
    }
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        Buf(v)
    }
}

impl Deref for Buf {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

// The bytes may be a decrypted message: never printed.
impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buf({} bytes)", self.0.len())
    }
}

/// Zeroes `v`'s bytes and empties it; its capacity stays for reuse.
pub fn clear(v: &mut Vec<u8>) {
    v.as_mut_slice().zeroize();
    v.clear();
}

/// Makes room for `more` bytes past the length, at least doubling the capacity when it
/// grows (as std does), and zeroes the old allocation before it is freed.
pub fn reserve(v: &mut Vec<u8>, more: usize) {
    let needed = v.len().saturating_add(more);
    if needed > v.capacity() {
        grow(v, needed.max(v.capacity().saturating_mul(2)));
    }
}

/// [`reserve`] of exactly `more` bytes.
pub fn reserve_exact(v: &mut Vec<u8>, more: usize) {
    let needed = v.len().saturating_add(more);
    if needed > v.capacity() {
        grow(v, needed);
    }
}

fn grow(v: &mut Vec<u8>, capacity: usize) {
    let mut grown = Vec::with_capacity(capacity);
    grown.extend_from_slice(v);
    let mut old = std::mem::replace(v, grown);
    // The old allocation may have had bytes past its length too (see `vacated`), but
    // whoever put them there zeroed them.
    clear(&mut old);
}

/// Appends `data` to `v`, growing as [`reserve`] does.
pub fn extend(v: &mut Vec<u8>, data: &[u8]) {
    reserve(v, data.len());
    v.extend_from_slice(data);
}

/// Zeroes the first `n` bytes of `v`'s spare capacity: what `truncate` or `drain` left
/// there, `n` being how much shorter `v` became.
pub fn vacated(v: &mut Vec<u8>, n: usize) {
    let spare = v.spare_capacity_mut();
    let n = n.min(spare.len());
    if let Some(s) = spare.get_mut(..n) {
        s.zeroize();
    }
}

/// Removes the first `n` bytes of `v`, zeroing the spare bytes the move leaves behind.
pub fn drain_front(v: &mut Vec<u8>, n: usize) {
    let n = n.min(v.len());
    if n == 0 {
        return;
    }
    v.drain(..n);
    vacated(v, n);
}

/// `head` in place of the first `at` bytes of `v`, in `v`'s own allocation when it has
/// room (no copy of the rest is left anywhere), zeroing what is left behind.
pub fn replace_front(v: &mut Vec<u8>, at: usize, head: &[u8]) {
    let at = at.min(v.len());
    if head.len() > at {
        reserve_exact(v, head.len() - at);
    }
    let before = v.len();
    v.splice(..at, head.iter().copied());
    if v.len() < before {
        vacated(v, before - v.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_and_moves_keep_the_bytes() {
        let mut v = b"abc".to_vec();
        v.shrink_to_fit();
        extend(&mut v, b"defgh");
        assert_eq!(v, b"abcdefgh");
        assert!(v.capacity() >= 8);
        let ptr = v.as_ptr();
        extend(&mut v, b"");
        assert_eq!(v.as_ptr(), ptr, "no growth without need");
        drain_front(&mut v, 3);
        assert_eq!(v, b"defgh");
        drain_front(&mut v, 10);
        assert!(v.is_empty());

        let mut v = b"Header: x\r\n\r\nbody".to_vec();
        replace_front(&mut v, 13, b"A: 1\r\nLonger-Header: yes\r\n\r\n");
        assert_eq!(v, b"A: 1\r\nLonger-Header: yes\r\n\r\nbody");
        replace_front(&mut v, 28, b"B\r\n\r\n");
        assert_eq!(v, b"B\r\n\r\nbody");
        let mut b = Buf::with_capacity(2);
        b.extend(b"xyz");
        assert_eq!(b.into_inner(), b"xyz");
    }
}
