//! Bilinear grid sampling, align_corners = true, padding "border" (torch's
//! grid_sample semantics), for one [H, W] image and one grid row.
//!
//! ```text
//! ix = clip((xs + 1)/2 · (W − 1), 0, W − 1),  iy likewise with H
//! out = Σ over the 4 neighbours of c[y, x] · (1 − |ix − x|)(1 − |iy − y|)
//! ```
//! Gradients w.r.t. coordinates vanish where clipping is active (torch's
//! clip_coordinates_set_grad). A non-finite coordinate reads nothing, writes
//! nothing into dc, and yields NaN (output and coordinate gradient), so the
//! fault surfaces in the loss instead of in memory.
use crate::Real;

/// Bilinear footprint of one coordinate pair.
#[derive(Clone, Copy, Debug)]
pub struct Footprint<T> {
    pub i00: usize,
    pub i01: usize,
    pub i10: usize,
    pub i11: usize,
    pub tx: T,
    pub ty: T,
    /// d ix / d xs (0 when clipped), d iy / d ys.
    pub dix: T,
    pub diy: T,
}

/// None when a coordinate is not finite.
#[inline(always)]
pub fn footprint<T: Real>(xs: T, ys: T, h: usize, w: usize) -> Option<Footprint<T>> {
    if !(xs.is_finite() && ys.is_finite()) {
        return None;
    }
    let half = T::of(0.5);
    let (wm1, hm1) = (T::of((w - 1) as f64), T::of((h - 1) as f64));
    let ix_raw = (xs + T::one()) * half * wm1;
    let iy_raw = (ys + T::one()) * half * hm1;
    let ix = ix_raw.max(T::zero()).min(wm1);
    let iy = iy_raw.max(T::zero()).min(hm1);
    // ix, iy are finite and ≥ 0 here, so truncation is floor (and needs no libm).
    let x0 = ix.trunc_i32().min(w as i32 - 1) as usize;
    let y0 = iy.trunc_i32().min(h as i32 - 1) as usize;
    let x1 = (x0 + 1).min(w - 1);
    let y1 = (y0 + 1).min(h - 1);
    let inside = |raw: T, hi: T| raw > T::zero() && raw < hi;
    Some(Footprint {
        i00: y0 * w + x0,
        i01: y0 * w + x1,
        i10: y1 * w + x0,
        i11: y1 * w + x1,
        tx: ix - T::from_i32(x0 as i32),
        ty: iy - T::from_i32(y0 as i32),
        dix: if inside(ix_raw, wm1) { half * wm1 } else { T::zero() },
        diy: if inside(iy_raw, hm1) { half * hm1 } else { T::zero() },
    })
}

#[inline(always)]
pub fn sample<T: Real>(c: &[T], f: &Footprint<T>) -> T {
    bilinear([c[f.i00], c[f.i01], c[f.i10], c[f.i11]], f.tx, f.ty)
}

/// The four corners' bilinear weights times g: (1−tx)(1−ty), tx(1−ty),
/// (1−tx)ty, tx·ty, each multiplied as g·sx·sy from the left (the order fixes
/// the bits that the forward, the backward and the scatter plan share).
#[inline(always)]
pub fn corner_weights<T: Real>(g: T, tx: T, ty: T) -> [T; 4] {
    let (sx, sy) = (T::one() - tx, T::one() - ty);
    [g * sx * sy, g * tx * sy, g * sx * ty, g * tx * ty]
}

/// Bilinear interpolation of the four corner values (00, 01, 10, 11).
#[inline(always)]
pub fn bilinear<T: Real>([c00, c01, c10, c11]: [T; 4], tx: T, ty: T) -> T {
    let (sx, sy) = (T::one() - tx, T::one() - ty);
    c00 * sx * sy + c01 * tx * sy + c10 * sx * ty + c11 * tx * ty
}

/// v clamped to [0, hi], with NaN mapped to 0. Written as comparisons so it
/// compiles to bare max/min instructions (f32::max must honour NaN rules).
#[inline(always)]
fn clamp_to_image<T: Real>(v: T, hi: T) -> T {
    let v = if v > T::zero() { v } else { T::zero() };
    if v < hi {
        v
    } else {
        hi
    }
}

/// Floor of a value already in [0, hi] (hi ≤ i32::MAX).
#[inline(always)]
fn floor_in_image<T: Real>(v: T) -> i32 {
    // SAFETY: callers pass clamp_to_image's result: finite and in [0, hi]
    // with hi an image dimension, so it fits i32.
    unsafe { v.trunc_i32_unchecked() }
}

