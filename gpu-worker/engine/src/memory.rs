//! Measured CPU memory: an `OrtAllocator` registered with the process-wide ONNX
//! Runtime environment that counts the bytes ONNX Runtime takes through it.
//! Sessions built with `OrtOptions::metered` take their CPU tensors from it
//! (activations, outputs, and the weights ONNX Runtime copies), so the batcher
//! can size mini-batches from the peak of a real run and can force an
//! allocation failure with a limit.
//!
//! The counters cover what ONNX Runtime asks of this allocator, not the small
//! header it adds, nor what ONNX Runtime takes elsewhere (weights it uses in
//! place, such as convnet.onnx's convolution kernels, or malloc calls inside
//! kernels). For batch sizing, read the peak above the resting `in_use`.

use super::{EngineError, ort_environment};
use ort::AsPointer;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::RunOptions;
use ort::sys::{OrtAllocator, OrtMemoryInfo};
use std::alloc::Layout;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Alignment of every block handed to ONNX Runtime. Its own CPU allocator
/// aligns to MLAS's preferred alignment, at most 64 bytes (AVX-512 lines).
const ALIGN: usize = 64;
/// Room before each block for its size, kept at `ALIGN` so the block stays
/// aligned.
const HEADER: usize = ALIGN;

const NO_LIMIT: u64 = u64::MAX;

/// Byte counters of the metered CPU allocator. All operations are lock-free;
/// the allocator is called from ONNX Runtime's threads. `in_use` and `peak`
/// count the bytes ONNX Runtime asked for.
#[derive(Debug)]
pub struct MemoryMeter {
    in_use: AtomicU64,
    peak: AtomicU64,
    limit: AtomicU64,
    refused: AtomicBool,
    /// Never reset: lets a run tell whether a refusal happened while it ran
    /// even when someone else called `reset_peak` meanwhile.
    refusals: AtomicU64,
}

impl MemoryMeter {
    const fn new() -> Self {
        MemoryMeter {
            in_use: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            limit: AtomicU64::new(NO_LIMIT),
            refused: AtomicBool::new(false),
            refusals: AtomicU64::new(0),
        }
    }

    /// Bytes ONNX Runtime holds through this allocator now.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Acquire)
    }

    /// Highest `in_use` since the last `reset_peak`.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }

    /// Starts a new measurement: peak := in_use, and forgets refusals.
    pub fn reset_peak(&self) {
        self.refused.store(false, Ordering::Release);
        self.peak.store(self.in_use(), Ordering::Release);
    }

    /// Caps `in_use`: an allocation that takes it over the limit is refused,
    /// and the metered runs in flight fail with `EngineError::OutOfMemory`.
    ///
    /// ONNX Runtime does not check its allocator's result for null (kernels
    /// would write through it), so a refused block is still handed out and
    /// the runs are stopped with their terminate flag, which ONNX Runtime
    /// checks before each operator. `in_use` can therefore pass the limit by
    /// the buffers of the operator that was refused.
    pub fn set_limit(&self, limit: Option<u64>) {
        self.limit
            .store(limit.unwrap_or(NO_LIMIT), Ordering::Release);
    }

    pub fn limit(&self) -> Option<u64> {
        match self.limit.load(Ordering::Acquire) {
            NO_LIMIT => None,
            l => Some(l),
        }
    }

    /// Whether an allocation was refused since `reset_peak`.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// Monotonic count of refusals, for callers that compare before and after
    /// a run.
    pub(crate) fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Acquire)
    }

    /// Books `size` bytes; false when they take `in_use` over the limit (they
    /// stay booked: the caller still hands the memory out).
    fn book(&self, size: u64) -> bool {
        let now = self.in_use.fetch_add(size, Ordering::AcqRel) + size;
        self.peak.fetch_max(now, Ordering::AcqRel);
        if now > self.limit.load(Ordering::Acquire) {
            self.refuse();
            return false;
        }
        true
    }

    fn refuse(&self) {
        self.refusals.fetch_add(1, Ordering::AcqRel);
        self.refused.store(true, Ordering::Release);
    }

    fn release(&self, size: u64) {
        self.in_use.fetch_sub(size, Ordering::AcqRel);
    }
}

