//! The console's input path does not allocate: host input is buffered in a fixed ring and the
//! guest's reads of the data register refill the UART FIFO from it without a heap allocation.
//! Counted with a global allocator that counts the allocations of the test's own thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cpevisor_vmm::devices::serial::{InputState, Serial, INPUT_BUFFER_LIMIT};
use cpevisor_vmm::devices::{BusDevice, IrqLine};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without a destructor: safe to touch inside the allocator.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is passed on unchanged to the system allocator; the wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from this allocator with `layout`, as `realloc` requires.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocations, bytes) made by this thread while `f` runs.
fn counted<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let (a, b) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    let allocs = ALLOCS.load(Ordering::Relaxed) - a;
    let bytes = BYTES.load(Ordering::Relaxed) - b;
    (r, allocs, bytes)
}

struct NoIrq;
impl IrqLine for NoIrq {
    fn trigger(&self) -> io::Result<()> {
        Ok(())
    }
}

const LSR: u64 = 5;
const LSR_DATA_READY: u8 = 1;

fn read_reg(serial: &mut Serial, offset: u64) -> u8 {
    let mut b = [0u8];
    serial.read(offset, &mut b);
    b[0]
}

#[test]
fn console_input_and_guest_reads_do_not_allocate() {
    let (mut host, guest_side) = UnixStream::pair().unwrap();
    guest_side.set_nonblocking(true).unwrap();
    let mut serial = Serial::with_io(
        Box::new(io::sink()),
        Some(File::from(OwnedFd::from(guest_side))),
        Arc::new(NoIrq),
    );
    // Warm-up: the UART's own 64-byte FIFO (vm-superio's) allocates on its first fill; it is
    // not this path's to count.
    host.write_all(&[0u8; 64]).unwrap();
    assert_eq!(serial.process_input(), InputState::Open);
    while read_reg(&mut serial, LSR) & LSR_DATA_READY != 0 {
        read_reg(&mut serial, 0);
    }
    // The UART FIFO (64 bytes) plus the whole host-side ring.
    let sent: Vec<u8> = (0..INPUT_BUFFER_LIMIT + 64)
        .map(|i| (i % 251) as u8)
        .collect();
    host.write_all(&sent).unwrap();

    let (_, in_allocs, in_bytes) = counted(|| {
        for _ in 0..sent.len().div_ceil(1024) {
            assert_eq!(serial.process_input(), InputState::Open);
        }
    });
    let mut got = Vec::with_capacity(sent.len());
    let (_, read_allocs, read_bytes) = counted(|| {
        while read_reg(&mut serial, LSR) & LSR_DATA_READY != 0 {
            got.push(read_reg(&mut serial, 0));
        }
    });
    eprintln!(
        "console input of {} bytes: {in_allocs} allocations ({in_bytes} bytes); \
         guest reads: {read_allocs} allocations ({read_bytes} bytes)",
        sent.len()
    );
    assert_eq!(got, sent);
    assert_eq!(serial.dropped_input(), 0);
    assert_eq!(in_allocs, 0, "buffering input allocated");
    assert_eq!(read_allocs, 0, "guest reads allocated");
}
