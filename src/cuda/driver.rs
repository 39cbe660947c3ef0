//! The device layer the CUDA backend is written against: buffers, copies,
//! kernel launches and captured graphs on one stream, for either a real GPU
//! (cudarc, with the kernels nvcc built) or, with the `emulator` feature,
//! the kernel emulator (crates/cuda-emu: the same kernel sources compiled
//! as C++ and run on the CPU).
//!
//! Everything above this file (the typed kernel wrappers, the training
//! engine, the evaluator) is one piece of code for both, so CI, which has no
//! GPU, runs the whole GPU orchestration: the order of launches, every
//! argument list, buffer sizes and offsets, graph capture and replay.
//! Launches are recorded as kernel names and untyped argument slots; each
//! typed wrapper checks shapes before it builds one, and the emulator checks
//! the argument kinds against the kernel's parameters.
use super::shapes::MAX_THREADS;
use crate::error::{Error, Result};
use cudarc::driver::sys::{CUfunction_attribute, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

fn dev(e: impl std::fmt::Display) -> Error {
    Error::Device(e.to_string())
}

/// The dynamic shared memory a kernel gets without opting in.
#[cfg(feature = "emulator")]
const DEFAULT_SHARED: u32 = 48 * 1024;
/// The most a kernel may opt in to on sm_90 (227 KiB; sm_80 has 163 KiB).
#[cfg(feature = "emulator")]
const MAX_OPT_IN_SHARED: u32 = 227 * 1024;

/// Element types of device buffers.
#[cfg(feature = "emulator")]
pub trait DevElem: DeviceRepr + ValidAsZeroBits + cuda_emu::Element {}
#[cfg(not(feature = "emulator"))]
pub trait DevElem: DeviceRepr + ValidAsZeroBits + Copy + Default + 'static {}
impl DevElem for f32 {}
impl DevElem for f64 {}
impl DevElem for u32 {}
impl DevElem for i32 {}
impl DevElem for i64 {}
impl DevElem for u8 {}
impl DevElem for u16 {}

/// A device allocation of `len` values.
pub struct DevBuf<T: DevElem> {
    mem: Mem<T>,
    /// The first value's address as kernels see it (device or host).
    addr: u64,
}

enum Mem<T: DevElem> {
    Cuda(CudaSlice<T>),
    #[cfg(feature = "emulator")]
    Emulated(cuda_emu::Buffer<T>),
}

impl<T: DevElem> DevBuf<T> {
    pub fn len(&self) -> usize {
        match &self.mem {
            Mem::Cuda(s) => s.len(),
            #[cfg(feature = "emulator")]
            Mem::Emulated(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `r` (a panic on a bad range, as slicing a Vec).
    pub fn slice(&self, r: Range<usize>) -> DevView<'_, T> {
        assert!(r.start <= r.end && r.end <= self.len(), "slice {r:?} of a device buffer of {}", self.len());
        DevView { buf: self, range: r }
    }

    pub fn slice_mut(&mut self, r: Range<usize>) -> DevViewMut<'_, T> {
        assert!(r.start <= r.end && r.end <= self.len(), "slice {r:?} of a device buffer of {}", self.len());
        DevViewMut { buf: self, range: r }
    }

    fn addr_at(&self, offset: usize) -> u64 {
        self.addr + (offset * std::mem::size_of::<T>()) as u64
    }
}

/// A range of a [`DevBuf`], read by a kernel or a copy.
pub struct DevView<'a, T: DevElem> {
    buf: &'a DevBuf<T>,
    range: Range<usize>,
}

impl<T: DevElem> DevView<'_, T> {
    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// A range of a [`DevBuf`] that a kernel or a copy writes.
pub struct DevViewMut<'a, T: DevElem> {
    buf: &'a mut DevBuf<T>,
    range: Range<usize>,
}

impl<T: DevElem> DevViewMut<'_, T> {
    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// Anything a copy can read from: a whole buffer or a view.
pub trait AsDevView<T: DevElem> {
    fn dev_view(&self) -> DevView<'_, T>;
}

/// Anything a copy can write to.
pub trait AsDevViewMut<T: DevElem> {
    fn dev_view_mut(&mut self) -> DevViewMut<'_, T>;
}

