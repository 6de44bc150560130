//! Guarded tasklet stacks, carved from large regions and recycled through a per-thread pool.
//!
//! # Design
//!
//! A tasklet's stack is a *slot*: one guard page followed by the usable stack, stacks growing
//! down towards the guard. Slots are carved from *regions*, large private anonymous mappings
//! made with `MAP_NORESERVE`, so a slot costs address space but no memory until touched: a
//! tasklet that parks after a shallow call chain has one resident stack page.
//!
//! ```text
//!   region:  | guard | stack 0 ...... top | guard | stack 1 ...... top | ...
//!            ^limit                      ^top
//! ```
//!
//! **Guards without mappings.** A guard made with `mprotect(PROT_NONE)` splits the mapping, so
//! every stack costs two entries of the process's map count (`vm.max_map_count`, 65530 by
//! default): that is why `may` stops at 32,744 coroutines. On Linux ≥ 6.13 we install guards
//! with `madvise(MADV_GUARD_INSTALL)`, which marks the page in the page tables and leaves the
//! region one mapping; 1,000,000 guarded stacks then need a few hundred mappings. The kind of
//! guard is chosen once per process: the first region tries `MADV_GUARD_INSTALL` and falls back
//! to `mprotect` on `EINVAL` (older kernels), or when the first guard does not guard: a kernel
//! read of it must fail with `EFAULT` (`guard_holds`), and under qemu-user, which answers the
//! advice with 0 and installs nothing, it does not. `TASKLET_STACK_GUARD=mprotect` in the environment
//! forces the fallback, so its behaviour can be tested on a new kernel. When the fallback runs
//! out of mappings the spawn fails with an `io::Error` that names the cause and the fix.
//! `TASKLET_MAX_MPROTECT_GUARDS=N` (with the fallback) makes the N+1th mprotect guard of the
//! process fail as running out of mappings would, so that path can be tested in bounded time on
//! a machine whose `vm.max_map_count` is raised (1,048,576 on recent distributions).
//! macOS and FreeBSD have no such advice: their guards are always `mprotect` guards
//! (`sys::HAS_MADV_GUARD_INSTALL`).
//!
//! **The pool.** Freed stacks go back to a per-thread LIFO list per size class, so the steady
//! state of spawn/finish touches no syscall: pop a slot, write the first frame, run, push the
//! slot back. Regions grow geometrically (16 slots, then doubling up to 4096 per region).
//!
//! **Reservations (lazy stacks).** A tasklet that has not started needs no stack yet: spawning
//! *reserves* a slot of its size class ([`StackPool::reserve`]: a counter, plus carving a region
//! when the free slots are all reserved), and the scheduler *takes* one only when it first
//! switches to the tasklet ([`StackPool::take_reserved`], which cannot fail). Since the list is
//! LIFO, the slot taken then is the one the last finished tasklet released, still warm: a burst
//! of 100,000 spawns that each run to completion touches a couple of stacks, not 100,000 fresh
//! pages. Killing a tasklet that never started just drops its reservation. Reserving keeps every
//! error where it was, at the spawn (address space, map count), and leaves the switch with no
//! failure path. Rejected: taking the slot at the first switch without a reservation (a failure
//! there has no caller to return an error to).
//!
//! **Fresh slots.** A slot none of whose pages is resident (never touched since it was carved,
//! or trimmed since) is marked [`FRESH`] in the free list (bit 0 of its page-aligned address).
//! Taking one populates its top page, where the first frame goes, with one
//! `madvise(MADV_POPULATE_WRITE)` (`sys::populate_page`) instead of letting the first write
//! fault it in: on the 2-vCPU VM a fault cost 1.5–1.8 µs per fresh page and the system call
//! 1.3–1.4 µs (a C loop over 10,000 slots), and 10,000 sleepers' first round went from
//! 4.07–4.32 to 3.90–4.07 µs CPU per sleeper (issue 14 goal 3, docs/benchmarks.md *Timers*).
//! Warm slots (released by a finished tasklet) are not marked and cost nothing; where the
//! advice is missing (Linux < 5.14, qemu-user, macOS, FreeBSD) the first write faults as before.
//! Rejected: populating the top pages of many reserved slots ahead in one
//! `process_madvise` call: the kernel's work per page (allocate, zero, charge, map) is most of
//! the cost (1.33 µs per page one call each, 1.38 batched by 1,024), and pages populated ahead
//! for a burst of spawns that each run to completion would be wasted (goal 2: such a burst
//! touches no stack page per tasklet). Guards stay installed for a slot's whole life: pooled
//! and trimmed slots keep theirs (`MADV_DONTNEED` leaves guard markers), so a guard costs one
//! `madvise` per slot carved, none per spawn. A region's guards after its first go in one
//! `process_madvise` per 1,024 slots where the kernel takes any advice that way (6.13;
//! `sys::madvise_strided`, else one `madvise` each): 0.31 instead of 0.44 µs per guard in a C
//! loop over 10,000 slots; 10,000 sleepers carve 12,272 slots, 17 calls instead of 12,272.
//!
//! **Prefetching.** Ten thousand stacks 260 KiB apart are far more pages than the TLB holds,
//! so the first touch of a stack after a while costs a page walk and a cache miss (in the
//! sleepers' profile, `exit_raw`'s first `pop` from the resumed stack was 10% of all samples).
//! The scheduler's `fire_expired` prefetches the saved registers and the task of every
//! tasklet it wakes, and `timer` the next due task's timer state, so those misses overlap
//! instead of stalling one by one: 10,000 sleepers went from 3.60–4.04 to 3.40–3.56 µs CPU per
//! sleeper in the first round and 2.14–2.66 to 2.04–2.07 µs in the second (`chrt -f`,
//! interleaved, four runs each; docs/benchmarks.md *Timers*). A poll does the same for the
//! tasklets its events wake (`scheduler::prefetch_resume`; ~50 per poll with 1,000 busy
//! connections): an echo server's user time per message, median of 11 interleaved pairs,
//! 0.62 → 0.54 µs (docs/benchmarks.md, *Where the comparison's targets stand*). Rejected:
//! prefetching the top of the slot the next take pops (the next tasklet's, in a burst of
//! first runs): the prefetch itself stalled on the page walk (92% of `take_reserved`'s
//! samples) and five interleaved runs with and without it were the same (3.42–3.60 /
//! 3.37–3.52 µs).
//!
//! **Giving memory back.** A pooled stack keeps the pages its tasklet touched. Trimming every
//! released stack would cost a syscall per finish, so the pool trims by *epochs*, like Go's
//! scavenger. The scheduler ends an epoch when `run()` returns (and, with the I/O bridge, when
//! the thread goes idle); at the end of an epoch each size class keeps as many warm free stacks
//! as were taken during the epoch (at least [`HOT_STACKS`]) and gives the pages of the rest,
//! least recently used first, back with `MADV_DONTNEED` (the mapping and its guard pages
//! stay). So when a burst of 1,000,000 parked tasklets drains, its memory goes back as soon as
//! `run()` returns, while a loop that spawns the same batch again and again keeps its stacks
//! warm. Adjacent slots are trimmed with one call (guard markers survive it).
//!
//! **Overflow.** A fault in the guard page of the running tasklet's stack prints which tasklet
//! overflowed its stack, and of how many KiB, then aborts, as Rust does for threads. The
//! SIGSEGV handler (SIGSEGV and SIGBUS off Linux: macOS reports guard-page faults as SIGBUS)
//! runs on the thread's alternate signal stack (std installs one on threads it
//! starts; the scheduler adds one to threads that have none) and chains to the previous handler
//! for every other fault, so std's own main-thread overflow message and debuggers keep working.
//!
//! Rejected: one `mmap` per stack (as corosensei's `DefaultStack` did): 2–4 µs per spawn and two
//! mappings per stack. Lazily growing (split or copied) stacks: Rust code holds pointers into
//! its stack, so a stack can never move.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::sys::{self, page_size};