/// What ONNX Runtime sees: the C allocator table first, so the `*mut
/// OrtAllocator` it passes back to the callbacks is also a pointer to this
/// struct.
#[repr(C)]
struct MeteredAllocator {
    table: OrtAllocator,
    info: *const OrtMemoryInfo,
    meter: MemoryMeter,
    /// Metered runs in flight, stopped when an allocation is refused.
    runs: Mutex<Vec<(u64, Arc<RunOptions>)>>,
    next_run: AtomicU64,
}

// SAFETY: the table holds plain function pointers; `info` points to a
// MemoryInfo leaked for the life of the process that ONNX Runtime only reads;
// the rest is atomics and a mutex.
unsafe impl Send for MeteredAllocator {}
unsafe impl Sync for MeteredAllocator {}

static CPU_ALLOCATOR: OnceLock<Result<&'static MeteredAllocator, EngineError>> = OnceLock::new();

/// The meter of the CPU allocator that metered sessions use. The first call
/// registers the allocator with the ONNX Runtime environment; sessions built
/// before that cannot use it, so `OrtFactory` calls this before building one.
pub fn cpu_meter() -> Result<&'static MemoryMeter, EngineError> {
    cpu_allocator().map(|a| &a.meter)
}

fn cpu_allocator() -> Result<&'static MeteredAllocator, EngineError> {
    CPU_ALLOCATOR
        .get_or_init(register_cpu_allocator)
        .as_ref()
        .copied()
        .map_err(Clone::clone)
}

/// A metered run in flight. Pass `options()` to the session run; dropping it
/// ends the watch.
pub(crate) struct WatchedRun {
    allocator: &'static MeteredAllocator,
    id: u64,
    options: Arc<RunOptions>,
    refusals_at_start: u64,
}

impl WatchedRun {
    pub(crate) fn start() -> Result<Self, EngineError> {
        let allocator = cpu_allocator()?;
        let options = Arc::new(
            RunOptions::new().map_err(|e| EngineError::Runtime(format!("run options: {e}")))?,
        );
        let id = allocator.next_run.fetch_add(1, Ordering::Relaxed);
        allocator.runs().push((id, Arc::clone(&options)));
        Ok(WatchedRun {
            allocator,
            id,
            options,
            refusals_at_start: allocator.meter.refusals(),
        })
    }

    pub(crate) fn options(&self) -> &RunOptions {
        &self.options
    }

    pub(crate) fn meter(&self) -> &'static MemoryMeter {
        &self.allocator.meter
    }

    /// Whether any allocation was refused since this run started (its own or
    /// a concurrent metered run's: both are over the budget).
    pub(crate) fn refused(&self) -> bool {
        self.allocator.meter.refusals() != self.refusals_at_start
    }
}

impl Drop for WatchedRun {
    fn drop(&mut self) {
        self.allocator.runs().retain(|(id, _)| *id != self.id);
    }
}

impl MeteredAllocator {
    fn runs(&self) -> MutexGuard<'_, Vec<(u64, Arc<RunOptions>)>> {
        // The list stays consistent whatever panicked while holding it.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop_runs(&self) {
        for (_, options) in self.runs().iter() {
            // Failing to stop a run only lets it finish; `WatchedRun::refused`
            // still reports it.
            let _ = options.terminate();
        }
    }
}

fn register_cpu_allocator() -> Result<&'static MeteredAllocator, EngineError> {
    let env = ort_environment()?;
    let runtime = |what: &str, e: ort::Error| {
        EngineError::Runtime(format!("metered CPU allocator: {what}: {e}"))
    };
    // Same device key as the CPU execution provider's allocator (CPU, id 0,
    // default memory), so `session.use_env_allocators` replaces it. ONNX
    // Runtime refuses to register arena-type allocators.
    let info = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::Default,
    )
    .map_err(|e| runtime("memory info", e))?;
    // ONNX Runtime keeps the allocator (and asks it for its info) for as long
    // as the environment lives, which is the whole process.
    let info: &'static MemoryInfo<'static> = Box::leak(Box::new(info));
    let allocator: &'static MeteredAllocator = Box::leak(Box::new(MeteredAllocator {
        table: OrtAllocator {
            Alloc: Some(metered_alloc),
            Free: Some(metered_free),
            Info: Some(metered_info),
            Reserve: Some(metered_reserve),
            // SAFETY: `default` only fills in the API version and empty slots.
            ..unsafe { OrtAllocator::default() }
        },
        info: info.ptr(),
        meter: MemoryMeter::new(),
        runs: Mutex::new(Vec::new()),
        next_run: AtomicU64::new(0),
    }));
    let table = std::ptr::from_ref(&allocator.table).cast_mut();
    // SAFETY: both pointers are valid for the rest of the process; ONNX
    // Runtime only reads the table (it takes `*mut` by C convention).
    let status = unsafe { (ort::api().RegisterAllocator)(env.ptr().cast_mut(), table) };
    // SAFETY: the status comes straight from the C API and is consumed once.
    unsafe { ort::Error::result_from_status(status) }.map_err(|e| runtime("register", e))?;
    Ok(allocator)
}