impl<T: DevElem> AsDevView<T> for DevBuf<T> {
    fn dev_view(&self) -> DevView<'_, T> {
        self.slice(0..self.len())
    }
}

impl<T: DevElem> AsDevView<T> for DevView<'_, T> {
    fn dev_view(&self) -> DevView<'_, T> {
        DevView { buf: self.buf, range: self.range.clone() }
    }
}

impl<T: DevElem> AsDevViewMut<T> for DevBuf<T> {
    fn dev_view_mut(&mut self) -> DevViewMut<'_, T> {
        let len = self.len();
        self.slice_mut(0..len)
    }
}

impl<T: DevElem> AsDevViewMut<T> for DevViewMut<'_, T> {
    fn dev_view_mut(&mut self) -> DevViewMut<'_, T> {
        DevViewMut { buf: self.buf, range: self.range.clone() }
    }
}

/// One kernel argument slot. Pointers are addresses as the kernel sees
/// them; the typed wrappers decide the scalar types (kernels take i32, u32,
/// i64 and f32).
#[derive(Clone, Copy, Debug)]
pub enum KernelArg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
}

/// What a launch builder accepts, as cudarc's `arg`: buffers and views by
/// reference (`&mut` where the kernel writes), scalars by reference.
pub trait IntoKernelArg {
    fn kernel_arg(self) -> KernelArg;
}

impl<T: DevElem> IntoKernelArg for &DevBuf<T> {
    fn kernel_arg(self) -> KernelArg {
        KernelArg::Ptr(self.addr)
    }
}
impl<T: DevElem> IntoKernelArg for &mut DevBuf<T> {
    fn kernel_arg(self) -> KernelArg {
        KernelArg::Ptr(self.addr)
    }
}
impl<T: DevElem> IntoKernelArg for &DevView<'_, T> {
    fn kernel_arg(self) -> KernelArg {
        KernelArg::Ptr(self.buf.addr_at(self.range.start))
    }
}
impl<T: DevElem> IntoKernelArg for &mut DevViewMut<'_, T> {
    fn kernel_arg(self) -> KernelArg {
        KernelArg::Ptr(self.buf.addr_at(self.range.start))
    }
}
/// An argument already resolved (a pointer chosen at run time).
impl IntoKernelArg for KernelArg {
    fn kernel_arg(self) -> KernelArg {
        self
    }
}
macro_rules! scalar_arg {
    ($t:ty, $v:ident) => {
        impl IntoKernelArg for &$t {
            fn kernel_arg(self) -> KernelArg {
                KernelArg::$v(*self)
            }
        }
    };
}
scalar_arg!(i32, I32);
scalar_arg!(u32, U32);
scalar_arg!(i64, I64);
scalar_arg!(f32, F32);

/// A kernel launch being assembled (see [`Device::launcher`]).
pub struct Launch<'d> {
    device: &'d Device,
    kernel: &'static str,
    args: Vec<KernelArg>,
}

impl Launch<'_> {
    pub fn arg(&mut self, a: impl IntoKernelArg) -> &mut Self {
        self.args.push(a.kernel_arg());
        self
    }

    /// Runs (or, while capturing, records) the launch.
    ///
    /// # Safety
    /// Every pointer argument must address memory that holds what the kernel
    /// reads and writes through it, and the scalars must be the kernel's
    /// parameter types (the emulator checks the kinds; a GPU cannot).
    pub unsafe fn launch(&self, cfg: LaunchConfig) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.device.run(self.kernel, cfg, &self.args) }
    }
}

/// A launch recorded while capturing on the emulator.
#[cfg(feature = "emulator")]
struct Recorded {
    kernel: &'static str,
    cfg: LaunchConfig,
    args: Vec<KernelArg>,
}

/// A captured sequence of launches, replayed by [`Device::replay`].
pub struct Graph(Captured);

impl Graph {
    /// The kernels a graph captured on the emulator launches, in order
    /// (None for a CUDA graph, whose nodes cudarc does not list).
    pub fn kernels(&self) -> Option<Vec<&'static str>> {
        match &self.0 {
            Captured::Cuda(_) => None,
            #[cfg(feature = "emulator")]
            Captured::Emulated(launches) => Some(launches.iter().map(|l| l.kernel).collect()),
        }
    }
}

