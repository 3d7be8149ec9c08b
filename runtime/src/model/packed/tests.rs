//! The packed kernels against an f64 product of candle's own dequantization, and against
//! each other. Random weights and inputs; shapes with partial groups and row tiles.

use super::*;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FORMATS: [GgmlDType; 3] = [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0];

fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A random `[n, k]` weight in `dtype` and its dequantized values (candle's decoder, not ours).
fn weight(rng: &mut StdRng, n: usize, k: usize, dtype: GgmlDType) -> (QTensor, Vec<f32>) {
    // An offset per row so Q4_1's minimum matters.
    let mut w = random(rng, n * k);
    for (row, vals) in w.chunks_exact_mut(k).enumerate() {
        vals.iter_mut().for_each(|v| *v += (row % 5) as f32 * 0.1);
    }
    let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let deq = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (q, deq)
}

/// `x · Wᵀ` in f64 with `x` as given.
fn reference(x: &[f64], w: &[f32], n: usize, k: usize) -> Vec<f64> {
    let rows = x.len() / k;
    let mut y = vec![0f64; rows * n];
    for r in 0..rows {
        for c in 0..n {
            y[r * n + c] = (0..k).map(|i| x[r * k + i] * w[c * k + i] as f64).sum();
        }
    }
    y
}

/// The input as the kernels see it: `d·q` per block.
fn rounded_input(q: &QuantRows, bits: layout::Bits) -> Vec<f64> {
    let per_block = layout::BLOCK;
    let values: Vec<i32> = match bits {
        layout::Bits::Four => q.signed.iter().map(|&v| v as i32).collect(),
        layout::Bits::Eight => q.shifted.iter().map(|&v| v as i32 - 128).collect(),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 * q.scales[i / per_block] as f64)
        .collect()
}

fn run_tiles(w: &PackedWeight, q: &QuantRows, kernel: Kernel) -> Vec<f32> {
    let rows = q.scales.len() / w.blocks();
    let mut y = vec![f32::NAN; rows * w.n()];
    for g in 0..w.groups() {
        let mut r0 = 0;
        while r0 < rows {
            let tile = (rows - r0).min(ROW_TILE);
            unsafe { w.tile(kernel, g, q, r0, tile, y.as_mut_ptr()) };
            r0 += tile;
        }
    }
    y
}

#[test]
fn activation_rounding_is_within_half_a_step() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut x = random(&mut rng, 3 * 64);
    x[64..96].iter_mut().for_each(|v| *v = 0.0);
    for bits in [layout::Bits::Four, layout::Bits::Eight] {
        let q = QuantRows::new(&x, 64, bits);
        let back = rounded_input(&q, bits);
        for (i, (&a, &b)) in x.iter().zip(&back).enumerate() {
            let d = q.scales[i / 32] as f64;
            assert!(
                (a as f64 - b).abs() <= d / 2.0 + 1e-7,
                "x[{i}] {a} vs {b} (d {d})"
            );
        }
        let amax = x[..32].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((q.scales[0] - amax / 127.0).abs() < 1e-9);
        assert_eq!(q.scales[2], 0.0, "an all-zero block gets scale 0");
    }
}

#[test]
fn portable_kernel_matches_f64_on_the_rounded_input() {
    let mut rng = StdRng::seed_from_u64(2);
    // 40 columns: two full groups and a partial one; 1..=11 rows: partial and full tiles.
    let (n, k) = (40, 96);
    for dtype in FORMATS {
        let (qt, deq) = weight(&mut rng, n, k, dtype);
        let w = PackedWeight::from_qtensor(&qt).unwrap().unwrap();
        for rows in [1, 3, 8, 11] {
            let x = random(&mut rng, rows * k);
            let q = QuantRows::new(&x, k, w.bits());
            let y = run_tiles(&w, &q, Kernel::portable());
            let xr = rounded_input(&q, w.bits());
            let want = reference(&xr, &deq, n, k);
            let scale = reference(
                &xr.iter().map(|v| v.abs()).collect::<Vec<_>>(),
                &deq.iter().map(|v| v.abs()).collect::<Vec<_>>(),
                n,
                k,
            );
            for i in 0..y.len() {
                let err = (y[i] as f64 - want[i]).abs();
                assert!(
                    err <= 1e-5 * scale[i].max(1.0),
                    "{dtype:?} rows {rows} y[{i}] = {} want {} (err {err:e})",
                    y[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn matmul_is_close_to_the_unrounded_product() {
    let mut rng = StdRng::seed_from_u64(3);
    let (n, k) = (16 * 9, 128);
    for dtype in FORMATS {
        let (qt, deq) = weight(&mut rng, n, k, dtype);
        let w = PackedWeight::from_qtensor(&qt).unwrap().unwrap();
        let x = random(&mut rng, 5 * k);
        let y = w.matmul(&x, Kernel::portable());
        let want = reference(&x.iter().map(|&v| v as f64).collect::<Vec<_>>(), &deq, n, k);
        let max = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = y
            .iter()
            .zip(&want)
            .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
        // 8-bit input rounding: a few tenths of a percent of the output's range.
        assert!(
            worst <= 1e-2 * max,
            "{dtype:?}: worst {worst:e} of max {max}"
        );
        // And the rounding matters at all (the check is not vacuous).
        assert!(worst > 0.0);
    }
}

/// Every SIMD tier this CPU has, against the portable twin, bit for bit; the tiers it lacks
/// are named as skipped (a machine with neither checks nothing here and says so).
#[test]
fn simd_kernels_are_bit_identical_to_the_portable_one() {
    let tiers = [
        (
            "avx512-vnni",
            Kernel::vnni(),
            "avx512f + avx512bw + avx512vnni",
        ),
        ("avx2", Kernel::avx2(), "avx2 + fma"),
    ];
    let mut checked = 0;
    for (name, kernel, needs) in tiers {
        let Some(kernel) = kernel else {
            eprintln!("packed kernel tier {name}: SKIPPED (this CPU lacks {needs})");
            continue;
        };
        assert_eq!(kernel.name(), name);
        let mut rng = StdRng::seed_from_u64(4);
        for dtype in FORMATS {
            for (n, k, rows) in [(40, 96, 1), (40, 96, 7), (16 * 37, 576, 9), (48, 1536, 19)] {
                let (qt, _) = weight(&mut rng, n, k, dtype);
                let w = PackedWeight::from_qtensor(&qt).unwrap().unwrap();
                let x = random(&mut rng, rows * k);
                let a = w.matmul(&x, kernel);
                let b = w.matmul(&x, Kernel::portable());
                let q = QuantRows::new(&x, k, w.bits());
                assert_eq!(
                    a,
                    run_tiles(&w, &q, Kernel::portable()),
                    "{name} {dtype:?} {n}x{k} tiles"
                );
                assert_eq!(a, b, "{name} {dtype:?} {n}x{k} rows {rows}");
            }
        }
        eprintln!("packed kernel tier {name}: checked");
        checked += 1;
    }
    if checked == 0 {
        eprintln!("packed kernels: no SIMD tier on this CPU; only the portable kernel ran");
    }
}

#[test]
fn other_formats_are_not_packed() {
    let t = Tensor::ones((32, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
    for dtype in [GgmlDType::F32, GgmlDType::Q4K, GgmlDType::Q6K] {
        let q = QTensor::quantize(&t, dtype).unwrap();
        assert!(
            PackedWeight::from_qtensor(&q).unwrap().is_none(),
            "{dtype:?}"
        );
    }
}
