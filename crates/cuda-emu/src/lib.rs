//! Runs iwtvae's CUDA kernels (`kernels/*.cu`) on the CPU, so their logic
//! is tested in CI, where there is no GPU.
//!
//! build.rs compiles the kernel sources as C++ against `include/`, a small
//! rendering of the CUDA dialect they use (thread indices, `__shared__`,
//! `__syncthreads`, warp shuffles, atomics, bfloat16, WMMA), and registers
//! every `extern "C" __global__` function. A launch runs its blocks in turn;
//! a block runs one fiber per thread, each until its next barrier, so
//! barriers and shuffles mean what they mean on the GPU and a barrier that
//! not every thread reaches is reported as a deadlock instead of hanging.
//!
//! What it checks beyond values: argument kinds against the kernel's
//! parameters (cudarc cannot), block and grid limits, dynamic shared memory
//! against the 48 KiB default or the launch's opt-in, reads of shared memory
//! that nothing wrote (it starts as NaN), full-mask shuffles with exited
//! lanes, that every pointer argument points into a live [`Buffer`], and,
//! right after each launch, through the guard zones of the buffers its
//! pointers point into, writes past either end of a buffer (named by the
//! argument).
//!
//! What it does not model: timing, warp-synchronous code without a
//! barrier, the order of atomics (they run in thread order), the GPU's
//! transcendental functions (the host's libm stands in) and FMA contraction.
//!
//! Two ways in: [`launch`], which iwtvae's device layer calls directly for
//! `--device emulated`, and a stand-in `libcuda.so` (`src/fake_driver.cpp`,
//! [`fake_driver_dir`]) that serves the CUDA driver API calls cudarc makes, so
//! a process started with it on `LD_LIBRARY_PATH` runs its real `--device cuda`
//! path, cudarc included, on this emulator.
use std::ffi::{c_char, c_void, CString};

extern "C" {
    fn emu_set_reverse_blocks(on: i32);
    fn emu_address_sanitized() -> i32;
    fn emu_set_addressable(p: *mut c_void, n: usize, yes: i32);
    fn emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        shared_limit: u32,
        args: *mut *mut c_void,
        kinds: *const c_char,
        err: *mut c_char,
        errlen: usize,
    ) -> i32;
}

/// The folder holding the stand-in `libcuda.so` (`src/fake_driver.cpp`):
/// the driver API that cudarc calls, over this emulator. A process started
/// with this folder on `LD_LIBRARY_PATH` runs its real CUDA path, cudarc
/// included, with every kernel emulated. None when the build could not
/// link it.
pub fn fake_driver_dir() -> Option<&'static std::path::Path> {
    let dir = env!("CUDA_EMU_FAKE_DRIVER_DIR");
    (!dir.is_empty()).then(|| std::path::Path::new(dir))
}

