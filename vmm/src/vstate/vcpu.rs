//! vCPU threads: the KVM_RUN loop, exits dispatched to the device buses, guest system events
//! (power-off, reset, crash), and pause/resume/stop driven from the main thread.
//!
//! A vCPU inside KVM_RUN is interrupted with a real-time signal whose handler sets the thread's
//! `kvm_run.immediate_exit`: a kick that lands between the state check and KVM_RUN still makes
//! KVM_RUN return at once, so no kick is lost.

use std::cell::Cell;
use std::fmt;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::bus::Bus;
use vmm_sys_util::eventfd::EventFd;

/// What the vCPU loop needs from the device side. Returns false when no device claims the
/// address: reads then see all ones / zeros as hardware would, and the access is otherwise ignored.
pub trait ExitHandler: Send + Sync {
    /// Serves an MMIO read; false if nothing is mapped there.
    fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool;
    /// Serves an MMIO write; false if nothing is mapped there.
    fn mmio_write(&self, addr: u64, data: &[u8]) -> bool;
    /// Serves a port read; false if nothing is mapped there.
    fn pio_read(&self, port: u16, data: &mut [u8]) -> bool;
    /// Serves a port write; false if nothing is mapped there.
    fn pio_write(&self, port: u16, data: &[u8]) -> bool;
}

/// The MMIO and port-I/O buses the vCPUs dispatch exits to: the `ExitHandler` the builder wires
/// (and the host KVM tests reuse).
pub struct Buses {
    /// Guest-physical MMIO.
    pub mmio: Bus,
    /// x86 port I/O (empty on aarch64).
    pub pio: Bus,
}

impl ExitHandler for Buses {
    fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.mmio.read(addr, data)
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.mmio.write(addr, data)
    }
    fn pio_read(&self, port: u16, data: &mut [u8]) -> bool {
        self.pio.read(port as u64, data)
    }
    fn pio_write(&self, port: u16, data: &[u8]) -> bool {
        self.pio.write(port as u64, data)
    }
}

/// Why the VM stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest powered off (PSCI SYSTEM_OFF, x86 HLT with no interrupt controller, ...).
    PowerOff,
    /// The guest asked for a reset (PSCI SYSTEM_RESET, i8042 reset, x86 triple fault).
    Reset,
    /// The guest crashed or KVM could not run it.
    Crash(String),
    /// The host asked the VM to stop (SIGTERM, control socket `stop`).
    Stopped,
    /// The host asked the guest to shut down (power button) and it did not power off within
    /// this many milliseconds, so the VM was stopped.
    ShutdownForced(u32),
}

impl fmt::Display for VmEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmEvent::PowerOff => write!(f, "guest power-off"),
            VmEvent::Reset => write!(f, "guest reset"),
            VmEvent::Crash(s) => write!(f, "guest crash: {s}"),
            VmEvent::Stopped => write!(f, "stopped by the host"),
            VmEvent::ShutdownForced(ms) => write!(
                f,
                "stopped by the host: the guest did not power off within {ms} ms"
            ),
        }
    }
}

/// What the vCPUs are doing, as the control socket reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Running guest code.
    Running,
    /// Held outside KVM_RUN until resumed.
    Paused,
    /// Leaving: the VM is ending.
    Stopping,
}

impl RunState {
    /// The name the control socket uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Stopping => "stopping",
        }
    }
}

struct Shared {
    state: RunState,
    /// vCPU threads currently parked in the paused state.
    parked: usize,
    /// The first event wins; later ones (other vCPUs racing to report) are dropped.
    event: Option<VmEvent>,
}

/// State shared by the main thread and the vCPU threads.
pub struct VcpuControl {
    shared: Mutex<Shared>,
    changed: Condvar,
    /// Written once when an event is recorded, so an event loop can poll for it.
    event_fd: EventFd,
    /// As std names them: a `c_ulong` on every Linux (libc's `pthread_t` is a pointer on musl,
    /// which is not `Send`).
    threads: Mutex<Vec<std::os::unix::thread::RawPthread>>,
    count: usize,
}

