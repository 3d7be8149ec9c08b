//! `Linear`: `y = x Wᵀ + b` on the fastest path this CPU has for the layer's shape.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use super::amx::{self, PackedBf16};
use super::math;
use super::team::{Member, Shared};

/// How the encoder's matmuls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKind {
    /// f32 weights and activations, the `gemm` crate (exact to f32 rounding).
    F32,
    /// bf16 weights and activations on AMX tiles, f32 accumulation (x86_64 Linux with
    /// AMX-BF16 only).
    AmxBf16,
}

impl MatmulKind {
    /// AMX when this CPU and kernel offer it, else f32. `LORAMUX_EMBED_MATMUL=f32` forces
    /// the f32 path (for comparisons).
    pub fn best() -> Self {
        if std::env::var("LORAMUX_EMBED_MATMUL").is_ok_and(|v| v == "f32") {
            return Self::F32;
        }
        if Self::AmxBf16.usable() {
            Self::AmxBf16
        } else {
            Self::F32
        }
    }

    pub fn usable(self) -> bool {
        match self {
            Self::F32 => true,
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Self::AmxBf16 => amx::available(),
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            Self::AmxBf16 => false,
        }
    }
}

/// What is applied to `x Wᵀ + b` before it is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    None,
    /// BERT's exact GELU.
    Gelu,
}

impl Activation {
    pub(crate) fn apply(self, values: &mut [f32]) {
        match self {
            Self::None => {}
            Self::Gelu => math::gelu(values),
        }
    }
}

enum Weight {
    /// `[n, k]` row-major, as stored.
    F32(Vec<f32>),
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    Amx(PackedBf16),
}

pub(crate) struct Linear {
    n: usize,
    k: usize,
    weight: Weight,
    bias: Vec<f32>,
}

impl Linear {
    /// `weight` is `[n, k]` (PyTorch's layout), `bias` is `[n]`. A layer whose shape has no
    /// whole AMX tiles stays in f32 whatever `kind` asks.
    pub(crate) fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        n: usize,
        k: usize,
        kind: MatmulKind,
    ) -> Self {
        assert_eq!(weight.len(), n * k);
        assert_eq!(bias.len(), n);
        let weight = match kind {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            MatmulKind::AmxBf16 if kind.usable() => match PackedBf16::pack(&weight, n, k) {
                Some(packed) => Weight::Amx(packed),
                None => Weight::F32(weight),
            },
            _ => Weight::F32(weight),
        };
        Self { n, k, weight, bias }
    }

    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// bf16 scratch values [`Linear::forward`] needs for `m` rows.
    pub(crate) fn scratch_len(&self, m: usize) -> usize {
        match &self.weight {
            Weight::F32(_) => 0,
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Weight::Amx(packed) => packed.scratch_len(m),
        }
    }

    /// `member`'s part of `y = activation(x Wᵀ + b)` (`x` is `[m, k]`, `y` is `[m, n]`):
    /// every member of the team calls it with the same arguments, and `y` is complete
    /// after the team's next sync.
    pub(crate) fn forward(
        &self,
        member: Member<'_>,
        x: &[f32],
        m: usize,
        activation: Activation,
        scratch: &Shared<'_, u16>,
        y: &Shared<'_, f32>,
    ) {
        assert_eq!(x.len(), m * self.k);
        assert_eq!(y.len(), m * self.n);
        match &self.weight {
            Weight::F32(w) => {
                let rows = member.share(m);
                // SAFETY: these rows of y are this member's alone in this phase.
                let out = unsafe { y.part_mut(rows.start * self.n..rows.end * self.n) };
                self.forward_f32(
                    w,
                    &x[rows.start * self.k..rows.end * self.k],
                    rows.len(),
                    out,
                );
                activation.apply(out);
            }
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Weight::Amx(packed) => {
                debug_assert_eq!(packed.n(), self.n);
                packed.matmul(member, x, m, &self.bias, activation, scratch, y)
            }
        }
    }

    fn forward_f32(&self, w: &[f32], x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&self.bias);
        }
        if m == 0 {
            return;
        }
        // SAFETY: dst is [m, n] row-major; lhs is x [m, k] row-major; rhs(kk, j) = w[j·k + kk]
        // (Wᵀ read in place). All three slices hold exactly those elements, and dst does not
        // alias the inputs.
        unsafe {
            gemm_on_this_thread(
                (m, n, k),
                Strided::rows(y.as_mut_ptr(), n),
                true,
                Strided::rows(x.as_ptr(), k),
                Strided::cols(w.as_ptr(), k),
                1.0,
            );
        }
    }
}

