//! Row-parallel helpers. The CPU path splits work by rows ([N, D] buffers,
//! one sample per row); `Par::Seq` runs inline when the caller already
//! parallelises at a coarser level (evaluation runs one image per task).
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    Seq,
    Rows,
}

/// Mutable access to disjoint rows of a row-major buffer from many threads.
#[derive(Clone, Copy)]
pub struct RowsMut<T> {
    ptr: *mut T,
    stride: usize,
    rows: usize,
}

// SAFETY: RowsMut only hands out rows through `row`, whose contract requires
// that no two live references name the same row.
unsafe impl<T: Send> Send for RowsMut<T> {}
unsafe impl<T: Send> Sync for RowsMut<T> {}

impl<T> RowsMut<T> {
    pub fn new(buf: &mut [T], stride: usize, rows: usize) -> Self {
        assert!(rows * stride <= buf.len(), "RowsMut: {rows} rows of {stride} exceed buffer of {}", buf.len());
        RowsMut { ptr: buf.as_mut_ptr(), stride, rows }
    }

    /// # Safety
    /// Each row index may be borrowed by at most one caller at a time.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn row(&self, r: usize) -> &mut [T] {
        assert!(r < self.rows);
        // SAFETY: r < rows and rows*stride <= len, so the row is in bounds;
        // exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.stride), self.stride) }
    }
}

/// Run `f(r)` for r in 0..n, in parallel when `par` is `Rows`.
pub fn for_each_row<F: Fn(usize) + Sync + Send>(par: Par, n: usize, f: F) {
    match par {
        Par::Seq => (0..n).for_each(f),
        Par::Rows => (0..n).into_par_iter().with_min_len(4).for_each(f),
    }
}
