//! bf16 matmul on Intel AMX tiles: `y = x Wᵀ + b` with `x` and `W` rounded to bf16 and
//! f32 accumulation.
//!
//! Why AMX: embedding a 100-token prompt with MiniLM is about 1.1 G multiply-adds. Two
//! cores of AVX-512 f32 FMAs peak near 6 ms for that; one `tdpbf16ps` does a
//! 16×16×32 block (8,192 multiply-adds), which leaves the matmuls well under a millisecond.
//!
//! Layout. `W` (`[n, k]`, PyTorch's Linear layout) is packed once into B tiles: for each
//! group of 16 output columns and each block of 32 inputs, one 1 KiB tile whose row `r`
//! holds, for every column, the pair `W[col][2r], W[col][2r + 1]` (AMX's "VNNI" pairing).
//! A micro-kernel computes a 32×32 block of `y` as 2×2 tiles, so each A and B tile loaded
//! feeds two products.
//!
//! The tile registers are not visible to the compiler: every use is one `asm!` block that
//! configures the tiles, computes, stores and releases them, so nothing is assumed to
//! survive between blocks.

use std::arch::asm;
use std::sync::OnceLock;

use super::linear::Activation;
use super::team::{Member, Shared};

/// Rows and columns of `y` one micro-kernel call computes.
const BLOCK: usize = 32;
/// Inputs per tile row: 32 bf16 values are the 64 bytes of one tile row.
const TILE_K: usize = 32;
/// bf16 values in one packed 16-row, 64-byte tile.
const TILE_U16: usize = 512;

/// True when the CPU has AMX-BF16 and Linux has granted this process the tile state.
pub(crate) fn available() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| cpu_has_amx_bf16() && request_tile_permission())
}

fn cpu_has_amx_bf16() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // SAFETY (both calls): `cpuid` exists on every x86_64 CPU; leaf 7 is read only when
    // the maximum leaf says it is there.
    #[allow(unused_unsafe)]
    let (max_leaf, _) = unsafe { __get_cpuid_max(0) };
    if max_leaf < 7 {
        return false;
    }
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    // EDX bit 22: AMX-BF16, bit 24: AMX-TILE.
    leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0
}

/// Linux gives a process the 8 KiB tile state only on request; without it the first tile
/// instruction faults.
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which register state the kernel
    // saves for this process; it touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// The tile configuration every block uses: palette 1, tiles 0..8 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    column_bytes: [u16; 16],
    rows: [u8; 16],
}

static TILE_CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    column_bytes: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// f32 → bf16 rounding to nearest, ties to even (finite inputs; the encoder has no NaN).
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// A Linear layer's weight packed into AMX B tiles.
pub(crate) struct PackedBf16 {
    n: usize,
    k: usize,
    tiles: Vec<u16>,
}

impl PackedBf16 {
    /// Packs `w` (`[n, k]` row-major). `None` unless `n` and `k` are multiples of 32 (the
    /// micro-kernel has no partial tiles; the caller keeps such a layer in f32).
    pub(crate) fn pack(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if n == 0 || k == 0 || !n.is_multiple_of(BLOCK) || !k.is_multiple_of(TILE_K) {
            return None;
        }
        assert_eq!(
            w.len(),
            n * k,
            "weight of {} values for [{n}, {k}]",
            w.len()
        );
        let k_blocks = k / TILE_K;
        let mut tiles = vec![0u16; n * k];
        for col_tile in 0..n / 16 {
            for kb in 0..k_blocks {
                let tile = &mut tiles[(col_tile * k_blocks + kb) * TILE_U16..][..TILE_U16];
                for r in 0..16 {
                    for c in 0..16 {
                        let src = &w[(col_tile * 16 + c) * k + kb * TILE_K + 2 * r..][..2];
                        tile[r * 32 + c * 2] = to_bf16(src[0]);
                        tile[r * 32 + c * 2 + 1] = to_bf16(src[1]);
                    }
                }
            }
        }
        Some(Self { n, k, tiles })
    }

    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// bf16 values of the packed input [`PackedBf16::matmul`] needs for `m` rows.
    pub(crate) fn scratch_len(&self, m: usize) -> usize {
        m.div_ceil(16) * 16 * self.k
    }