/// Default usable stack size of a tasklet: 256 KiB of address space, of which a parked tasklet
/// typically has one 4 KiB page resident. Large enough for formatting, logging, `std::io::copy`
/// (8 KiB buffer) and panics with backtraces in debug builds.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Smallest stack a tasklet may ask for; smaller requests are rounded up to it.
///
/// Large enough for a panic's report with `RUST_BACKTRACE=1` or `full`: std's backtrace printer
/// (symbolisation of the tasklet's frames) overflowed 16 KiB; 24 KiB was measured to fit in a
/// release build on x86_64 (`tests/kill_and_panic.rs::panic_backtrace_in_a_minimum_size_tasklet_fits_its_stack`),
/// and 32 KiB leaves room for debug builds and deeper symbol tables.
pub const MIN_STACK_SIZE: usize = 32 * 1024;

/// Largest stack a tasklet may ask for (1 GiB); larger requests are an error.
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// How many recently freed stacks per size class are never trimmed.
pub(crate) const HOT_STACKS: usize = 128;

/// Marks a free slot that has no resident page (never touched since it was carved or
/// trimmed): taking it populates its top page in one system call instead of a page fault
/// (see "Fresh slots" in the module comment). Slot addresses are page aligned, so bit 0 is free.
const FRESH: usize = 1;

/// Most slots carved from one region.
const MAX_REGION_SLOTS: usize = 4096;
/// Slots in a size class's first region.
const FIRST_REGION_SLOTS: usize = 16;

/// `madvise` advice that installs guard pages without splitting the mapping (Linux 6.13).
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// How guard pages are made, decided once per process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GuardKind {
    Unknown = 0,
    Madvise = 1,
    Mprotect = 2,
}

static GUARD_KIND: AtomicU8 = AtomicU8::new(GuardKind::Unknown as u8);

fn guard_kind() -> GuardKind {
    match GUARD_KIND.load(Ordering::Relaxed) {
        1 => GuardKind::Madvise,
        2 => GuardKind::Mprotect,
        _ => {
            let forced = !sys::HAS_MADV_GUARD_INSTALL
                || std::env::var_os("TASKLET_STACK_GUARD").is_some_and(|v| v == "mprotect");
            if forced {
                GUARD_KIND.store(GuardKind::Mprotect as u8, Ordering::Relaxed);
                GuardKind::Mprotect
            } else {
                GuardKind::Unknown
            }
        }
    }
}

