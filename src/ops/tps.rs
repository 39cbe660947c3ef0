//! Thin-plate-spline kernel matrix (SPEC §1).
//!
//! ```text
//! control points P_n (n < g²) on meshgrid(linspace(-1,1,g)), x fastest
//! L = [[K, P], [Pᵀ, 0]],  K_mn = U(|P_m − P_n|²),  P = [1, PX, PY]
//! U(r²) = r² ln r² (U(0) = 0),  Li = L⁻¹
//! every grid point p maps to (xs, ys) = M[p,:] · (Qx, Qy) with
//! M[p,:] = [1, x_p, y_p] · Li[g²:, :g²] + [U(|p − P_n|²)]_n · Li[:g², :g²]
//! ```
//! M is fixed for a given image size and g: computed once, in f64.

/// U(r²) = r² ln r², with U(0) = 0.
fn radial(r2: f64) -> f64 {
    if r2 == 0.0 {
        0.0
    } else {
        r2 * r2.ln()
    }
}

/// Control points (PX, PY), row-major with x fastest.
pub fn control_points(g: usize) -> (Vec<f64>, Vec<f64>) {
    let lin = |i: usize| -1.0 + 2.0 * i as f64 / (g - 1) as f64;
    let mut px = Vec::with_capacity(g * g);
    let mut py = Vec::with_capacity(g * g);
    for r in 0..g {
        for c in 0..g {
            px.push(lin(c));
            py.push(lin(r));
        }
    }
    (px, py)
}

/// Inverse by Gauss–Jordan with partial pivoting ([n, n] row-major).
fn invert(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs())).expect("n > 0");
        for j in 0..n {
            a.swap(col * n + j, pivot * n + j);
            inv.swap(col * n + j, pivot * n + j);
        }
        let d = a[col * n + col];
        assert!(d.abs() > 1e-12, "TPS system is singular");
        for j in 0..n {
            a[col * n + j] /= d;
            inv[col * n + j] /= d;
        }
        for i in 0..n {
            if i != col {
                let f = a[i * n + col];
                if f != 0.0 {
                    for j in 0..n {
                        a[i * n + j] -= f * a[col * n + j];
                        inv[i * n + j] -= f * inv[col * n + j];
                    }
                }
            }
        }
    }
    inv
}

/// M: [points.len(), g²], mapping control-point positions to grid positions.
pub fn tps_matrix(g: usize, points_x: &[f64], points_y: &[f64]) -> Vec<f64> {
    let (px, py) = control_points(g);
    let m = g * g;
    let n = m + 3;
    let mut l = vec![0.0; n * n];
    for a in 0..m {
        for b in 0..m {
            l[a * n + b] = radial((px[a] - px[b]).powi(2) + (py[a] - py[b]).powi(2));
        }
        for (j, v) in [1.0, px[a], py[a]].into_iter().enumerate() {
            l[a * n + m + j] = v;
            l[(m + j) * n + a] = v;
        }
    }
    let li = invert(l, n);
    let mut out = vec![0.0; points_x.len() * m];
    for (p, (&x, &y)) in points_x.iter().zip(points_y).enumerate() {
        let affine = [1.0, x, y];
        let u: Vec<f64> = (0..m).map(|b| radial((x - px[b]).powi(2) + (y - py[b]).powi(2))).collect();
        for col in 0..m {
            let mut v = 0.0;
            for (j, a) in affine.iter().enumerate() {
                v += a * li[(m + j) * n + col];
            }
            for (b, ub) in u.iter().enumerate() {
                v += ub * li[b * n + col];
            }
            out[p * m + col] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_points_match_spec_for_g3() {
        let (px, py) = control_points(3);
        assert_eq!(px, vec![-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0]);
        assert_eq!(py, vec![-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }

    /// The spline interpolates: at a control point, M selects that point.
    #[test]
    fn interpolates_control_points() {
        let (px, py) = control_points(4);
        let m = tps_matrix(4, &px, &py);
        for p in 0..16 {
            for c in 0..16 {
                let want = if p == c { 1.0 } else { 0.0 };
                assert!((m[p * 16 + c] - want).abs() < 1e-9, "M[{p},{c}] = {}", m[p * 16 + c]);
            }
        }
    }
}