    /// `member`'s part of `y[m, n] = activation(x[m, k] Wᵀ + bias)`: every member of the
    /// team calls it with the same arguments; `y` is complete after the team's next sync.
    /// `scratch` holds at least [`PackedBf16::scratch_len`] values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul(
        &self,
        member: Member<'_>,
        x: &[f32],
        m: usize,
        bias: &[f32],
        activation: Activation,
        scratch: &Shared<'_, u16>,
        y: &Shared<'_, f32>,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(available(), "AMX matmul called without AMX");
        assert_eq!(x.len(), m * k);
        assert_eq!(y.len(), m * n);
        assert_eq!(bias.len(), n);
        assert!(scratch.len() >= self.scratch_len(m));
        if m == 0 {
            return;
        }
        let k_blocks = k / TILE_K;
        let row_tiles = m.div_ceil(16);
        // Phase 1: x in bf16, packed like the weights (one 1 KiB A tile of 16 rows x 32
        // inputs after another, row tile major) so every tile load reads contiguous
        // memory. Rows past `m` in the last tile are zeros and never written out.
        for rt in member.share(row_tiles) {
            // SAFETY: row tile `rt` is this member's alone in this phase.
            let tiles = unsafe {
                scratch.part_mut(rt * k_blocks * TILE_U16..(rt + 1) * k_blocks * TILE_U16)
            };
            for r in 0..16 {
                let row = rt * 16 + r;
                for kb in 0..k_blocks {
                    let dst = &mut tiles[kb * TILE_U16 + r * TILE_K..][..TILE_K];
                    if row < m {
                        let src = &x[row * k + kb * TILE_K..][..TILE_K];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d = to_bf16(*s));
                    } else {
                        dst.fill(0);
                    }
                }
            }
        }
        member.sync();
        // SAFETY: after the sync nobody writes the packed input again in this matmul.
        let packed_x = unsafe { scratch.part(0..row_tiles * k_blocks * TILE_U16) };

        // Phase 2: blocks of 32 rows (the last one 16 when the row tiles are odd) x 32
        // columns. Consecutive blocks share a column block, so its B tiles stay in cache.
        let row_groups = row_tiles.div_ceil(2);
        let col_blocks = n / BLOCK;
        let session = TileSession::start();
        let mut c = [0f32; 4 * 256];
        for t in member.share(row_groups * col_blocks) {
            let (cb, rg) = (t / row_groups, t % row_groups);
            let run = |tile: usize, of: &[u16]| of[tile * k_blocks * TILE_U16..].as_ptr();
            let b = [run(2 * cb, &self.tiles), run(2 * cb + 1, &self.tiles)];
            let pair = 2 * rg + 1 < row_tiles;
            // SAFETY: A runs are row tiles 2rg (and 2rg+1 when `pair`) < row_tiles, each
            // `k_blocks` tiles inside `packed_x`; B runs are column tiles 2cb and 2cb+1 <
            // n/16 inside `tiles`; `c` has room for 4 tiles.
            unsafe {
                if pair {
                    let a = [run(2 * rg, packed_x), run(2 * rg + 1, packed_x)];
                    block_2x2(&session, a, b, k_blocks, c.as_mut_ptr());
                } else {
                    block_1x2(&session, run(2 * rg, packed_x), b, k_blocks, c.as_mut_ptr());
                }
            }
            let tiles = if pair { 4 } else { 2 };
            for (tile, block) in c.chunks_exact(256).take(tiles).enumerate() {
                let (half_row, half_col) = (tile / 2, tile % 2);
                let col0 = cb * BLOCK + half_col * 16;
                for (r, tile_row) in block.chunks_exact(16).enumerate() {
                    let row = rg * BLOCK + half_row * 16 + r;
                    if row >= m {
                        break;
                    }
                    // SAFETY: (row, col0..col0+16) is inside y and belongs to block t,
                    // which only this member computes.
                    let dst = unsafe { y.part_mut(row * n + col0..row * n + col0 + 16) };
                    for ((d, v), b) in dst.iter_mut().zip(tile_row).zip(&bias[col0..]) {
                        *d = v + b;
                    }
                    activation.apply(dst);
                }
            }
        }
    }
}

/// The tile registers configured on this thread (all eight 16 rows × 64 bytes) until the
/// session drops, which releases them. Only [`block_2x2`] uses tiles in between, and
/// nothing else in the process touches them.
struct TileSession(std::marker::PhantomData<*const ()>);

impl TileSession {
    fn start() -> Self {
        assert!(available(), "AMX used without AMX");
        // SAFETY: AMX is usable (asserted); ldtilecfg only reads the 64-byte config.
        unsafe {
            asm!("ldtilecfg [{cfg}]", cfg = in(reg) &TILE_CONFIG, options(nostack, readonly))
        };
        Self(std::marker::PhantomData)
    }
}

impl Drop for TileSession {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `start` on this thread (the session is not
        // Send); tilerelease returns them to the init state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// One 32×32 block: `c` (four 16×16 f32 tiles, row-major, tile order (0,0) (0,1) (1,0)
/// (1,1)) = two row tiles of A times two column tiles of B, each a run of `k_blocks`
/// packed 1 KiB tiles.
///
/// # Safety
/// Each pointer of `a` and `b` must be readable for `k_blocks` consecutive packed tiles;
/// `c` must be writable for 1,024 f32; `k_blocks >= 1`.
unsafe fn block_2x2(
    _tiles: &TileSession,
    a: [*const u16; 2],
    b: [*const u16; 2],
    k_blocks: usize,
    c: *mut f32,
) {
    debug_assert!(k_blocks >= 1);
    // SAFETY: per the function's contract, with the tiles configured by the session. The
    // block touches memory only through the pointers passed in.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {s64} * 1]",
            "tileloadd tmm6, [{b0} + {s64} * 1]",
            "tileloadd tmm7, [{b1} + {s64} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a1} + {s64} * 1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {kb}",
            "jnz 2b",
            "tilestored [{c} + {s64} * 1], tmm0",
            "tilestored [{c} + {s64} * 1 + 1024], tmm1",
            "tilestored [{c} + {s64} * 1 + 2048], tmm2",
            "tilestored [{c} + {s64} * 1 + 3072], tmm3",
            a0 = inout(reg) a[0] => _,
            a1 = inout(reg) a[1] => _,
            b0 = inout(reg) b[0] => _,
            b1 = inout(reg) b[1] => _,
            kb = inout(reg) k_blocks => _,
            s64 = in(reg) 64usize,
            c = in(reg) c,
            options(nostack),
        );
    }
}