impl VcpuControl {
    /// Control for `count` vCPUs, running.
    pub fn new(count: usize) -> std::io::Result<Arc<VcpuControl>> {
        Ok(Arc::new(VcpuControl {
            shared: Mutex::new(Shared {
                state: RunState::Running,
                parked: 0,
                event: None,
            }),
            changed: Condvar::new(),
            event_fd: EventFd::new(libc::EFD_NONBLOCK)?,
            threads: Mutex::new(Vec::new()),
            count,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A vCPU thread never panics while holding the lock; if one did, the data is still sound.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fd that becomes readable once a `VmEvent` is recorded.
    pub fn event_fd(&self) -> &EventFd {
        &self.event_fd
    }

    /// The current run state.
    pub fn state(&self) -> RunState {
        self.lock().state
    }

    /// How the VM ended, once a vCPU or the VMM reported it.
    pub fn event(&self) -> Option<VmEvent> {
        self.lock().event.clone()
    }

    /// Records why the VM stops (first caller wins) and tells every vCPU to leave its loop.
    pub fn report(&self, event: VmEvent) {
        {
            let mut s = self.lock();
            if s.event.is_none() {
                s.event = Some(event);
                let _ = self.event_fd.write(1);
            }
            s.state = RunState::Stopping;
        }
        self.changed.notify_all();
        self.kick_all();
    }

    /// Parks every vCPU outside KVM_RUN; returns once all are parked (or the VM is stopping).
    pub fn pause(&self) -> RunState {
        {
            let mut s = self.lock();
            if s.state != RunState::Running {
                return s.state;
            }
            s.state = RunState::Paused;
        }
        self.kick_all();
        let mut s = self.lock();
        while s.state == RunState::Paused && s.parked < self.count {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.state
    }

    /// Lets paused vCPUs run again; returns the new state.
    pub fn resume(&self) -> RunState {
        let mut s = self.lock();
        if s.state == RunState::Paused {
            s.state = RunState::Running;
            self.changed.notify_all();
        }
        s.state
    }

    /// Test hook: a vCPU thread makes a forbidden syscall as soon as it leaves KVM_RUN.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn test_forbidden_syscall(&self) {
        TEST_FORBIDDEN_SYSCALL.store(true, Ordering::Relaxed);
        self.kick_all();
    }

    /// Test hook: a vCPU thread, as soon as it leaves KVM_RUN, allocates 1 MiB in 4 KiB pieces
    /// from its malloc arena and frees it all, so the arena trims its heap, as a vCPU thread's
    /// device work (disk requests, packets) does.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn test_heap_churn(&self) {
        TEST_HEAP_CHURN.store(true, Ordering::Relaxed);
        self.kick_all();
    }

    fn kick_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for &t in threads.iter() {
            // SAFETY: `t` is a vCPU thread that is joined only after `VcpuControl` stops
            // kicking (the builder joins after the last `report`); pthread_kill on a live
            // thread with a handled signal has no other effect than running the handler.
            // The cast is the identity on glibc, to musl's pointer type there.
            #[allow(clippy::unnecessary_cast)]
            unsafe {
                libc::pthread_kill(t as libc::pthread_t, kick_signal());
            }
        }
    }

    /// Called by a vCPU thread before each KVM_RUN. Blocks while paused; false means leave.
    fn wait_runnable(&self) -> bool {
        let mut s = self.lock();
        loop {
            match s.state {
                RunState::Running => return true,
                RunState::Stopping => return false,
                RunState::Paused => {
                    s.parked += 1;
                    self.changed.notify_all();
                    s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                    s.parked -= 1;
                }
            }
        }
    }
}

/// The real-time signal that kicks a vCPU out of KVM_RUN (the seccomp filters allow it).
pub(crate) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, for the kick signal handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only a const-initialized thread-local read and a byte store: async-signal-safe.
    let p = IMMEDIATE_EXIT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: `p` points into this thread's kvm_run mapping, set by the vCPU loop while the
        // VcpuFd (and so the mapping) is alive, and cleared before it is dropped.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; we set a handler that is async-signal-safe and
        // no SA_RESTART, so KVM_RUN returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
                result = Err(std::io::Error::last_os_error());
            }
        }
    });
    result
}

/// Set once the boot vCPU entered KVM_RUN, so the first-instruction line is logged once per
/// process. Only vCPU 0 counts: secondaries may enter KVM_RUN earlier but stay powered off (arm64
/// PSCI) or wait for SIPI (x86) until the guest starts them.
static FIRST_RUN_LOGGED: AtomicBool = AtomicBool::new(false);

/// Run by each vCPU thread before its first KVM_RUN (a confined VMM installs the thread's
/// seccomp filter and waits for the main thread's). An error ends the VM with that message.
pub type BeforeRun = Arc<dyn Fn(usize) -> Result<(), String> + Send + Sync>;

/// Starts one thread per vCPU. Index 0 is the boot vCPU.
pub fn start_vcpus(
    vcpus: Vec<VcpuFd>,
    handler: Arc<dyn ExitHandler>,
    control: Arc<VcpuControl>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    start_vcpus_with(vcpus, handler, control, None)
}

/// `start_vcpus`, with `before_run` run first on each vCPU thread.
pub fn start_vcpus_with(
    vcpus: Vec<VcpuFd>,
    handler: Arc<dyn ExitHandler>,
    control: Arc<VcpuControl>,
    before_run: Option<BeforeRun>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    install_kick_handler()?;
    let mut handles = Vec::with_capacity(vcpus.len());
    for (id, fd) in vcpus.into_iter().enumerate() {
        let handler = handler.clone();
        let ctl = control.clone();
        let before = before_run.clone();
        let h = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            // Device emulation runs on this thread; the stack is reserved, not resident, so a
            // generous size costs only the pages actually touched.
            .stack_size(512 * 1024)
            .spawn(move || {
                if let Some(Err(e)) = before.map(|f| f(id)) {
                    ctl.report(VmEvent::Crash(format!("vcpu {id}: {e}")));
                    return;
                }
                vcpu_loop(id, fd, &*handler, &ctl)
            })?;
        control
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h.as_pthread_t());
        handles.push(h);
    }
    Ok(handles)
}