/// Rounds a requested stack size to what a slot provides, or explains why it cannot.
pub(crate) fn usable_size(requested: usize) -> io::Result<usize> {
    if requested > MAX_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tasklet stack size {requested} bytes exceeds the maximum of {MAX_STACK_SIZE} bytes"),
        ));
    }
    let page = page_size();
    Ok((requested.max(MIN_STACK_SIZE) + page - 1) & !(page - 1))
}

/// A stack slot lent to one tasklet. Returned to the pool with [`StackPool::release`].
#[derive(Debug)]
pub(crate) struct Stack {
    /// Top of the stack (one past the highest usable byte), page aligned.
    top: usize,
    /// Usable bytes above the guard page.
    size: usize,
}

impl Stack {
    fn new(limit: usize, size: usize) -> Stack {
        Stack { top: limit + page_size() + size, size }
    }

    /// Lowest address of the slot: the guard page.
    fn limit(&self) -> usize {
        self.top - self.size - page_size()
    }

    /// Top of the stack (one past the highest usable byte), page aligned: a new tasklet's
    /// closure and first frame go right below it.
    pub(crate) fn top(&self) -> usize {
        self.top
    }

    /// The guard page's address range.
    #[inline]
    pub(crate) fn guard(&self) -> (usize, usize) {
        let page = page_size();
        let limit = self.top - self.size - page;
        (limit, limit + page)
    }

    /// Usable bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// Free slots of one usable size.
#[derive(Debug)]
struct SizeClass {
    size: usize,
    /// LIFO of free slots, by their `limit` address, plus [`FRESH`] for a slot none of whose
    /// pages was touched since it was carved or trimmed.
    free: Vec<usize>,
    /// Free slots promised to tasklets that have not started: `reserved <= free.len()`.
    reserved: usize,
    /// `free[..clean]` are known to have no resident pages.
    clean: usize,
    /// Slots taken during the current epoch: how many warm stacks to keep at its end.
    taken: usize,
    /// Slots of the next region carved for this class.
    next_region_slots: usize,
}

/// A mapping carved into slots.
#[derive(Debug)]
struct Region {
    addr: *mut u8,
    len: usize,
    /// Valgrind ids of the region's stacks (empty unless running under valgrind).
    valgrind_ids: Vec<usize>,
}

/// The per-thread pool of stacks.
#[derive(Debug, Default)]
pub(crate) struct StackPool {
    classes: Vec<SizeClass>,
    regions: Vec<Region>,
    /// Slots carved in all regions (in use or free).
    carved: usize,
}

impl StackPool {
    /// Takes a stack of `size` usable bytes (already rounded by [`usable_size`]).
    #[cfg(test)]
    pub(crate) fn take(&mut self, size: usize) -> io::Result<Stack> {
        self.reserve(size)?;
        Ok(self.take_reserved(size))
    }

    /// The index of the class of `size`, made if there is none.
    #[inline]
    fn class_of(&mut self, size: usize) -> usize {
        // Most threads use one size: the first class is checked before the search.
        if self.classes.first().is_some_and(|c| c.size == size) {
            return 0;
        }
        self.class_of_slow(size)
    }

    #[inline(never)]
    fn class_of_slow(&mut self, size: usize) -> usize {
        match self.classes.iter().position(|c| c.size == size) {
            Some(idx) => idx,
            None => {
                self.classes.push(SizeClass {
                    size,
                    free: Vec::new(),
                    reserved: 0,
                    clean: 0,
                    taken: 0,
                    next_region_slots: FIRST_REGION_SLOTS,
                });
                self.classes.len() - 1
            }
        }
    }

    /// Promises a stack of `size` usable bytes (already rounded by [`usable_size`]) to a
    /// tasklet that has not started (see "Reservations" in the module comment): carves a region
    /// when every free slot is promised already. Fails as carving does.
    #[inline]
    pub(crate) fn reserve(&mut self, size: usize) -> io::Result<()> {
        let idx = self.class_of(size);
        if self.classes[idx].free.len() == self.classes[idx].reserved {
            self.carve(idx)?;
        }
        self.classes[idx].reserved += 1;
        Ok(())
    }

    /// Takes the stack a [`reserve`](Self::reserve) of `size` promised: the most recently
    /// released slot of the class.
    #[inline]
    pub(crate) fn take_reserved(&mut self, size: usize) -> Stack {
        let idx = self.class_of(size);
        let class = &mut self.classes[idx];
        class.reserved = class.reserved.checked_sub(1).expect("a stack is taken only after its reservation");
        let entry = class.free.pop().expect("a reservation leaves a free slot");
        class.clean = class.clean.min(class.free.len());
        class.taken += 1;
        let stack = Stack::new(entry & !FRESH, size);
        if entry & FRESH != 0 {
            populate_top(&stack);
        }
        stack
    }

    /// Drops a reservation of `size` whose tasklet ended without starting.
    #[inline]
    pub(crate) fn unreserve(&mut self, size: usize) {
        let idx = self.class_of(size);
        let class = &mut self.classes[idx];
        class.reserved = class.reserved.checked_sub(1).expect("an unreserved stack was reserved");
    }