/// [`block_2x2`] for a single row tile: `c` gets tiles (0,0) and (0,1).
///
/// # Safety
/// As [`block_2x2`], with one A run; `c` must be writable for 512 f32.
unsafe fn block_1x2(
    _tiles: &TileSession,
    a: *const u16,
    b: [*const u16; 2],
    k_blocks: usize,
    c: *mut f32,
) {
    debug_assert!(k_blocks >= 1);
    // SAFETY: per the function's contract, with the tiles configured by the session.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "2:",
            "tileloadd tmm4, [{a0} + {s64} * 1]",
            "tileloadd tmm6, [{b0} + {s64} * 1]",
            "tileloadd tmm7, [{b1} + {s64} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "add {a0}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {kb}",
            "jnz 2b",
            "tilestored [{c} + {s64} * 1], tmm0",
            "tilestored [{c} + {s64} * 1 + 1024], tmm1",
            a0 = inout(reg) a => _,
            b0 = inout(reg) b[0] => _,
            b1 = inout(reg) b[1] => _,
            kb = inout(reg) k_blocks => _,
            s64 = in(reg) 64usize,
            c = in(reg) c,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::encoder::team::Team;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn from_bf16(x: u16) -> f32 {
        f32::from_bits((x as u32) << 16)
    }

    /// The matmul on a team of `threads`, from a scratch buffer of NaNs: whatever the
    /// matmul reads must have been written by it.
    fn run_matmul(
        packed: &PackedBf16,
        x: &[f32],
        m: usize,
        bias: &[f32],
        threads: usize,
    ) -> Vec<f32> {
        let team = Team::new(threads).unwrap();
        let mut y = vec![f32::NAN; m * packed.n()];
        let mut scratch = vec![0x7FC0u16; packed.scratch_len(m)];
        let (ys, ss) = (Shared::new(&mut y), Shared::new(&mut scratch));
        team.run(|member| packed.matmul(member, x, m, bias, Activation::None, &ss, &ys));
        y
    }

    fn random(n: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// f64 twin on the bf16-rounded operands, and the error bound against the unrounded
    /// product.
    #[test]
    fn matches_f64_on_random_data() {
        if !available() {
            eprintln!("skipped: this CPU or kernel offers no AMX-BF16");
            return;
        }
        let mut rng = StdRng::seed_from_u64(11);
        let cases = [
            (1, 32, 32, 1),
            (37, 64, 96, 2),
            (100, 384, 384, 2),
            (70, 96, 1536, 3),
            (16, 64, 64, 3),
        ];
        for (m, n, k, threads) in cases {
            let x = random(m * k, &mut rng);
            let w = random(n * k, &mut rng);
            let bias = random(n, &mut rng);
            let packed = PackedBf16::pack(&w, n, k).unwrap();
            let y = run_matmul(&packed, &x, m, &bias, threads);
            let round = |v: f32| from_bf16(to_bf16(v)) as f64;
            for i in 0..m {
                for j in 0..n {
                    let (mut rounded, mut exact, mut magnitude) =
                        (bias[j] as f64, bias[j] as f64, 0.0);
                    for l in 0..k {
                        let (xv, wv) = (x[i * k + l], w[j * k + l]);
                        rounded += round(xv) * round(wv);
                        exact += xv as f64 * wv as f64;
                        magnitude += (xv as f64 * wv as f64).abs();
                    }
                    let got = y[i * n + j] as f64;
                    // f32 accumulation of k products: a few ulps of the magnitude.
                    assert!(
                        (got - rounded).abs() <= 1e-5 * magnitude + 1e-6,
                        "[{m}x{n}x{k}] ({i},{j}): {got} vs {rounded}"
                    );
                    // bf16 keeps 8 bits: each product is off by at most ~2^-8 relative.
                    assert!((got - exact).abs() <= 8e-3 * magnitude + 1e-6);
                }
            }
        }
    }

    #[test]
    fn refuses_shapes_without_whole_tiles() {
        let w = vec![0.5; 48 * 32];
        assert!(PackedBf16::pack(&w, 48, 32).is_none());
        assert!(PackedBf16::pack(&w, 32, 48).is_none());
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to the even mantissa.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
    }
}