enum Captured {
    Cuda(CudaGraph),
    #[cfg(feature = "emulator")]
    Emulated(Vec<Recorded>),
}

/// The module table of a CUDA build: (module, fatbin, kernels).
pub type ModuleTable = &'static [(&'static str, &'static [u8], &'static [&'static str])];

enum Backend {
    Cuda {
        ctx: Arc<CudaContext>,
        stream: Arc<CudaStream>,
        _modules: Vec<Arc<CudaModule>>,
        functions: HashMap<&'static str, CudaFunction>,
    },
    #[cfg(feature = "emulator")]
    Emulated {
        /// Launches being captured (Some between begin and end of a capture).
        capture: Mutex<Option<Vec<Recorded>>>,
    },
}

/// One stream on one device with every kernel of the build loaded.
pub struct Device {
    backend: Backend,
    /// The dynamic shared memory each kernel has opted in to.
    opted_in: Mutex<HashMap<&'static str, u32>>,
}

impl Device {
    /// GPU `ordinal` with the kernels of `modules` loaded; an error (never a
    /// panic) when there is no such GPU.
    pub fn cuda(ordinal: usize, modules: ModuleTable) -> Result<Self> {
        let n = crate::device::cuda_device_count();
        if ordinal >= n {
            return Err(Error::Device(format!("no usable CUDA GPU at index {ordinal} ({n} found)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(dev)?;
        // SAFETY: each Device uses one stream of its own, so cudarc's
        // cross-stream events are not needed; they would also be recorded
        // into captured CUDA graphs. A non-default stream, since the legacy
        // default stream cannot be captured.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(dev)?;
        let mut loaded = Vec::new();
        let mut functions = HashMap::new();
        for (name, image, kernels) in modules {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(image.to_vec()))
                .map_err(|e| Error::Device(format!("loading kernels/{name}.cu: {e}")))?;
            for k in *kernels {
                let f = module.load_function(k).map_err(|e| Error::Device(format!("kernel {k}: {e}")))?;
                functions.insert(*k, f);
            }
            loaded.push(module);
        }
        Ok(Device {
            backend: Backend::Cuda { ctx, stream, _modules: loaded, functions },
            opted_in: Mutex::new(HashMap::new()),
        })
    }

    /// The kernel emulator: every kernel of kernels/ run on the CPU, one
    /// block at a time (slow: for tests and for debugging kernels without
    /// a GPU).
    pub fn emulated() -> Result<Self> {
        #[cfg(feature = "emulator")]
        return Ok(Device {
            backend: Backend::Emulated { capture: Mutex::new(None) },
            opted_in: Mutex::new(HashMap::new()),
        });
        #[cfg(not(feature = "emulator"))]
        Err(Error::Device("this build has no kernel emulator (built without the `emulator` feature)".into()))
    }

    /// "cuda" or "emulated".
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Cuda { .. } => "cuda",
            #[cfg(feature = "emulator")]
            Backend::Emulated { .. } => "emulated",
        }
    }

    pub fn name(&self) -> String {
        match &self.backend {
            Backend::Cuda { ctx, .. } => ctx.name().unwrap_or_else(|_| "unknown GPU".into()),
            #[cfg(feature = "emulator")]
            Backend::Emulated { .. } => "CPU kernel emulator".into(),
        }
    }

    pub fn alloc_zeros<T: DevElem>(&self, len: usize) -> Result<DevBuf<T>> {
        match &self.backend {
            Backend::Cuda { stream, .. } => {
                Self::wrap_cuda(stream, stream.alloc_zeros::<T>(len).map_err(|e| Self::alloc_error::<T>(len, e))?)
            }
            #[cfg(feature = "emulator")]
            Backend::Emulated { .. } => {
                self.check_not_capturing("an allocation")?;
                Ok(Self::wrap_emulated(cuda_emu::Buffer::from_slice(&vec![T::default(); len])))
            }
        }
    }

    /// A new buffer holding `values`.
    pub fn htod<T: DevElem>(&self, values: &[T]) -> Result<DevBuf<T>> {
        match &self.backend {
            Backend::Cuda { stream, .. } => {
                Self::wrap_cuda(stream, stream.clone_htod(values).map_err(|e| Self::alloc_error::<T>(values.len(), e))?)
            }
            #[cfg(feature = "emulator")]
            Backend::Emulated { .. } => {
                self.check_not_capturing("an allocation")?;
                Ok(Self::wrap_emulated(cuda_emu::Buffer::from_slice(values)))
            }
        }
    }

    /// An allocation's failure with its size, so that an out-of-memory
    /// error says how much was asked for.
    fn alloc_error<T>(len: usize, e: impl std::fmt::Display) -> Error {
        let mib = (len * std::mem::size_of::<T>()) as f64 / (1024.0 * 1024.0);
        Error::Device(format!("allocating {mib:.1} MiB on the GPU: {e}"))
    }

    fn wrap_cuda<T: DevElem>(stream: &CudaStream, s: CudaSlice<T>) -> Result<DevBuf<T>> {
        let addr = s.device_ptr(stream).0;
        Ok(DevBuf { mem: Mem::Cuda(s), addr })
    }

    #[cfg(feature = "emulator")]
    fn wrap_emulated<T: DevElem>(b: cuda_emu::Buffer<T>) -> DevBuf<T> {
        let addr = b.ptr() as usize as u64;
        DevBuf { mem: Mem::Emulated(b), addr }
    }

    /// The values of `src`, after the work queued before (synchronizes).
    pub fn dtoh<T: DevElem>(&self, src: &impl AsDevView<T>) -> Result<Vec<T>> {
        let v = src.dev_view();
        let mut out = vec![T::default(); v.range.len()];
        self.memcpy_dtoh(&v, &mut out)?;
        Ok(out)
    }

    pub fn memcpy_dtoh<T: DevElem>(&self, src: &impl AsDevView<T>, dst: &mut [T]) -> Result<()> {
        let v = src.dev_view();
        self.check_copy("device-to-host copy", v.range.len(), dst.len())?;
        match (&self.backend, &v.buf.mem) {
            (Backend::Cuda { stream, .. }, Mem::Cuda(s)) => {
                stream.memcpy_dtoh(&s.slice(v.range.clone()), dst).map_err(dev)?;
                stream.synchronize().map_err(dev)
            }
            #[cfg(feature = "emulator")]
            (Backend::Emulated { .. }, Mem::Emulated(b)) => {
                dst.copy_from_slice(&b.read_range(v.range.clone()).map_err(dev)?);
                Ok(())
            }
            #[cfg(feature = "emulator")]
            _ => Err(Self::foreign()),
        }
    }

    pub fn memcpy_htod<T: DevElem>(&self, src: &[T], dst: &mut impl AsDevViewMut<T>) -> Result<()> {
        let v = dst.dev_view_mut();
        self.check_copy("host-to-device copy", src.len(), v.range.len())?;
        match (&self.backend, &mut v.buf.mem) {
            (Backend::Cuda { stream, .. }, Mem::Cuda(s)) => {
                stream.memcpy_htod(src, &mut s.slice_mut(v.range.clone())).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            (Backend::Emulated { .. }, Mem::Emulated(b)) => b.write(v.range.start, src).map_err(dev),
            #[cfg(feature = "emulator")]
            _ => Err(Self::foreign()),
        }
    }

    pub fn memcpy_dtod<T: DevElem>(&self, src: &impl AsDevView<T>, dst: &mut impl AsDevViewMut<T>) -> Result<()> {
        let (s, d) = (src.dev_view(), dst.dev_view_mut());
        self.check_copy("device-to-device copy", s.range.len(), d.range.len())?;
        match (&self.backend, &s.buf.mem, &mut d.buf.mem) {
            (Backend::Cuda { stream, .. }, Mem::Cuda(a), Mem::Cuda(b)) => {
                stream.memcpy_dtod(&a.slice(s.range.clone()), &mut b.slice_mut(d.range.clone())).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            (Backend::Emulated { .. }, Mem::Emulated(a), Mem::Emulated(b)) => {
                b.write(d.range.start, &a.read_range(s.range.clone()).map_err(dev)?).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            _ => Err(Self::foreign()),
        }
    }

    pub fn memset_zeros<T: DevElem>(&self, dst: &mut impl AsDevViewMut<T>) -> Result<()> {
        let v = dst.dev_view_mut();
        match (&self.backend, &mut v.buf.mem) {
            (Backend::Cuda { stream, .. }, Mem::Cuda(s)) => {
                stream.memset_zeros(&mut s.slice_mut(v.range.clone())).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            (Backend::Emulated { .. }, Mem::Emulated(b)) => {
                self.check_not_capturing("memset")?;
                b.write(v.range.start, &vec![T::default(); v.range.len()]).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            _ => Err(Self::foreign()),
        }
    }

    /// Waits for every queued launch and copy.
    pub fn synchronize(&self) -> Result<()> {
        match &self.backend {
            Backend::Cuda { stream, .. } => stream.synchronize().map_err(dev),
            #[cfg(feature = "emulator")]
            Backend::Emulated { .. } => Ok(()),
        }
    }

    fn check_copy(&self, what: &str, from: usize, to: usize) -> Result<()> {
        #[cfg(feature = "emulator")]
        self.check_not_capturing(what)?;
        if from == to {
            Ok(())
        } else {
            Err(Error::Device(format!("{what} of {from} values into {to}")))
        }
    }

    #[cfg(feature = "emulator")]
    fn check_not_capturing(&self, what: &str) -> Result<()> {
        if let Backend::Emulated { capture } = &self.backend {
            if capture.lock().map_err(dev)?.is_some() {
                return Err(Error::Device(format!(
                    "{what} while capturing a graph: a capture must hold kernel launches only (on a GPU an allocation would \
                     become a node of the graph and a copy from host memory would be refused)"
                )));
            }
        }
        Ok(())
    }

    #[cfg(feature = "emulator")]
    fn foreign() -> Error {
        Error::Device("a buffer of another device".into())
    }

    /// A launch of `kernel`; arguments follow with `arg`.
    pub fn launcher(&self, kernel: &'static str) -> Launch<'_> {
        Launch { device: self, kernel, args: Vec::new() }
    }

    /// Lets `kernel` use `bytes` of dynamic shared memory (past the 48 KiB
    /// default); an error names the kernel when the device has less.
    pub fn opt_in_shared(&self, kernel: &'static str, bytes: usize) -> Result<()> {
        match &self.backend {
            Backend::Cuda { functions, .. } => {
                let f = functions.get(kernel).ok_or_else(|| Error::Device(format!("no kernel {kernel}")))?;
                f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
                    .map_err(|e| Error::Device(format!("{kernel}: {bytes} bytes of shared memory: {e}")))?;
            }
            #[cfg(feature = "emulator")]
            Backend::Emulated { .. } => {
                if bytes > MAX_OPT_IN_SHARED as usize {
                    return Err(Error::Device(format!(
                        "{kernel}: {bytes} bytes of shared memory is more than the {MAX_OPT_IN_SHARED} a kernel may opt in to"
                    )));
                }
            }
        }
        self.opted_in.lock().map_err(dev)?.insert(kernel, bytes as u32);
        Ok(())
    }

    /// # Safety
    /// As [`Launch::launch`].
    unsafe fn run(&self, kernel: &'static str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let threads = cfg.block_dim.0 as usize * cfg.block_dim.1 as usize * cfg.block_dim.2 as usize;
        if threads > MAX_THREADS {
            return Err(Error::Device(format!(
                "{kernel}: a block of {threads} threads, more than the {MAX_THREADS} every kernel is built for \
                 (kernels/launch_shapes.h)"
            )));
        }
        match &self.backend {
            Backend::Cuda { stream, functions, .. } => {
                let f = functions.get(kernel).ok_or_else(|| Error::Device(format!("no kernel {kernel}")))?;
                let mut lb = stream.launch_builder(f);
                for a in args {
                    match a {
                        KernelArg::Ptr(p) => lb.arg(p),
                        KernelArg::I32(v) => lb.arg(v),
                        KernelArg::U32(v) => lb.arg(v),
                        KernelArg::I64(v) => lb.arg(v),
                        KernelArg::F32(v) => lb.arg(v),
                    };
                }
                // SAFETY: the caller vouches for the arguments; each slot is
                // passed as a pointer to a value of the kernel's parameter type.
                unsafe { lb.launch(cfg) }.map_err(|e| Error::Device(format!("{kernel}: {e}")))?;
                Ok(())
            }
            #[cfg(feature = "emulator")]
            Backend::Emulated { capture } => {
                if let Some(recorded) = capture.lock().map_err(dev)?.as_mut() {
                    recorded.push(Recorded { kernel, cfg, args: args.to_vec() });
                    return Ok(());
                }
                // SAFETY: forwarded from the caller.
                unsafe { self.emulate(kernel, cfg, args) }
            }
        }
    }

    /// # Safety
    /// As [`Launch::launch`].
    #[cfg(feature = "emulator")]
    unsafe fn emulate(&self, kernel: &'static str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        use cuda_emu::Arg;
        let limit = self.opted_in.lock().map_err(dev)?.get(kernel).copied().unwrap_or(DEFAULT_SHARED);
        let ecfg = cuda_emu::LaunchConfig::new(cfg.grid_dim, cfg.block_dim, cfg.shared_mem_bytes).opt_in_shared(limit);
        let eargs: Vec<Arg> = args
            .iter()
            .map(|a| match *a {
                KernelArg::Ptr(p) => Arg::Ptr(p as usize as *mut std::ffi::c_void),
                KernelArg::I32(v) => Arg::I32(v),
                KernelArg::U32(v) => Arg::U32(v),
                KernelArg::I64(v) => Arg::I64(v),
                KernelArg::F32(v) => Arg::F32(v),
            })
            .collect();
        // SAFETY: forwarded from the caller; emulated buffers are host memory.
        unsafe { cuda_emu::launch(kernel, ecfg, &eargs) }.map_err(|e| Error::Device(format!("{kernel}: {e}")))
    }

    /// Starts capturing launches into a graph instead of running them.
    pub fn begin_capture(&self) -> Result<()> {
        match &self.backend {
            Backend::Cuda { stream, .. } => {
                stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            Backend::Emulated { capture } => {
                *capture.lock().map_err(dev)? = Some(Vec::new());
                Ok(())
            }
        }
    }

    /// Ends the capture begun by `begin_capture`.
    pub fn end_capture(&self) -> Result<Graph> {
        match &self.backend {
            Backend::Cuda { stream, .. } => stream
                .end_capture(CUgraphInstantiate_flags(0))
                .map_err(dev)?
                .map(|g| Graph(Captured::Cuda(g)))
                .ok_or_else(|| Error::Device("CUDA graph capture produced no graph".into())),
            #[cfg(feature = "emulator")]
            Backend::Emulated { capture } => capture
                .lock()
                .map_err(dev)?
                .take()
                .map(|l| Graph(Captured::Emulated(l)))
                .ok_or_else(|| Error::Device("end_capture without begin_capture".into())),
        }
    }

    /// Uploads a graph ahead of its first replay (nothing to do emulated).
    pub fn upload(&self, graph: &Graph) -> Result<()> {
        match &graph.0 {
            Captured::Cuda(g) => g.upload().map_err(dev),
            #[cfg(feature = "emulator")]
            Captured::Emulated(_) => Ok(()),
        }
    }

    /// Runs a captured graph's launches again, with the arguments they were
    /// captured with.
    pub fn replay(&self, graph: &Graph) -> Result<()> {
        match &graph.0 {
            Captured::Cuda(g) => g.launch().map_err(|e| Error::Device(format!("replaying a CUDA graph: {e}"))),
            #[cfg(feature = "emulator")]
            Captured::Emulated(launches) => {
                for l in launches {
                    // SAFETY: each launch was checked by its wrapper when it
                    // was captured, and its buffers live as long as the graph's
                    // owner (as for a CUDA graph).
                    unsafe { self.emulate(l.kernel, l.cfg, &l.args) }?;
                }
                Ok(())
            }
        }
    }
}
