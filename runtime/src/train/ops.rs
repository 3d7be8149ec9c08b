//! Autograd ops for training with a frozen base model.
//!
//! candle's matmul backward computes the gradient of both operands, so a frozen weight would
//! cost a second GEMM per projection that is thrown away; its fused `rms_norm` and
//! `softmax_last_dim` have no backward at all. These custom ops carry the frozen tensors
//! inside the op and return the gradient of the activations only.
//!
//! Shapes: [`FrozenLinear`] maps `[rows, d_in]` to `[rows, d_out]` with a weight
//! `[d_out, d_in]`; [`FrozenRmsNorm`] normalizes the last dimension; [`CausalSoftmax`] takes
//! attention scores `[.., q_len, k_len]` with query `i` seeing keys `0..=i`.

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Storage, Tensor, D};

/// Copies the (contiguous) input of a custom op into a tensor of its own.
fn input_tensor(storage: &CpuStorage, layout: &Layout) -> Result<Tensor> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Tensor::from_slice(&data[start..end], layout.shape(), &Device::Cpu),
        None => candle_core::bail!("training ops expect contiguous f32 inputs"),
    }
}

fn into_storage(t: Tensor) -> Result<(CpuStorage, Shape)> {
    let t = t.contiguous()?;
    let shape = t.shape().clone();
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => {
            Ok((CpuStorage::F32(v[a..b].to_vec()), shape))
        }
        _ => candle_core::bail!("training ops run on the CPU in f32"),
    }
}

fn f32_rows<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&storage.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("training ops expect contiguous f32 inputs"),
    }
}

/// `y = x · Wᵀ` with `W` frozen: the backward pass yields `dx = dy · W` and nothing for `W`.
pub struct FrozenLinear {
    weight: Tensor,
}

impl FrozenLinear {
    pub fn new(weight: Tensor) -> Self {
        Self { weight }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1(Self {
            weight: self.weight.clone(),
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input_tensor(storage, layout)?;
        into_storage(x.matmul(&self.weight.t()?)?)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.weight)?))
    }
}

/// RMS normalization over the last dimension with a frozen gain `w`:
/// `y = x · r · w`, `r = 1 / sqrt(mean(x²) + eps)`.
pub struct FrozenRmsNorm {
    gain: Tensor,
    eps: f64,
}

impl FrozenRmsNorm {
    pub fn new(gain: Tensor, eps: f64) -> Self {
        Self { gain, eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1(Self {
            gain: self.gain.clone(),
            eps: self.eps,
        })
    }
}

impl CustomOp1 for FrozenRmsNorm {
    fn name(&self) -> &'static str {
        "frozen-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_rows(storage, layout)?;
        let gain = self.gain.to_vec1::<f32>()?;
        let d = gain.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let r = 1.0 / (ms + self.eps as f32).sqrt();
            out.extend(row.iter().zip(&gain).map(|(v, g)| v * r * g));
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // dx = r · (g − x · r² · mean(g · x)) with g = dy · w.
        let r = (arg.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let g = grad_res.broadcast_mul(&self.gain)?;
        let m = (&g * arg)?.mean_keepdim(D::Minus1)?;
        let inner = (g - arg.broadcast_mul(&(r.sqr()? * m)?)?)?;
        Ok(Some(inner.broadcast_mul(&r)?))
    }
}

/// `softmax(scale · s)` over the last dimension where query row `i` (second to last
/// dimension) sees only keys `0..=i`; masked entries are exactly 0.
pub struct CausalSoftmax {
    scale: f32,
}

impl CausalSoftmax {
    pub fn new(scale: f32) -> Self {
        Self { scale }
    }

    pub fn forward(&self, scores: &Tensor) -> Result<Tensor> {
        scores.apply_op1(Self { scale: self.scale })
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let s = f32_rows(storage, layout)?;
        let dims = layout.shape().dims();
        if dims.len() < 2 {
            candle_core::bail!("causal softmax expects [.., q_len, k_len], got {dims:?}");
        }
        let (q_len, k_len) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        // Queries are the last q_len positions of the k_len keys.
        let offset = k_len.saturating_sub(q_len);
        let mut out = vec![0f32; s.len()];
        for (row_index, (row, dst)) in s
            .chunks_exact(k_len)
            .zip(out.chunks_exact_mut(k_len))
            .enumerate()
        {
            let visible = (row_index % q_len) + offset + 1;
            let max = row[..visible]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v * self.scale));
            let mut sum = 0.0;
            for (d, &v) in dst[..visible].iter_mut().zip(&row[..visible]) {
                *d = (v * self.scale - max).exp();
                sum += *d;
            }
            dst[..visible].iter_mut().for_each(|d| *d /= sum);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // dx = scale · y · (dy − Σ dy·y); masked entries have y = 0 and get no gradient.
        let dot = (grad_res * res)?.sum_keepdim(D::Minus1)?;
        let dx = (res * grad_res.broadcast_sub(&dot)?)?;
        Ok(Some((dx * self.scale as f64)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v = crate::adapter::testing::values(seed, n);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Gradient of `sum(op(x) · probe)` from the op against the same expression built from
    /// candle's differentiable primitives.
    fn compare_grads(op: impl Fn(&Tensor) -> Tensor, reference: impl Fn(&Tensor) -> Tensor) {
        let x = Var::from_tensor(&random(&[2, 3, 5, 5], 7)).unwrap();
        let probe = random(&[2, 3, 5, 5], 8);
        let ours = op(x.as_tensor());
        let theirs = reference(x.as_tensor());
        let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "forward differs");
        let g1 = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (theirs * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (g1.get(&x).unwrap(), g2.get(&x).unwrap());
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(scale > 1e-3, "the reference gradient is not trivially zero");
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5 * scale.max(1.0));
    }

    #[test]
    fn causal_softmax_matches_masked_softmax() {
        let mask: Vec<f32> = (0..25)
            .map(|i| if i % 5 > i / 5 { -1e9 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (5, 5), &Device::Cpu).unwrap();
        compare_grads(
            |x| CausalSoftmax::new(0.7).forward(x).unwrap(),
            |x| {
                let s = (x * 0.7).unwrap().broadcast_add(&mask).unwrap();
                candle_nn::ops::softmax(&s, D::Minus1).unwrap()
            },
        );
    }

    #[test]
    fn rms_norm_matches_the_slow_reference() {
        let gain = random(&[5], 9);
        compare_grads(
            |x| FrozenRmsNorm::new(gain.clone(), 1e-5).forward(x).unwrap(),
            |x| candle_nn::ops::rms_norm_slow(x, &gain, 1e-5).unwrap(),
        );
    }

    #[test]
    fn frozen_linear_matches_matmul_and_leaves_the_weight_alone() {
        let w = Var::from_tensor(&random(&[4, 5], 3)).unwrap();
        let x = Var::from_tensor(&random(&[6, 5], 4)).unwrap();
        let probe = random(&[6, 4], 5);
        let ours = FrozenLinear::new(w.as_tensor().clone())
            .forward(x.as_tensor())
            .unwrap();
        let theirs = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        let g1 = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (theirs * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let diff = (g1.get(&x).unwrap() - g2.get(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(
            g1.get(&w).is_none(),
            "the frozen weight must get no gradient"
        );
        assert!(g2.get(&w).is_some());
    }
}
