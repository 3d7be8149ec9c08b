//! Launch geometry shared by the CUDA kernels and their CPU twins: the limits the kernels are
//! built for and how the shrink splits d_in across blocks.
//!
//! The CUDA source receives these constants as `-D` defines, so Rust and CUDA cannot disagree.

/// Largest rank the kernels take: the expand stages `[k, r_max]` of t in shared memory.
pub const MAX_RANK: usize = 64;
/// Most experts per row the kernels take (the top-k of the gate).
pub const MAX_EXPERTS: usize = 4;
/// Warps per shrink block; each warp computes one rank row of t.
pub const SHRINK_WARPS: usize = 4;
/// Threads per expand block; each thread computes one output column of one row.
pub const EXPAND_THREADS: usize = 128;
/// A shrink split covers at least this many elements of d_in, so that splitting never
/// leaves a warp with less than a few loads per lane.
pub const MIN_SPLIT_LEN: usize = 512;
/// At most this many splits: t grows with the split count.
pub const MAX_SPLITS: usize = 16;

/// How many pieces the shrink cuts d_in into.
///
/// Decode batches are small: rows · k · ⌈rank/warps⌉ blocks would leave most of the GPU idle
/// while it streams A. Cutting d_in into `splits` pieces (partial sums in t, added up in a
/// fixed order by the expand) multiplies the blocks until there are about two per
/// multiprocessor. Big batches get one split.
pub fn shrink_splits(entries: usize, r_max: usize, d_in: usize, multiprocessors: usize) -> usize {
    let blocks = entries.max(1) * r_max.div_ceil(SHRINK_WARPS).max(1);
    let wanted = (2 * multiprocessors).div_ceil(blocks);
    let most = d_in.div_ceil(MIN_SPLIT_LEN).clamp(1, MAX_SPLITS);
    wanted.clamp(1, most)
}

/// The `[lo, hi)` range of d_in covered by split `split` of `splits`.
pub fn split_range(split: usize, splits: usize, d_in: usize) -> (usize, usize) {
    let chunk = d_in.div_ceil(splits.max(1));
    let lo = (split * chunk).min(d_in);
    (lo, (lo + chunk).min(d_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_split_and_big_ones_do_not() {
        // One decode token, one rank-8 expert, hidden 4096, 132 SMs: 2 blocks want 132
        // splits; 4096 / 512 allows 8.
        assert_eq!(shrink_splits(1, 8, 4096, 132), 8);
        assert_eq!(shrink_splits(256, 64, 4096, 132), 1);
        assert_eq!(shrink_splits(4, 16, 100, 132), 1);
        assert_eq!(shrink_splits(0, 0, 0, 0), 1);
        assert!(shrink_splits(1, 1, 1 << 20, 1000) <= MAX_SPLITS);
    }

    #[test]
    fn split_ranges_tile_d_in_exactly() {
        for (d_in, splits) in [(4096, 8), (1000, 3), (5, 8), (1, 1)] {
            let mut next = 0;
            for s in 0..splits {
                let (lo, hi) = split_range(s, splits, d_in);
                assert_eq!(lo, next.min(d_in));
                assert!(hi >= lo);
                next = hi;
            }
            assert_eq!(next, d_in);
        }
    }
}