/// A matrix operand read or written in place: element (i, j) at `ptr + i·row + j·col`.
#[derive(Clone, Copy)]
pub(super) struct Strided<P> {
    pub ptr: P,
    pub row: isize,
    pub col: isize,
}

impl<P> Strided<P> {
    /// Row-major with `row` elements between rows.
    pub fn rows(ptr: P, row: usize) -> Self {
        Self {
            ptr,
            row: row as isize,
            col: 1,
        }
    }

    /// Column-major with `col` elements between columns (a row-major matrix read transposed).
    pub fn cols(ptr: P, col: usize) -> Self {
        Self {
            ptr,
            row: 1,
            col: col as isize,
        }
    }
}

/// `dst = [dst +] scale · lhs · rhs` for `(m, n, k)` = `[m, k] · [k, n]`, on the calling
/// thread: the team splits the work above this call, so gemm must not start threads of its
/// own.
///
/// # Safety
/// Each operand addresses its whole matrix through its strides; dst does not alias lhs or rhs.
pub(super) unsafe fn gemm_on_this_thread(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col,
            dst.row,
            accumulate,
            lhs.ptr,
            lhs.col,
            lhs.row,
            rhs.ptr,
            rhs.col,
            rhs.row,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::embed::encoder::team::Team;

    fn run(lin: &Linear, x: &[f32], m: usize, activation: Activation, threads: usize) -> Vec<f32> {
        let team = Team::new(threads).unwrap();
        let mut y = vec![f32::NAN; m * lin.n()];
        let mut scratch = vec![0u16; lin.scratch_len(m)];
        let (ys, ss) = (Shared::new(&mut y), Shared::new(&mut scratch));
        team.run(|member| lin.forward(member, x, m, activation, &ss, &ys));
        y
    }

    #[test]
    fn f32_path_matches_f64_with_bias() {
        let mut rng = StdRng::seed_from_u64(5);
        for &(m, n, k) in &[(1, 7, 5), (19, 48, 40), (100, 384, 384)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let lin = Linear::new(w.clone(), b.clone(), n, k, MatmulKind::F32);
            let y = run(&lin, &x, m, Activation::None, 2);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = b[j] as f64
                        + (0..k)
                            .map(|l| x[i * k + l] as f64 * w[j * k + l] as f64)
                            .sum::<f64>();
                    assert!((y[i * n + j] as f64 - want).abs() < 1e-4, "({i},{j})");
                }
            }
        }
    }

    #[test]
    fn amx_request_on_an_odd_shape_stays_f32_and_exact() {
        let (m, n, k) = (3, 20, 12);
        let mut rng = StdRng::seed_from_u64(6);
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b = vec![0.25; n];
        let f32_lin = Linear::new(w.clone(), b.clone(), n, k, MatmulKind::F32);
        let f32_out = run(&f32_lin, &x, m, Activation::None, 2);
        let amx_lin = Linear::new(w, b, n, k, MatmulKind::AmxBf16);
        let amx_out = run(&amx_lin, &x, m, Activation::None, 2);
        assert_eq!(f32_out, amx_out);
    }

    #[test]
    fn gelu_epilogue_equals_gelu_after_the_matmul() {
        let (m, n, k) = (37, 64, 96);
        let mut rng = StdRng::seed_from_u64(8);
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        for kind in [MatmulKind::F32, MatmulKind::AmxBf16] {
            let lin = Linear::new(w.clone(), b.clone(), n, k, kind);
            let mut want = run(&lin, &x, m, Activation::None, 2);
            math::gelu(&mut want);
            let got = run(&lin, &x, m, Activation::Gelu, 2);
            assert_eq!(got, want, "{kind:?}");
            assert!(got.iter().any(|v| *v < 0.0) && got.iter().any(|v| *v > 0.5));
        }
    }
}