    /// Returns a stack whose tasklet has finished.
    #[inline]
    pub(crate) fn release(&mut self, stack: Stack) {
        let idx = self.class_of(stack.size);
        let limit = stack.limit();
        self.classes[idx].free.push(limit);
    }

    /// Ends an epoch: gives back the pages of the free stacks beyond what the epoch used (see
    /// the module comment). Returns how many stacks were trimmed.
    pub(crate) fn trim(&mut self) -> usize {
        let page = page_size();
        let coalesce = guard_kind() == GuardKind::Madvise;
        let mut trimmed = 0;
        for class in &mut self.classes {
            let keep = class.taken.max(HOT_STACKS);
            let cold_end = class.free.len().saturating_sub(keep);
            if class.clean < cold_end {
                for entry in &mut class.free[class.clean..cold_end] {
                    *entry |= FRESH; // trimmed below: no page of it is resident any more
                }
                let mut cold: Vec<usize> =
                    class.free[class.clean..cold_end].iter().map(|e| e & !FRESH).collect();
                trimmed += cold.len();
                cold.sort_unstable();
                let slot = class.size + page;
                let mut i = 0;
                while i < cold.len() {
                    // A run of adjacent slots: with MADV_GUARD_INSTALL guards, one call covers
                    // them all, guard pages included (guard markers survive MADV_DONTNEED).
                    let mut j = i + 1;
                    while coalesce && j < cold.len() && cold[j] == cold[j - 1] + slot {
                        j += 1;
                    }
                    let start = cold[i] + page;
                    let end = cold[j - 1] + slot;
                    // SAFETY: every slot in the run is free (in the pool), so no tasklet uses
                    // its pages; the range lies inside a region we own. MADV_DONTNEED keeps the
                    // mapping and the guards.
                    let res = unsafe { sys::madvise(start as *mut u8, end - start, sys::MADV_TRIM) };
                    if let Err(err) = res {
                        log::debug!("tasklet: trimming pooled stacks failed: {err}");
                    }
                    i = j;
                }
                class.clean = cold_end;
            }
            class.taken = 0;
        }
        trimmed
    }

