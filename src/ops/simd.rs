//! Run-time SIMD dispatch: hot elementwise loops are compiled a second and
//! third time with AVX2 or AVX-512 enabled (`#[target_feature]` clones) and
//! picked here, since the crate itself builds for baseline x86-64.
//! `IWTVAE_SIMD=baseline|avx2|avx512` caps the level (`IWTVAE_NO_AVX512=1`
//! is the same as `avx2`). Rust never contracts a·b+c into an FMA, so every
//! clone computes the same bits (tests/determinism.rs checks this end to end;
//! below AVX-512 the GEMMs go to matrixmultiply, which picks its kernel by
//! itself and is not capped, and whose AVX-512 kernel ops::sgemm matches bit
//! for bit).

/// The widest SIMD level this CPU offers, detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Baseline,
    Avx2,
    Avx512,
}

/// The cap that `IWTVAE_SIMD` (or `IWTVAE_NO_AVX512`) sets, if any; an
/// unknown value is an error naming the variable (the CLI checks it at start).
pub fn simd_cap_from_env() -> Result<Option<Simd>, String> {
    if let Some(v) = std::env::var_os("IWTVAE_SIMD") {
        return match v.to_str() {
            Some("baseline") => Ok(Some(Simd::Baseline)),
            Some("avx2") => Ok(Some(Simd::Avx2)),
            Some("avx512") => Ok(Some(Simd::Avx512)),
            _ => Err(format!("IWTVAE_SIMD={}: expected baseline, avx2 or avx512", v.to_string_lossy())),
        };
    }
    Ok(std::env::var_os("IWTVAE_NO_AVX512").map(|_| Simd::Avx2))
}

pub fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = simd_cap_from_env().ok().flatten().unwrap_or(Simd::Avx512);
        detected().min(cap)
    })
}

fn detected() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx512" => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
            }
            _ => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
        };
        if has("avx512") && has("avx2") {
            return Simd::Avx512;
        }
        if has("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// `simd_dispatch!(pub fn name<T: Bound>(args) -> Ret => body);` defines
/// `name`, which runs `body` (an `#[inline(always)]` fn with the same
/// arguments) compiled with AVX-512 or AVX2 when `simd()` says the CPU has
/// them, and as baseline x86-64 code otherwise.
macro_rules! simd_dispatch {
    ($(#[$attr:meta])* $vis:vis fn $name:ident $(<$T:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<$T: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2 $(<$T: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512 $(<$T: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::ops::simd::simd() {
                    // SAFETY: simd() reported that the CPU has these features.
                    $crate::ops::simd::Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::ops::simd::Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::ops::simd::Simd::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;