/// Recovers our struct from the table pointer ONNX Runtime passes back.
///
/// # Safety
/// `this` must be the table of a `MeteredAllocator` that lives forever.
unsafe fn allocator_of(this: *const OrtAllocator) -> &'static MeteredAllocator {
    // SAFETY: `table` is the first field of a #[repr(C)] struct leaked in
    // `register_cpu_allocator`; only that table is ever registered.
    unsafe { &*this.cast::<MeteredAllocator>() }
}

fn layout_for(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, ALIGN).ok()
}

unsafe extern "system" fn metered_alloc(this: *mut OrtAllocator, size: usize) -> *mut c_void {
    // SAFETY: ONNX Runtime calls back with the table we registered.
    let allocator = unsafe { allocator_of(this) };
    let meter = &allocator.meter;
    let Some(layout) = layout_for(size) else {
        meter.refuse();
        allocator.stop_runs();
        return std::ptr::null_mut();
    };
    let within_limit = meter.book(size as u64);
    // SAFETY: the layout is never zero-sized (it includes the header).
    let base = unsafe { std::alloc::alloc(layout) };
    if base.is_null() {
        meter.release(size as u64);
        meter.refuse();
        allocator.stop_runs();
        return std::ptr::null_mut();
    }
    if !within_limit {
        allocator.stop_runs();
    }
    // SAFETY: the block has HEADER bytes before the part we hand out, aligned
    // for usize; `add(HEADER)` stays inside it.
    unsafe {
        base.cast::<usize>().write(size);
        base.add(HEADER).cast()
    }
}

unsafe extern "system" fn metered_free(this: *mut OrtAllocator, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: ONNX Runtime calls back with the table we registered.
    let meter = &unsafe { allocator_of(this) }.meter;
    // SAFETY: `p` came from `metered_alloc`, so HEADER bytes before it hold the
    // size it was allocated with, and that size gave a valid layout.
    unsafe {
        let base = p.cast::<u8>().sub(HEADER);
        let size = base.cast::<usize>().read();
        let layout = Layout::from_size_align_unchecked(size + HEADER, ALIGN);
        std::alloc::dealloc(base, layout);
        meter.release(size as u64);
    }
}

unsafe extern "system" fn metered_reserve(this: *const OrtAllocator, size: usize) -> *mut c_void {
    // SAFETY: as for Alloc; Reserve only differs for arenas, and this is none.
    unsafe { metered_alloc(this.cast_mut(), size) }
}

unsafe extern "system" fn metered_info(this: *const OrtAllocator) -> *const OrtMemoryInfo {
    // SAFETY: ONNX Runtime calls back with the table we registered.
    unsafe { allocator_of(this) }.info
}

#[cfg(test)]
mod tests {
    use super::MemoryMeter;

    #[test]
    fn counts_peak_and_limit() {
        let m = MemoryMeter::new();
        assert!(m.book(100));
        assert!(m.book(50));
        m.release(100);
        assert_eq!((m.in_use(), m.peak()), (50, 150));
        m.reset_peak();
        assert_eq!(m.peak(), 50);

        m.set_limit(Some(120));
        assert!(m.book(70));
        assert!(!m.book(1), "121 > 120");
        assert!(m.refused());
        assert_eq!(m.refusals(), 1);
        // A refused block is still handed out, so it stays booked.
        assert_eq!(m.in_use(), 121);
        m.release(71);
        m.set_limit(None);
        assert_eq!(m.limit(), None);
        m.reset_peak();
        assert!(!m.refused());
        assert_eq!(m.refusals(), 1);
        assert_eq!((m.in_use(), m.peak()), (50, 50));
    }
}