    /// Carves a new region for size class `idx`, guards its slots and adds them to the free list.
    #[cold]
    fn carve(&mut self, idx: usize) -> io::Result<()> {
        let page = page_size();
        let class = &mut self.classes[idx];
        let slot = class.size + page;
        let mut slots = class.next_region_slots;
        let mut len = slot * slots;
        // Out of address space (RLIMIT_AS, or a 1 GiB class) may still leave room for a smaller
        // region: halve it down to one slot before failing.
        let addr = loop {
            match sys::map_anonymous(len) {
                Ok(addr) => break addr,
                Err(err) if err.raw_os_error() == Some(libc::ENOMEM) && slots > 1 => {
                    slots /= 2;
                    len = slot * slots;
                }
                Err(err) => {
                    let hint = if err.raw_os_error() == Some(libc::ENOMEM) {
                        out_of_memory_hint()
                    } else {
                        String::new()
                    };
                    return Err(io::Error::new(
                        err.kind(),
                        format!(
                            "cannot reserve {len} bytes of address space for tasklet stacks: {err}{hint}"
                        ),
                    ));
                }
            }
        };
        let mut guarded = 0;
        let mut failure = None;
        // The first guard decides the kind (see `install_guard`); with `MADV_GUARD_INSTALL`
        // the others go in batches of 1,024 slots per system call where the kernel allows.
        match install_guard(addr, page) {
            Ok(()) => guarded = 1,
            Err(err) => failure = Some(err),
        }
        if guarded == 1 && slots > 1 && guard_kind() == GuardKind::Madvise {
            // SAFETY: the first page of each slot of the region just mapped; no data there.
            if let Ok(true) = unsafe {
                sys::madvise_strided(addr as usize + slot, slot, slots - 1, page, MADV_GUARD_INSTALL)
            } {
                guarded = slots;
            }
        }
        // Range by range from the first slot not yet guarded (none after a failed first one).
        let first = if failure.is_some() { slots } else { guarded };
        for i in first..slots {
            // SAFETY: `addr + i * slot` is the first page of slot i inside the region just mapped.
            let guard = unsafe { addr.add(i * slot) };
            match install_guard(guard, page) {
                Ok(()) => guarded += 1,
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if guarded == 0 {
            // SAFETY: the region was mapped above and no slot of it was handed out.
            let _ = unsafe { sys::unmap(addr, len) };
            return Err(failure.expect("no guard installed means an error"));
        }
        let mut valgrind_ids = Vec::new();
        if crate::valgrind::running() {
            for i in 0..guarded {
                let start = addr as usize + i * slot + page;
                valgrind_ids.push(crate::valgrind::stack_register(start, start + class.size));
            }
        }
        self.regions.push(Region { addr, len, valgrind_ids });
        self.carved += guarded;
        // Push in reverse so that the lowest slot is handed out first.
        for i in (0..guarded).rev() {
            class.free.push((addr as usize + i * slot) | FRESH);
        }
        class.next_region_slots = (slots * 2).min(MAX_REGION_SLOTS);
        Ok(())
    }

    /// Slots carved so far (in use or pooled).
    #[cfg(test)]
    pub(crate) fn carved(&self) -> usize {
        self.carved
    }
}

impl Drop for StackPool {
    fn drop(&mut self) {
        for region in self.regions.drain(..) {
            for id in region.valgrind_ids {
                crate::valgrind::stack_deregister(id);
            }
            // SAFETY: the pool is dropped only after every tasklet of its thread has finished,
            // so no slot of any region is in use.
            if let Err(err) = unsafe { sys::unmap(region.addr, region.len) } {
                log::warn!("tasklet: unmapping a stack region failed: {err}");
            }
        }
    }
}

/// Makes the top page of a fresh slot's stack resident, where the tasklet's first frame goes
/// (see "Fresh slots" in the module comment). Best effort: where populating is not available
/// the first write faults the page in as before.
fn populate_top(stack: &Stack) {
    let page = page_size();
    // SAFETY: the top page of a slot's usable stack, inside a private writable region we own;
    // the slot was just taken, so nothing uses it yet, and a fresh slot has no data to keep.
    unsafe { sys::populate_page((stack.top() - page) as *mut u8, page) };
}

/// Makes the page at `addr` a guard page, choosing the mechanism on first use.
fn install_guard(addr: *mut u8, page: usize) -> io::Result<()> {
    let kind = guard_kind();
    if kind != GuardKind::Mprotect {
        // SAFETY: `addr` is the first page of a slot in a region we own; no data lives there.
        match unsafe { sys::madvise(addr, page, MADV_GUARD_INSTALL) } {
            Ok(()) if kind == GuardKind::Madvise => return Ok(()),
            Ok(()) if guard_holds(addr)? => {
                GUARD_KIND.store(GuardKind::Madvise as u8, Ordering::Relaxed);
                return Ok(());
            }
            Ok(()) => {
                log::debug!(
                    "tasklet: MADV_GUARD_INSTALL succeeded but did not guard, using mprotect guard pages"
                );
                GUARD_KIND.store(GuardKind::Mprotect as u8, Ordering::Relaxed);
            }
            Err(err) if kind == GuardKind::Unknown && err.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!("tasklet: MADV_GUARD_INSTALL unsupported, using mprotect guard pages");
                GUARD_KIND.store(GuardKind::Mprotect as u8, Ordering::Relaxed);
            }
            Err(err) => return Err(err),
        }
    }
    if mprotect_guard_limit_reached() {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot install a tasklet stack guard page: TASKLET_MAX_MPROTECT_GUARDS reached, as \
                 if out of mappings{}",
                out_of_mappings_hint("TASKLET_MAX_MPROTECT_GUARDS")
            ),
        ));
    }
    // SAFETY: as above; the page holds no data, so making it inaccessible is harmless.
    unsafe { sys::mprotect(addr, page, libc::PROT_NONE) }.map_err(|err| {
        if err.raw_os_error() == Some(libc::ENOMEM) {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot install a tasklet stack guard page: {err}{}", out_of_memory_hint()),
            )
        } else {
            err
        }
    })
}

/// Whether the guard page at `addr` really guards: a kernel access to it must fail with
/// `EFAULT` (checked by `write(2)`-ing its first byte into a fresh pipe). The first
/// `MADV_GUARD_INSTALL` guard of the process is checked with it, because an emulator may
/// answer the advice with 0 and install nothing (qemu-user 7.2 does); overflow would then
/// corrupt the neighbouring slot silently instead of being reported.
fn guard_holds(addr: *const u8) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let (_read, write) = sys::pipe()?;
    // SAFETY: write(2) reads `addr` through the kernel, which checks it: a guard page is
    // reported as EFAULT, not a fault in this process.
    let res = unsafe { libc::write(write.as_raw_fd(), addr.cast(), 1) };
    let err = io::Error::last_os_error();
    match res {
        -1 if err.raw_os_error() == Some(libc::EFAULT) => Ok(true),
        -1 => Err(err),
        _ => Ok(false),
    }
}

/// Whether `TASKLET_MAX_MPROTECT_GUARDS` (see the module comment) is set and this process has
/// installed that many mprotect guards already; counts the guard about to be installed.
fn mprotect_guard_limit_reached() -> bool {
    use std::sync::atomic::AtomicUsize;
    use std::sync::OnceLock;
    static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
    static INSTALLED: AtomicUsize = AtomicUsize::new(0);
    let limit = LIMIT.get_or_init(|| std::env::var("TASKLET_MAX_MPROTECT_GUARDS").ok()?.parse().ok());
    limit.is_some_and(|limit| INSTALLED.fetch_add(1, Ordering::Relaxed) >= limit)
}