/// Stops all vCPUs (if not already stopping) and joins their threads.
pub fn stop_vcpus(control: &VcpuControl, handles: Vec<JoinHandle<()>>) {
    control.report(VmEvent::Stopped);
    for h in handles {
        let _ = h.join();
    }
    control
        .threads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}

fn vcpu_loop(id: usize, mut fd: VcpuFd, handler: &dyn ExitHandler, ctl: &VcpuControl) {
    let ptr = &mut fd.get_kvm_run().immediate_exit as *mut u8;
    IMMEDIATE_EXIT.with(|c| c.set(ptr));
    while ctl.wait_runnable() {
        if id == 0 && !FIRST_RUN_LOGGED.swap(true, Ordering::Relaxed) {
            crate::log(&format!(
                "first instruction: vcpu {id} entering KVM_RUN at {:.3} ms",
                crate::elapsed_ms()
            ));
        }
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        if TEST_FORBIDDEN_SYSCALL.swap(false, Ordering::Relaxed) {
            crate::log(&format!(
                "test hook: vcpu {id}: forbidden syscall returned {}",
                crate::confine::forbidden_syscall()
            ));
        }
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        if TEST_HEAP_CHURN.swap(false, Ordering::Relaxed) {
            let pieces: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 4096]).collect();
            let sum: usize = pieces.iter().map(|p| usize::from(p[0])).sum();
            drop(pieces);
            crate::log(&format!("test hook: vcpu {id}: heap churned ({sum})"));
        }
        let event = match fd.run() {
            Ok(exit) => handle_exit(id, exit, handler),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                fd.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(VmEvent::Crash(format!("vcpu {id}: KVM_RUN failed: {e}"))),
        };
        if let Some(ev) = event {
            ctl.report(ev);
        }
    }
    IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
}

/// Test hook (feature `test-hooks`, debug builds): the next vCPU to leave KVM_RUN makes a
/// forbidden syscall (`VcpuControl::test_forbidden_syscall` sets it and kicks).
#[cfg(all(feature = "test-hooks", debug_assertions))]
static TEST_FORBIDDEN_SYSCALL: AtomicBool = AtomicBool::new(false);

/// Test hook (feature `test-hooks`, debug builds): the next vCPU to leave KVM_RUN churns its
/// heap (`VcpuControl::test_heap_churn`).
#[cfg(all(feature = "test-hooks", debug_assertions))]
static TEST_HEAP_CHURN: AtomicBool = AtomicBool::new(false);

/// KVM_SYSTEM_EVENT types (linux/kvm.h).
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;
const SYSTEM_EVENT_CRASH: u32 = 3;

fn handle_exit(id: usize, exit: VcpuExit<'_>, bus: &dyn ExitHandler) -> Option<VmEvent> {
    match exit {
        VcpuExit::IoOut(port, data) => {
            bus.pio_write(port, data);
            None
        }
        VcpuExit::IoIn(port, data) => {
            if !bus.pio_read(port, data) {
                data.fill(0xff);
            }
            None
        }
        VcpuExit::MmioRead(addr, data) => {
            if !bus.mmio_read(addr, data) {
                data.fill(0);
            }
            None
        }
        VcpuExit::MmioWrite(addr, data) => {
            bus.mmio_write(addr, data);
            None
        }
        VcpuExit::Hlt => Some(VmEvent::PowerOff),
        VcpuExit::Shutdown => Some(VmEvent::Reset),
        VcpuExit::SystemEvent(kind, _) => Some(match kind {
            SYSTEM_EVENT_SHUTDOWN => VmEvent::PowerOff,
            SYSTEM_EVENT_RESET => VmEvent::Reset,
            SYSTEM_EVENT_CRASH => VmEvent::Crash(format!("vcpu {id}: guest reported a crash")),
            other => VmEvent::Crash(format!("vcpu {id}: unknown system event {other}")),
        }),
        VcpuExit::FailEntry(reason, cpu) => Some(VmEvent::Crash(format!(
            "vcpu {id}: KVM entry failed, hardware reason {reason:#x} on cpu {cpu}"
        ))),
        VcpuExit::InternalError => Some(VmEvent::Crash(format!("vcpu {id}: KVM internal error"))),
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => None,
        other => Some(VmEvent::Crash(format!(
            "vcpu {id}: unexpected exit {other:?}"
        ))),
    }
}