/// The dynamic shared memory a kernel may use without opting in.
pub const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// A launch's geometry, as cudarc's `LaunchConfig`, plus the kernel's
/// dynamic shared-memory limit (48 KiB unless the host code raises it with
/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`).
#[derive(Clone, Copy, Debug)]
pub struct LaunchConfig {
    pub grid_dim: (u32, u32, u32),
    pub block_dim: (u32, u32, u32),
    pub shared_mem_bytes: u32,
    pub shared_limit: u32,
}

impl LaunchConfig {
    pub fn new(grid_dim: (u32, u32, u32), block_dim: (u32, u32, u32), shared_mem_bytes: u32) -> Self {
        LaunchConfig { grid_dim, block_dim, shared_mem_bytes, shared_limit: DEFAULT_SHARED_LIMIT }
    }

    /// The launch has opted in to `bytes` of dynamic shared memory.
    pub fn opt_in_shared(mut self, bytes: u32) -> Self {
        self.shared_limit = bytes;
        self
    }
}

/// One kernel argument, typed as the kernel's parameter must be.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(*mut c_void),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
}

impl Arg {
    fn kind(&self) -> u8 {
        match self {
            Arg::Ptr(_) => b'p',
            Arg::I32(_) => b'i',
            Arg::U32(_) => b'u',
            Arg::I64(_) => b'l',
            Arg::F32(_) => b'f',
        }
    }
}

/// Launch `kernel` and run it to the end.
///
/// # Safety
/// Every pointer argument must point at memory that holds what the kernel
/// reads and writes through it, as for a real launch.
pub unsafe fn launch(kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<(), String> {
    let buffers = args
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match *a {
            Arg::Ptr(p) => Some(
                live::containing(p as usize)
                    .map(|b| (i, b))
                    .ok_or_else(|| format!("{kernel}: argument {i} ({p:p}) points into no live buffer")),
            ),
            _ => None,
        })
        .collect::<Result<Vec<_>, String>>()?;
    // SAFETY: forwarded from the caller.
    unsafe { launch_unchecked(kernel, cfg, args) }?;
    for (i, b) in buffers {
        // SAFETY: the buffer is live: the caller holds it for the launch.
        unsafe { b.check() }.map_err(|e| format!("{kernel}: argument {i}: {e}"))?;
    }
    Ok(())
}

/// # Safety
/// As [`launch`].
unsafe fn launch_unchecked(kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<(), String> {
    // cuLaunchKernel's convention: params[i] points at the i-th value.
    let mut values: Vec<[u8; 8]> = args
        .iter()
        .map(|a| {
            let mut v = [0u8; 8];
            match *a {
                Arg::Ptr(p) => v.copy_from_slice(&(p as usize as u64).to_ne_bytes()),
                Arg::I32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
                Arg::U32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
                Arg::I64(x) => v.copy_from_slice(&x.to_ne_bytes()),
                Arg::F32(x) => v[..4].copy_from_slice(&x.to_ne_bytes()),
            }
            v
        })
        .collect();
    let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| v.as_mut_ptr().cast()).collect();
    let kinds = CString::new(args.iter().map(Arg::kind).collect::<Vec<u8>>()).map_err(|e| e.to_string())?;
    let name = CString::new(kernel).map_err(|e| format!("kernel name {kernel:?}: {e}"))?;
    let grid = [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2];
    let block = [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2];
    let mut err = vec![0u8; 1024];
    // SAFETY: every pointer handed over lives until the call returns; the
    // values are 8-byte slots, at least as large and as aligned as any
    // parameter kind; the caller vouches for the kernel's own pointers.
    let rc = unsafe {
        emu_launch(
            name.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            cfg.shared_mem_bytes,
            cfg.shared_limit,
            params.as_mut_ptr(),
            kinds.as_ptr(),
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        Err(String::from_utf8_lossy(&err[..end]).into_owned())
    }
}

/// Element types a [`Buffer`] may hold: every bit pattern is a value.
pub trait Element: Copy + Default + 'static {}
impl Element for f32 {}
impl Element for f64 {}
impl Element for u32 {}
impl Element for i32 {}
impl Element for i64 {}
impl Element for u8 {}
impl Element for u16 {}

const GUARD_BYTES: usize = 256;
const GUARD_BYTE: u8 = 0xA5;
const ALIGN_BYTES: usize = 256;

/// Every live [`Buffer`]'s payload and guard zones, by address, so a launch
/// can check its pointer arguments and the guards they lead to.
mod live {
    use super::GUARD_BYTE;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A payload of `len` bytes at `start` with `guard` bytes either side.
    #[derive(Clone, Copy)]
    pub struct Extent {
        pub start: usize,
        pub len: usize,
        pub guard: usize,
    }

    static LIVE: Mutex<BTreeMap<usize, Extent>> = Mutex::new(BTreeMap::new());

    fn table() -> std::sync::MutexGuard<'static, BTreeMap<usize, Extent>> {
        LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add(e: Extent) {
        table().insert(e.start, e);
    }

    pub fn remove(start: usize) {
        table().remove(&start);
    }

    /// The buffer whose payload holds `addr` (its one-past-the-end address
    /// included: an empty view at the end of a buffer is a valid argument).
    pub fn containing(addr: usize) -> Option<Extent> {
        let t = table();
        let (_, e) = t.range(..=addr).next_back()?;
        (addr <= e.start + e.len).then_some(*e)
    }

    impl Extent {
        /// An error when a kernel wrote into either guard zone.
        ///
        /// # Safety
        /// The buffer must be live.
        pub unsafe fn check(&self) -> Result<(), String> {
            let untouched = |first: usize| -> bool {
                // SAFETY: a guard zone of the live buffer, viewed as bytes.
                let b = unsafe { std::slice::from_raw_parts(first as *const u8, self.guard) };
                b.iter().all(|&x| x == GUARD_BYTE)
            };
            if !untouched(self.start - self.guard) {
                return Err(format!("a kernel wrote before the start of a buffer of {} bytes", self.len));
            }
            if !untouched(self.start + self.len) {
                return Err(format!("a kernel wrote past the end of a buffer of {} bytes", self.len));
            }
            Ok(())
        }
    }
}

/// "Device" memory: the values between two guard zones that a kernel must
/// not touch; [`Buffer::read`] fails when it did.
///
/// Kernels write through the pointer that [`Buffer::arg`] and
/// [`Buffer::ptr`] hand out while the host holds only shared references (as
/// with device memory), so every access goes through one raw pointer taken
/// when the buffer was made, never through a reference to the vector.
pub struct Buffer<T: Element> {
    storage: Vec<T>,
    /// The first of the payload's values; the guard zones lie either side.
    base: *mut T,
    guard: usize,
    len: usize,
}

// SAFETY: a Buffer owns its storage; the raw pointer only aliases it.
unsafe impl<T: Element + Send> Send for Buffer<T> {}

impl<T: Element> Buffer<T> {
    fn with_len(len: usize) -> Self {
        let size = std::mem::size_of::<T>().max(1);
        let guard = GUARD_BYTES.div_ceil(size);
        // cudaMalloc returns 256-byte aligned memory, and kernels rely on it
        // (a tensor-core tile wants 32 bytes): the payload starts at the
        // first 256-byte boundary past the front guard.
        let total = len + 2 * guard + ALIGN_BYTES.div_ceil(size);
        let mut storage = vec![T::default(); total];
        let whole = storage.as_mut_ptr();
        let lead = ((whole as usize + guard * size).next_multiple_of(ALIGN_BYTES) - whole as usize) / size;
        // SAFETY: storage holds `total` values of an Element type, for which
        // any byte pattern is a valid value; guard ≤ lead < guard +
        // ALIGN_BYTES/size, so base ± its guard zones stay inside it.
        let base = unsafe {
            std::ptr::write_bytes(whole, GUARD_BYTE, total);
            whole.add(lead)
        };
        live::add(live::Extent { start: base as usize, len: len * size, guard: guard * size });
        // SAFETY: both ranges lie inside `storage` (see above); marking them
        // only changes AddressSanitizer's shadow memory, and a no-op without.
        unsafe {
            emu_set_addressable(whole.cast(), lead * size, 0);
            emu_set_addressable(base.add(len).cast(), (total - lead - len) * size, 0);
        }
        Buffer { storage, base, guard, len }
    }

    pub fn from_slice(values: &[T]) -> Self {
        let b = Self::with_len(values.len());
        // SAFETY: the payload holds exactly values.len() values.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), b.base, values.len()) };
        b
    }

    /// `len` values of all-ones bytes (NaN as f32), so that anything a
    /// kernel should write and does not shows.
    pub fn poisoned(len: usize) -> Self {
        let b = Self::with_len(len);
        // SAFETY: as in with_len, within the payload.
        unsafe { std::ptr::write_bytes(b.base, 0xFF, len) };
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The payload's address, as a kernel argument.
    pub fn arg(&self) -> Arg {
        Arg::Ptr(self.ptr())
    }

    /// The payload's address.
    pub fn ptr(&self) -> *mut c_void {
        self.base.cast()
    }

    /// Copies `values` into the payload from `offset`.
    pub fn write(&mut self, offset: usize, values: &[T]) -> Result<(), String> {
        if offset + values.len() > self.len {
            return Err(format!("writing {} values at {offset} into a buffer of {}", values.len(), self.len));
        }
        // SAFETY: inside the payload (checked above).
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.base.add(offset), values.len()) };
        Ok(())
    }

    /// The values, after checking that no kernel wrote into the guard zones.
    pub fn read(&self) -> Result<Vec<T>, String> {
        self.read_range(0..self.len)
    }

    /// Values `range` of the payload, after the guard-zone check.
    pub fn read_range(&self, range: std::ops::Range<usize>) -> Result<Vec<T>, String> {
        self.check_guards()?;
        if range.start > range.end || range.end > self.len {
            return Err(format!("reading {range:?} of a buffer of {} values", self.len));
        }
        // SAFETY: inside the payload (checked above).
        Ok(unsafe { std::slice::from_raw_parts(self.base.add(range.start), range.len()) }.to_vec())
    }

    /// An error when a kernel wrote into either guard zone.
    pub fn check_guards(&self) -> Result<(), String> {
        let size = std::mem::size_of::<T>();
        let extent = live::Extent { start: self.base as usize, len: self.len * size, guard: self.guard * size };
        // SAFETY: this buffer is live.
        unsafe { extent.check() }
    }
}

impl<T: Element> Drop for Buffer<T> {
    fn drop(&mut self) {
        live::remove(self.base as usize);
        let bytes = self.storage.len() * std::mem::size_of::<T>();
        // SAFETY: the whole storage, made addressable again before it is freed.
        unsafe { emu_set_addressable(self.storage.as_ptr() as *mut c_void, bytes, 1) };
    }
}

/// Whether the kernels were built under AddressSanitizer
/// (scripts/emu-asan.sh): then a buffer's guard zones and the dynamic shared
/// memory past a launch's size are unaddressable, and any access to them
/// stops the process with a report naming the kernel's source line.
pub fn address_sanitized() -> bool {
    // SAFETY: returns a constant.
    unsafe { emu_address_sanitized() != 0 }
}

/// Runs the blocks of every later launch in this process last to first
/// (`true`) or first to last (`false`, the default unless the environment
/// sets `CUDA_EMU_REVERSE_BLOCKS=1`). A GPU runs a launch's blocks in any
/// order at once, so a kernel whose result changes with the order has a
/// race between blocks.
pub fn set_reverse_block_order(reverse: bool) {
    // SAFETY: stores one flag that launches read.
    unsafe { emu_set_reverse_blocks(i32::from(reverse)) }
}