/// Explains `ENOMEM` from mmap/mprotect by its real cause: the address-space limit
/// (`RLIMIT_AS`) when the process is near it, the map count when the process's mappings
/// are near `vm.max_map_count` (Linux: `sys::mappings`), and exhausted memory otherwise.
fn out_of_memory_hint() -> String {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct it is given.
    let as_limit = if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
    {
        Some(limit.rlim_cur)
    } else {
        None
    };
    let mappings = sys::mappings();
    let max = sys::max_map_count();
    if let (Some((count, _)), Some(max)) = (mappings, max) {
        if count + 16 >= max {
            return out_of_mappings_hint(max);
        }
    }
    let mapped = mappings.map_or("?".to_owned(), |(_, bytes)| bytes.to_string());
    if let Some(limit) = as_limit {
        return format!(
            " (the address-space limit RLIMIT_AS = {limit} bytes is reached: the process maps {mapped} bytes; \
             raise it with `ulimit -v`, or use smaller tasklet stacks)"
        );
    }
    let counts = match (mappings, max) {
        (Some((count, _)), Some(max)) => format!(" in {count} mappings, vm.max_map_count = {max}"),
        _ => String::new(),
    };
    format!(
        " (out of memory or address space: the process maps {mapped} bytes{counts}; use smaller \
         tasklet stacks or fewer tasklets)"
    )
}

/// The hint when the process's mappings reached `vm.max_map_count` (`max`).
fn out_of_mappings_hint(max: impl std::fmt::Display) -> String {
    format!(
        " (the process has likely run out of memory mappings: vm.max_map_count = {max}, and each \
         mprotect guard page costs two; raise the limit with `sysctl -w vm.max_map_count=...`, \
         or run on Linux 6.13 or newer, where tasklet guard pages need no mapping)"
    )
}

// ---------------------------------------------------------------------------------------------
// Stack overflow reporting.
// ---------------------------------------------------------------------------------------------

/// What the SIGSEGV handler needs to know about a tasklet's stack; each tasklet carries one,
/// and the handler reads the running tasklet's through `scheduler::running_stack`.
#[derive(Clone, Copy)]
pub(crate) struct OverflowInfo {
    /// Guard page range of the running tasklet's stack (empty for the main tasklet).
    pub(crate) guard: (usize, usize),
    /// Usable stack bytes.
    pub(crate) size: usize,
    /// Tasklet id.
    pub(crate) id: u64,
    /// Tasklet name (a pointer into the tasklet, alive while it runs), or empty.
    pub(crate) name: (*const u8, usize),
}

/// The handlers that were installed before ours, one per signal of `sys::FAULT_SIGNALS`, to
/// chain to.
struct PrevActions([std::cell::UnsafeCell<libc::sigaction>; sys::FAULT_SIGNALS.len()]);
// SAFETY: written once inside `INSTALL.call_once`, before our handler can run, and only read
// afterwards.
unsafe impl Sync for PrevActions {}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise `PREV_ACTIONS`
                                                 // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask, a valid value.
const SIG_DFL_ACTION: std::cell::UnsafeCell<libc::sigaction> =
    std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() });
static PREV_ACTIONS: PrevActions = PrevActions([SIG_DFL_ACTION; sys::FAULT_SIGNALS.len()]);
static INSTALL: std::sync::Once = std::sync::Once::new();

/// Installs the process-wide fault handler (once, for each of `sys::FAULT_SIGNALS`: SIGSEGV,
/// and SIGBUS off Linux) and makes sure the calling thread has an alternate signal stack.
/// Returns the alternate stack it had to create, if any, which the caller frees with
/// [`free_altstack`] when the thread's scheduler goes away.
pub(crate) fn install_overflow_handler() -> Option<(*mut u8, usize)> {
    INSTALL.call_once(|| {
        for (signal, prev) in sys::FAULT_SIGNALS.into_iter().zip(&PREV_ACTIONS.0) {
            // SAFETY: plain sigaction calls with valid pointers; the previous action is stored
            // before our handler is installed, so the handler never reads it uninitialised.
            unsafe {
                if libc::sigaction(signal, ptr::null(), prev.get()) != 0 {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = segv_handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, ptr::null_mut()) != 0 {
                    log::warn!("tasklet: cannot install the stack overflow handler");
                }
            }
        }
    });
    ensure_altstack()
}

/// Gives the calling thread an alternate signal stack if it has none.
fn ensure_altstack() -> Option<(*mut u8, usize)> {
    // SAFETY: querying the current alternate stack with a valid out pointer.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaltstack(ptr::null(), &mut old) } != 0 || old.ss_flags & libc::SS_DISABLE == 0 {
        return None;
    }
    let page = page_size();
    let size = (libc::SIGSTKSZ * 4).max(64 * 1024);
    let len = size + page;
    let base = sys::map_anonymous(len).ok()?;
    // Guard the lowest page so a runaway handler faults instead of scribbling.
    let _ = install_guard(base, page);
    let stack = libc::stack_t {
        // SAFETY: one page into the mapping just made.
        ss_sp: unsafe { base.add(page) }.cast(),
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: `stack` describes memory we own for the thread's lifetime (freed by the caller).
    if unsafe { libc::sigaltstack(&stack, ptr::null_mut()) } != 0 {
        // SAFETY: not installed, so nothing refers to it.
        let _ = unsafe { sys::unmap(base, len) };
        return None;
    }
    Some((base, len))
}

/// Disables and frees an alternate signal stack made by [`install_overflow_handler`].
pub(crate) fn free_altstack((base, len): (*mut u8, usize)) {
    let disable = libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
    // SAFETY: disabling the alternate stack of this thread before freeing it; the thread is not
    // in a signal handler (we are in its scheduler's teardown).
    unsafe {
        if libc::sigaltstack(&disable, ptr::null_mut()) == 0 {
            let _ = sys::unmap(base, len);
        }
    }
}

