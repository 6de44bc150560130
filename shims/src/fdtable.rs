//! What the shims know per fd number: whether it is a socket, and its poller registration.
//!
//! Two zero-initialised static arrays indexed by fd number ([`TABLE_SIZE`] entries): no
//! initialisation, no allocation and no system call on the lookup path (an atomic load).
//! Fds at or above [`TABLE_SIZE`] are never made cooperative: every hook forwards them.
//!
//! The table holds no state of the file itself (non-blocking mode, timeouts): the kernel's
//! copy is the only one, read when a tasklet is about to park (see the crate's design comment).
//! The class is a cache of `fstat`'s `S_ISSOCK` answer, refreshed whenever the shims see the
//! number change hands (`socket`, `accept`, `close`, `dup*`); a stale "socket" entry left by a
//! close that bypassed libc is caught by `ENOTSOCK` and by the inode check of [`slot`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use libc::c_int;
use tasklets::io::Registration;

use crate::sys;

/// Fd numbers below this are tracked; others pass straight through every hook.
pub const TABLE_SIZE: usize = 65_536;

/// Not looked at yet (or its number was closed since).
const UNKNOWN: u8 = 0;
/// Not a socket: files, pipes, ttys, eventfds, ... Forwarded untouched.
const OTHER: u8 = 1;
/// A socket.
const SOCKET: u8 = 2;

static CLASS: [AtomicU8; TABLE_SIZE] = [const { AtomicU8::new(UNKNOWN) }; TABLE_SIZE];

/// The shims' use of a socket's poller registrations (shared with every other user of the fd:
/// `tasklets::net`, other `Registration`s), made on the first park and kept until `close`.
pub(crate) struct Slot {
    /// Deregistered by `close` (or `dup2`/`dup3` onto the number) before the real close, even
    /// while tasklets are parked on it: they wake with `EBADF`.
    registration: Registration,
    /// Which socket the registration was made for (a number closed behind libc's back and
    /// reused must not inherit it).
    dev: u64,
    ino: u64,
}

impl Slot {
    pub(crate) fn registration(&self) -> &Registration {
        &self.registration
    }
}

type SlotCell = Mutex<Option<Arc<Slot>>>;

static SLOTS: [SlotCell; TABLE_SIZE] = [const { Mutex::new(None) }; TABLE_SIZE];

fn index(fd: c_int) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < TABLE_SIZE)
}

/// Whether `fd` is a socket, classifying it with one `fstat` the first time it is asked.
/// `false` for fds outside the table and for fds that cannot be `fstat`ed.
pub(crate) fn is_socket(fd: c_int) -> bool {
    let Some(i) = index(fd) else { return false };
    match CLASS[i].load(Ordering::Relaxed) {
        SOCKET => true,
        OTHER => false,
        _ => {
            let saved = sys::errno();
            let class = match sys::fstat(fd) {
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => SOCKET,
                Some(_) => OTHER,
                None => {
                    sys::set_errno(saved);
                    return false; // EBADF and friends: let the real call report it
                }
            };
            sys::set_errno(saved);
            CLASS[i].store(class, Ordering::Relaxed);
            class == SOCKET
        }
    }
}

/// Records that `fd` was just created as a socket (`socket`, `socketpair`, `accept`).
pub(crate) fn set_socket(fd: c_int) {
    if let Some(i) = index(fd) {
        CLASS[i].store(SOCKET, Ordering::Relaxed);
    }
}

/// Records that `fd` turned out not to be a socket after all (`ENOTSOCK` from a call made on a
/// stale entry), dropping any registration it carried.
pub(crate) fn set_not_socket(fd: c_int) {
    if let Some(i) = index(fd) {
        release(take_slot(i));
        CLASS[i].store(OTHER, Ordering::Relaxed);
    }
}

/// `new` was just made a duplicate of `old` (`dup`, `dup2`, `dup3`, `F_DUPFD`): it refers to
/// the same file, so it is a socket if `old` is. Its registration is its own (pollers key
/// registrations by fd number), made on its first park.
pub(crate) fn duplicated(old: c_int, new: c_int) {
    if let Some(j) = index(new) {
        let class = match index(old) {
            Some(i) => CLASS[i].load(Ordering::Relaxed),
            None => UNKNOWN,
        };
        CLASS[j].store(class, Ordering::Relaxed);
    }
}

/// `fd` is about to be closed (or replaced by `dup2`/`dup3`): leaves its registrations while
/// the number still refers to the file (the last user deletes it from the pollers; tasklets
/// still parked on it, closed under their feet by another tasklet or thread, wake with
/// `EBADF`), and forgets its class. Must run before the real close.
pub(crate) fn closing(fd: c_int) {
    let Some(i) = index(fd) else { return };
    // Only sockets ever get a slot (invariant: a slot exists => class is SOCKET), so the
    // common close of a file or pipe costs one atomic load.
    if CLASS[i].swap(UNKNOWN, Ordering::Relaxed) != SOCKET {
        return;
    }
    release(take_slot(i));
}

fn take_slot(i: usize) -> Option<Arc<Slot>> {
    let saved = sys::errno();
    let slot = SLOTS[i].lock().unwrap_or_else(PoisonError::into_inner).take();
    sys::set_errno(saved);
    slot
}

/// Leaves a slot's registrations now, even if parked tasklets still hold the slot.
fn release(slot: Option<Arc<Slot>>) {
    if let Some(slot) = slot {
        let saved = sys::errno();
        slot.registration.deregister();
        sys::set_errno(saved);
    }
}

/// The registration of socket `fd` (whose `fstat` is `st`), made on first use. A slot made for
/// another socket that once had this number (closed without going through libc) is released
/// and replaced.
pub(crate) fn slot(fd: c_int, st: &libc::stat) -> Option<Arc<Slot>> {
    let i = index(fd)?;
    let mut cell = SLOTS[i].lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = &*cell {
        if slot.dev == st.st_dev && slot.ino == st.st_ino {
            return Some(slot.clone());
        }
    }
    release(cell.take());
    let slot = Arc::new(Slot {
        // SAFETY: the registration is deregistered in `closing`, which the `close`, `dup2`
        // and `dup3` hooks call before the real close, or here, when the number is found to
        // name another socket.
        registration: unsafe { Registration::new(fd) },
        dev: st.st_dev,
        ino: st.st_ino,
    });
    *cell = Some(slot.clone());
    CLASS[i].store(SOCKET, Ordering::Relaxed);
    Some(slot)
}