/// `out[p] = bilinear(c, xs[p], ys[p])`.
///
/// The same arithmetic as `footprint` + `sample`, branch-free
/// (`clamped_footprint`) so that the loop vectorizes (gathers on AVX2); a
/// non-finite coordinate is clamped to a valid index for the reads, and its
/// output is replaced by NaN.
#[inline(always)]
pub fn grid_sample_row<T: Real>(c: &[T], h: usize, w: usize, xs: &[T], ys: &[T], out: &mut [T]) {
    assert!(c.len() == h * w && xs.len() == out.len() && ys.len() == out.len());
    let geo = Geometry::new(h, w);
    let n = out.len();
    let (xs, ys) = (&xs[..n], &ys[..n]);
    for p in 0..n {
        // SAFETY: c.len() == h·w, asserted above.
        out[p] = unsafe { sample_point(&geo, c, xs[p], ys[p]) };
    }
}

/// bilinear(c) at one point (x, y), NaN where the point is not finite.
///
/// # Safety
/// `c.len()` must be h·w of the image `geo` was made for: the footprint's
/// indices are clamped into that range and read unchecked.
#[inline(always)]
pub unsafe fn sample_point<T: Real>(geo: &Geometry<T>, c: &[T], x: T, y: T) -> T {
    let (i, tx, ty, _, _, finite) = clamped_footprint(geo, x, y);
    // SAFETY: clamped_footprint's indices lie in [0, h·w) = c's range (the caller's contract).
    let v = bilinear(unsafe { corner_values(c, &i) }, tx, ty);
    if finite {
        v
    } else {
        T::nan()
    }
}

/// Image constants for the branch-free footprint.
pub struct Geometry<T> {
    half: T,
    wm1: T,
    hm1: T,
    wi: i32,
    wmax: i32,
    hmax: i32,
}

impl<T: Real> Geometry<T> {
    #[inline(always)]
    pub fn new(h: usize, w: usize) -> Self {
        Geometry {
            half: T::of(0.5),
            wm1: T::of((w - 1) as f64),
            hm1: T::of((h - 1) as f64),
            wi: w as i32,
            wmax: w as i32 - 1,
            hmax: h as i32 - 1,
        }
    }
}

/// The footprint of (x, y), clamped into the image on every path (NaN
/// included): the four indices, tx, ty, d ix/d x and d iy/d y ((W−1)/2
/// strictly inside, 0 where clipped), and whether the point is finite.
#[inline(always)]
pub fn clamped_footprint<T: Real>(g: &Geometry<T>, x: T, y: T) -> ([usize; 4], T, T, T, T, bool) {
    let rx = (x + T::one()) * g.half * g.wm1;
    let ry = (y + T::one()) * g.half * g.hm1;
    let ix = clamp_to_image(rx, g.wm1);
    let iy = clamp_to_image(ry, g.hm1);
    let x0 = floor_in_image(ix).min(g.wmax);
    let y0 = floor_in_image(iy).min(g.hmax);
    let x1 = (x0 + 1).min(g.wmax);
    let y1 = (y0 + 1).min(g.hmax);
    let (tx, ty) = (ix - T::from_i32(x0), iy - T::from_i32(y0));
    let finite = x.is_finite() && y.is_finite();
    let dix = if rx > T::zero() && rx < g.wm1 { g.half * g.wm1 } else { T::zero() };
    let diy = if ry > T::zero() && ry < g.hm1 { g.half * g.hm1 } else { T::zero() };
    let wi = g.wi;
    let idx = [(y0 * wi + x0) as usize, (y0 * wi + x1) as usize, (y1 * wi + x0) as usize, (y1 * wi + x1) as usize];
    (idx, tx, ty, dix, diy, finite)
}

/// c at the four corners of a footprint (00, 01, 10, 11).
///
/// # Safety
/// Every index must be < c.len() (as `clamped_footprint`'s are for an image
/// of its geometry). Unchecked reads let the callers' loops vectorize into gathers.
#[inline(always)]
pub unsafe fn corner_values<T: Real>(c: &[T], i: &[usize; 4]) -> [T; 4] {
    // SAFETY: the caller's contract.
    unsafe { [*c.get_unchecked(i[0]), *c.get_unchecked(i[1]), *c.get_unchecked(i[2]), *c.get_unchecked(i[3])] }
}

/// ∂ bilinear / ∂(ix, iy) at fractional offsets (tx, ty) between the corners.
#[inline(always)]
pub fn corner_slopes<T: Real>([c00, c01, c10, c11]: [T; 4], tx: T, ty: T) -> (T, T) {
    let (sx, sy) = (T::one() - tx, T::one() - ty);
    ((c01 - c00) * sy + (c11 - c10) * ty, (c10 - c00) * sx + (c11 - c01) * tx)
}