/// Fault handler (SIGSEGV, and SIGBUS off Linux): reports an overflow of the running tasklet's
/// stack, else chains.
extern "C" fn segv_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(running) = crate::scheduler::running_stack() {
        if running.guard.0 <= addr && addr < running.guard.1 {
            report_overflow(running);
        }
    }
    // Not ours: hand the fault to whoever was there before.
    let Some(slot) = sys::FAULT_SIGNALS.iter().position(|&s| s == sig) else { return };
    // SAFETY: the previous action was written before this handler was installed for `sig` and
    // is never written again.
    let prev = unsafe { &*PREV_ACTIONS.0[slot].get() };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction runs again and the
        // kernel delivers SIGSEGV with its default effect (core dump), as if we were not here.
        // SAFETY: installing a zeroed (SIG_DFL) action.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            sys::raw::sigaction(sig, &dfl, ptr::null_mut());
        }
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered as a three-argument SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was registered as a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Writes "tasklet 'name' (id N) has overflowed its K KiB stack" and aborts. Async-signal-safe:
/// formats into a buffer on the signal stack and calls only `write` and `abort`.
fn report_overflow(info: &OverflowInfo) -> ! {
    let mut buf = [0u8; 512];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    put(b"\ntasklet ");
    if info.name.1 > 0 {
        put(b"'");
        // SAFETY: the name belongs to the running tasklet, which is alive while it runs.
        put(unsafe { std::slice::from_raw_parts(info.name.0, info.name.1.min(200)) });
        put(b"' ");
    }
    put(b"(id ");
    put(fmt_u64(info.id, &mut [0u8; 20]));
    put(b") has overflowed its ");
    put(fmt_u64((info.size / 1024) as u64, &mut [0u8; 20]));
    put(b" KiB stack\nfatal runtime error: stack overflow, aborting\n");
    // SAFETY: write(2) and abort(3) are async-signal-safe; the buffer is valid for `len` bytes.
    unsafe {
        sys::raw::write(2, buf.as_ptr().cast(), len);
        sys::raw::abort();
    }
}