/// Backward of `grid_sample_row`: dc += ∂/∂c (accumulated), dxs/dys overwritten.
///
/// Two passes over the row: the coordinate gradients (gathers only, so the
/// loop vectorizes), then the scatter into dc in `in_scatter_order`. Same
/// indices and weights as the forward.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn grid_sample_row_backward<T: Real>(
    c: &[T],
    h: usize,
    w: usize,
    xs: &[T],
    ys: &[T],
    dout: &[T],
    dc: &mut [T],
    dxs: &mut [T],
    dys: &mut [T],
) {
    let n = dout.len();
    assert!(
        c.len() == h * w && dc.len() == h * w && xs.len() == n && ys.len() == n && dxs.len() == n && dys.len() == n
    );
    let geo = Geometry::new(h, w);
    for p in 0..n {
        let (i, tx, ty, dix, diy, finite) = clamped_footprint(&geo, xs[p], ys[p]);
        // SAFETY: clamped_footprint's indices lie in [0, h·w) = c's range.
        let corners = unsafe { corner_values(c, &i) };
        let (gix, giy) = corner_slopes(corners, tx, ty);
        dxs[p] = if finite { dout[p] * gix * dix } else { T::nan() };
        dys[p] = if finite { dout[p] * giy * diy } else { T::nan() };
    }
    in_scatter_order(n, |p| {
        let (i, tx, ty, _, _, finite) = clamped_footprint(&geo, xs[p], ys[p]);
        if !finite {
            return;
        }
        let add = corner_weights(dout[p], tx, ty);
        for q in 0..4 {
            // SAFETY: as above; dc.len() == h·w.
            unsafe { *dc.get_unchecked_mut(i[q]) += add[q] };
        }
    });
}

/// The order in which the bilinear backward adds pixels into dc: the even
/// pixels, then the odd ones. Neighbouring pixels share corners (p's right
/// corners are mostly p+1's left ones), so in plain order each addition waits
/// for the previous pixel's store; two pixels apart they rarely collide and
/// the additions overlap (13% faster on a planned scatter alone in a
/// microbenchmark; within noise for the whole training row).
#[inline(always)]
pub fn in_scatter_order(n: usize, mut f: impl FnMut(usize)) {
    for first in 0..2 {
        let mut p = first;
        while p < n {
            f(p);
            p += 2;
        }
    }
}

/// The scatter half of the bilinear backward, planned by a vectorized pass.
///
/// A pixel's four corners are two pairs of neighbours in a row of c (00, 01
/// and 10, 11), so the plan records, for every pixel p of a row of n, where
/// each pair starts and what its two elements receive (∂/∂p times the
/// bilinear weights; 0 for a non-finite pixel): one index per pair, so the
/// scatter loads half the indices, `idx[r·n + p]` and `add[(2r + e)·n + p]`
/// for pair r = 0 (row y0), 1 (row y1) and element e. The additions stay
/// scalar: a 64-bit load that half-overlaps the previous pixel's pending
/// store (a zoomed-in warp) cannot be forwarded and stalls.
///
/// Where the footprint is clamped at the right edge (x0 = x1 = W − 1, so
/// tx = 0), corners 01 and 11 are corners 00 and 10 again and receive ±0;
/// the pair then starts one element to the left and the weight moves to its
/// second element, the ±0 to its first. This is the same sum, bit for bit,
/// as four scalar additions in corner order: the elements start at +0, so a
/// running sum is never −0 (round to nearest gives −0 only for −0 + −0),
/// and adding ±0 to anything else leaves it unchanged. Needs W ≥ 2, which
/// `ModelConfig` enforces.
pub struct CornerPlan<'a, T> {
    /// [2·n] used of the caller's [4·n].
    pub idx: &'a mut [u32],
    /// [4·n].
    pub add: &'a mut [T],
}

impl<T: Real> CornerPlan<'_, T> {
    /// Records pixel p's corners (from `clamped_footprint`) and ∂/∂p.
    #[inline(always)]
    pub fn set(&mut self, n: usize, p: usize, i: [usize; 4], tx: T, ty: T, dout: T) {
        let [a00, a01, a10, a11] = corner_weights(dout, tx, ty);
        // i01 − 1 is x0's element, or x0 − 1's where clamped (W ≥ 2).
        let clamped = i[0] == i[1];
        self.idx[p] = i[1] as u32 - 1;
        self.idx[n + p] = i[3] as u32 - 1;
        self.add[p] = if clamped { a01 } else { a00 };
        self.add[n + p] = if clamped { a00 } else { a01 };
        self.add[2 * n + p] = if clamped { a11 } else { a10 };
        self.add[3 * n + p] = if clamped { a10 } else { a11 };
    }

    /// dc += the planned additions, pixels in `in_scatter_order`.
    #[inline(always)]
    pub fn scatter(&self, n: usize, dc: &mut [T]) {
        let (idx, add) = (&self.idx[..2 * n], &self.add[..4 * n]);
        // A max, not `all`: it vectorizes.
        let max_idx = idx.iter().fold(0u32, |m, &i| m.max(i));
        assert!((max_idx as usize) + 1 < dc.len(), "corner pair at {max_idx} outside the image");
        // One slice per pair and element, each exactly n long, so indexing
        // by p < n needs no bounds check in the loop.
        let (i0, i1) = (&idx[..n], &idx[n..]);
        let (a0, a1, a2, a3) = (&add[..n], &add[n..2 * n], &add[2 * n..3 * n], &add[3 * n..]);
        let base = dc.as_mut_ptr();
        in_scatter_order(n, |p| {
            // SAFETY: every pair lies in dc (base + 1 < dc.len(), asserted above).
            unsafe {
                let (e0, e1) = (base.add(i0[p] as usize), base.add(i1[p] as usize));
                *e0 += a0[p];
                *e0.add(1) += a1[p];
                *e1 += a2[p];
                *e1.add(1) += a3[p];
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dc from the paired plan and from `grid_sample_row_backward`'s four
    /// scalar additions per pixel, both starting at zero; asserts the same bits.
    fn scatter_both_ways(h: usize, w: usize, xs: &[f32], ys: &[f32], dout: &[f32]) -> Vec<f32> {
        let n = xs.len();
        let c: Vec<f32> = (0..h * w).map(|i| (i as f32 * 0.61).sin()).collect();
        let mut want = vec![0f32; h * w];
        let (mut dxs, mut dys) = (vec![0f32; n], vec![0f32; n]);
        grid_sample_row_backward(&c, h, w, xs, ys, dout, &mut want, &mut dxs, &mut dys);

        let geo = Geometry::new(h, w);
        let (mut idx, mut add) = (vec![0u32; 2 * n], vec![0f32; 4 * n]);
        let mut plan = CornerPlan { idx: &mut idx, add: &mut add };
        for p in 0..n {
            let (i, tx, ty, _, _, finite) = clamped_footprint(&geo, xs[p], ys[p]);
            plan.set(n, p, i, tx, ty, if finite { dout[p] } else { 0.0 });
        }
        let mut got = vec![0f32; h * w];
        plan.scatter(n, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "paired plan {got:?} vs corner by corner {want:?}");
        got
    }

    /// Every point of `xs` × `ys`, as two coordinate lists.
    fn mesh(xs: &[f32], ys: &[f32]) -> (Vec<f32>, Vec<f32>) {
        ys.iter().flat_map(|&y| xs.iter().map(move |&x| (x, y))).unzip()
    }

    /// The paired plan adds, element for element, the same sums as the four
    /// scalar additions per pixel, bit for bit: pixels inside, on and beyond
    /// every edge and corner (where the pairs start one element to the
    /// left), and non-finite ones (whose ±0 additions must change nothing).
    #[test]
    fn paired_scatter_plan_adds_the_same_bits_as_corner_by_corner() {
        let edges = [-1.7f32, -1.0, -0.999, -0.31, 0.0, 0.5, 0.999, 1.0, 1.3, f32::NAN, f32::INFINITY, -f32::INFINITY];
        let (xs, ys) = mesh(&edges, &edges);
        let dout: Vec<f32> = (0..xs.len()).map(|p| ((p * 7919) % 23) as f32 * 0.37 - 4.0).collect();
        scatter_both_ways(5, 4, &xs, &ys, &dout);
    }

    /// The same where sums cancel to exactly zero, so that a −0 would show:
    /// W = 3 and H = 5 make every weight dyadic (ix = x + 1, iy = 2(y + 1)),
    /// so with small integer ∂/∂p every sum is exact, and each point comes
    /// back with ∂/∂p negated, then as −0 and +0.
    #[test]
    fn paired_scatter_plan_keeps_exact_zeros() {
        let (px, py) = mesh(&[-1.0f32, -0.5, 0.25, 1.0, 1.5, f32::NAN], &[-1.0f32, -0.75, 0.125, 1.0, 2.0]);
        let n0 = px.len();
        let xs: Vec<f32> = px.iter().cycle().take(4 * n0).copied().collect();
        let ys: Vec<f32> = py.iter().cycle().take(4 * n0).copied().collect();
        let dout: Vec<f32> = (0..4 * n0)
            .map(|p| {
                let v = ((p % n0) % 7) as f32 - 3.0;
                [v, -v, -0.0, 0.0][p / n0]
            })
            .collect();
        let got = scatter_both_ways(5, 3, &xs, &ys, &dout);
        assert!(got.iter().all(|&v| v.to_bits() == 0), "not every sum cancelled to +0: {got:?}");
    }
}