/// Formats `n` in decimal into `out` without allocating.
fn fmt_u64(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &out[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_u64_formats_decimal() {
        assert_eq!(fmt_u64(0, &mut [0; 20]), b"0");
        assert_eq!(fmt_u64(256, &mut [0; 20]), b"256");
        assert_eq!(fmt_u64(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }

    #[test]
    fn pool_reuses_and_trims() {
        let mut pool = StackPool::default();
        let size = usable_size(64 * 1024).unwrap();
        let stacks: Vec<Stack> = (0..300).map(|_| pool.take(size).unwrap()).collect();
        let carved = pool.carved();
        let tops: Vec<usize> = stacks.iter().map(Stack::top).collect();
        for s in stacks {
            pool.release(s);
        }
        // This epoch used 300: those stay warm, the rest of the region is trimmed.
        assert_eq!(pool.trim(), carved - 300);
        // An idle epoch: all but the hot ones go, once.
        assert_eq!(pool.trim(), 300 - HOT_STACKS);
        assert_eq!(pool.trim(), 0);
        // A steady loop of 300 reuses the same stacks and keeps them warm.
        let again: Vec<Stack> = (0..300).map(|_| pool.take(size).unwrap()).collect();
        assert_eq!(pool.carved(), carved, "stacks are reused, not carved again");
        let mut again_tops: Vec<usize> = again.iter().map(Stack::top).collect();
        again_tops.sort_unstable();
        let mut tops = tops;
        tops.sort_unstable();
        assert_eq!(again_tops, tops);
        for s in again {
            pool.release(s);
        }
        assert_eq!(pool.trim(), 0);
        assert_eq!(pool.classes[0].free.len() - pool.classes[0].clean, 300);
    }

    /// Reservations promise free slots without taking them: a slot is taken at the first run,
    /// the most recently released one (warm), and a reservation that is dropped frees its
    /// promise.
    #[test]
    fn reservations_promise_slots_and_take_the_warm_one() {
        let mut pool = StackPool::default();
        let size = usable_size(64 * 1024).unwrap();
        for _ in 0..1000 {
            pool.reserve(size).unwrap();
        }
        assert!(pool.carved() >= 1000, "every reservation has a slot");
        let carved = pool.carved();
        let first = pool.take_reserved(size);
        let warm = first.top();
        pool.release(first);
        for _ in 0..998 {
            let s = pool.take_reserved(size);
            assert_eq!(s.top(), warm, "the slot released last is taken next");
            pool.release(s);
        }
        pool.unreserve(size);
        assert_eq!(pool.classes[0].reserved, 0);
        assert_eq!(pool.carved(), carved);
        pool.reserve(size).unwrap();
        assert_eq!(pool.carved(), carved, "free slots are promised again without carving");
        assert_eq!(pool.take_reserved(size).top(), warm);
    }

    /// Under qemu-user `MADV_GUARD_INSTALL` returned 0 and installed nothing: stacks had no
    /// guard at all and an overflow ran into the next slot. Whichever mechanism this process
    /// ends up with, a stack's guard page refuses kernel access, and the check itself tells a
    /// guard from an ordinary page.
    #[test]
    fn guard_pages_refuse_kernel_access_even_where_madv_guard_install_is_a_no_op() {
        let mut pool = StackPool::default();
        let stack = pool.take(usable_size(MIN_STACK_SIZE).unwrap()).unwrap();
        assert!(guard_holds(stack.guard().0 as *const u8).unwrap(), "the guard page can be read");
        assert!(!guard_holds((stack.top() - page_size()) as *const u8).unwrap(), "the stack cannot be read");
        pool.release(stack);
    }

    /// Guards installed in batches (`process_madvise`, one call for a region's slots after the
    /// first) guard every slot, in every region, and the stacks between them stay usable.
    #[test]
    fn every_slot_of_a_region_guarded_in_one_batch_refuses_access_below_its_stack() {
        let mut pool = StackPool::default();
        let size = usable_size(MIN_STACK_SIZE).unwrap();
        // 16 + 32 + 64 + 128 slots: four regions, each guarded in one batch where possible.
        let stacks: Vec<Stack> = (0..240).map(|_| pool.take(size).unwrap()).collect();
        for (i, s) in stacks.iter().enumerate() {
            assert!(guard_holds(s.guard().0 as *const u8).unwrap(), "slot {i} has no guard");
            assert!(!guard_holds(s.guard().1 as *const u8).unwrap(), "slot {i}'s stack is guarded");
        }
        for s in stacks {
            pool.release(s);
        }
    }

    /// Whether the page at `addr` is resident (`mincore`).
    #[cfg(target_os = "linux")]
    fn resident(addr: usize) -> bool {
        let mut vec = 0u8;
        // SAFETY: one page-aligned page of a mapping we own; `vec` has room for its byte.
        let res = unsafe { libc::mincore(addr as *mut libc::c_void, page_size(), &mut vec) };
        assert_eq!(res, 0, "mincore: {}", io::Error::last_os_error());
        vec & 1 != 0
    }

    /// Pooled and trimmed slots keep their guard pages (a trimmed stack still refuses access
    /// below its limit), trimmed slots are marked fresh, and taking a fresh slot makes its top
    /// page resident before anything is written there (where `MADV_POPULATE_WRITE` exists),
    /// while a warm slot is taken as it is.
    #[cfg(target_os = "linux")]
    #[test]
    fn trimmed_slots_keep_their_guard_and_fresh_ones_are_populated_when_taken() {
        let page = page_size();
        // Whether this kernel populates at all (Linux 5.14; not under qemu-user).
        let probe = sys::map_anonymous(page).unwrap();
        // SAFETY: a fresh private page of our own.
        let populates = unsafe { sys::populate_page(probe, page) } && resident(probe as usize);
        // SAFETY: mapped above, used no more.
        unsafe { sys::unmap(probe, page) }.unwrap();

        let mut pool = StackPool::default();
        let size = usable_size(MIN_STACK_SIZE).unwrap();
        let first = pool.take(size).unwrap();
        assert_eq!(resident(first.top() - page), populates, "a fresh slot's top page");
        let stacks: Vec<Stack> =
            std::iter::once(first).chain((1..300).map(|_| pool.take(size).unwrap())).collect();
        for s in &stacks {
            // SAFETY: the top byte of a stack this test owns.
            unsafe { *((s.top() - 1) as *mut u8) = 1 };
        }
        for s in stacks {
            pool.release(s);
        }
        pool.trim();
        assert_eq!(pool.trim(), 300 - HOT_STACKS, "an idle epoch trims all but the hot stacks");
        let class = &pool.classes[0];
        let fresh = class.free.iter().filter(|&&e| e & FRESH != 0).count();
        assert_eq!(fresh, class.free.len() - HOT_STACKS, "every slot but the hot ones is fresh");
        for (i, &entry) in class.free.iter().enumerate().step_by(7) {
            let limit = entry & !FRESH;
            assert!(guard_holds(limit as *const u8).unwrap(), "slot {i}: its guard page is gone");
            if entry & FRESH != 0 {
                assert!(!resident(limit + page + size - page), "slot {i}: trimmed, yet resident");
            }
        }
        // The hot ones come back warm, then the trimmed ones, populated again.
        let again: Vec<Stack> = (0..300).map(|_| pool.take(size).unwrap()).collect();
        for (i, s) in again.iter().enumerate() {
            if i < HOT_STACKS || populates {
                assert!(resident(s.top() - page), "slot {i} taken: neither warm nor populated");
            }
            assert!(guard_holds(s.guard().0 as *const u8).unwrap(), "a reused slot keeps its guard");
        }
        for s in again {
            pool.release(s);
        }
    }

    #[test]
    fn usable_size_rounds_and_rejects() {
        assert_eq!(usable_size(1).unwrap(), MIN_STACK_SIZE);
        assert_eq!(usable_size(MIN_STACK_SIZE + 1).unwrap(), MIN_STACK_SIZE + page_size());
        let err = usable_size(MAX_STACK_SIZE + 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
