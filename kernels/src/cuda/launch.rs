//! Launchers of `lora_shrink_{dtype}` and `lora_expand_{dtype}` on candle's CUDA stream,
//! wrapped in a candle custom op so the result is an ordinary tensor.

use super::gpu_slots::{GpuSlots, SlotBuffers};
use super::program::{ptx, MODULE};
use crate::element::Element;
use crate::launch_shape::{shrink_splits, EXPAND_THREADS, MAX_EXPERTS, MAX_RANK, SHRINK_WARPS};
use crate::twin::t_len;
use crate::{DensePlan, DeviceSlotStack, KernelError, MixPlan, Result, SlotStack};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use half::{bf16, f16};

/// Runs the mixture of `plan` on the fused kernels: returns `y + Σ_k w·s·B(Ax)`.
/// The caller has checked shapes, dtypes, devices, the plan and eligibility.
pub(crate) fn lora_mix_device(
    x: &Tensor,
    y: &Tensor,
    stack: &DeviceSlotStack,
    plan: &MixPlan,
) -> Result<Tensor> {
    let gpu = stack
        .gpu()
        .ok_or(KernelError::DeviceMismatch { what: "slot stack" })?;
    let op = LoraMixOp {
        host: stack.host(),
        gpu,
        plan: DensePlan::new(plan),
    };
    let run = || -> candle_core::Result<Tensor> {
        let (x, y) = (x.contiguous()?, y.contiguous()?);
        x.apply_op2_no_bwd(&y, &op)
    };
    run().map_err(|e| KernelError::backend("lora_mix on CUDA", e))
}

struct LoraMixOp<'a> {
    host: &'a SlotStack,
    gpu: &'a GpuSlots,
    plan: DensePlan,
}

impl CustomOp2 for LoraMixOp<'_> {
    fn name(&self) -> &'static str {
        "loramux-lora-mix"
    }

    /// CPU tensors never reach this op: `lora_mix_tensor` sends them to `lora_mix_cpu`.
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the fused LoRA op takes CUDA tensors; CPU tensors use lora_mix_cpu")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        y: &CudaStorage,
        y_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match x.dtype() {
            DType::F32 => self.run::<f32>(x, x_layout, y, y_layout)?,
            DType::F16 => self.run::<f16>(x, x_layout, y, y_layout)?,
            DType::BF16 => self.run::<bf16>(x, x_layout, y, y_layout)?,
            other => candle_core::bail!("no LoRA kernels for dtype {other:?}"),
        };
        Ok((out, y_layout.shape().clone()))
    }
}

/// An element type the kernels are instantiated for, with its slot buffers.
trait KernelElement: Element + DeviceRepr + CudaDType {
    fn slot_buffers(buffers: &SlotBuffers) -> Option<(&CudaSlice<Self>, &CudaSlice<Self>)>;
}

macro_rules! kernel_element {
    ($t:ty, $variant:ident) => {
        impl KernelElement for $t {
            fn slot_buffers(buffers: &SlotBuffers) -> Option<(&CudaSlice<Self>, &CudaSlice<Self>)> {
                match buffers {
                    SlotBuffers::$variant { a, b } => Some((a, b)),
                    _ => None,
                }
            }
        }
    };
}
kernel_element!(f32, F32);
kernel_element!(f16, F16);
kernel_element!(bf16, BF16);

fn int<T: TryFrom<usize>>(value: usize, what: &str) -> candle_core::Result<T> {
    T::try_from(value).map_err(|_| candle_core::Error::Msg(format!("{what}={value} too large")))
}

/// The sizes of one launch pair as the kernels take them, and the two grids.
struct Sizes {
    rows: i32,
    k: i32,
    r_max: i32,
    splits: i32,
    d_in: i64,
    d_out: i64,
    shrink_grid: LaunchConfig,
    expand_grid: LaunchConfig,
}

impl Sizes {
    fn new(plan: &DensePlan, host: &SlotStack, splits: usize) -> candle_core::Result<Self> {
        let (rows, k, r_max) = (plan.rows(), plan.k(), host.r_max());
        // The shared-memory staging in the expand is sized for these limits.
        if k > MAX_EXPERTS || r_max > MAX_RANK {
            candle_core::bail!("lora_mix: k={k} or r_max={r_max} exceeds the kernels' limits");
        }
        Ok(Self {
            rows: int(rows, "rows")?,
            k: int(k, "k")?,
            r_max: int(r_max, "r_max")?,
            splits: int(splits, "splits")?,
            d_in: int(host.d_in(), "d_in")?,
            d_out: int(host.d_out(), "d_out")?,
            shrink_grid: LaunchConfig {
                grid_dim: (
                    int(rows * k, "rows * k")?,
                    int(r_max.div_ceil(SHRINK_WARPS), "rank blocks")?,
                    int(splits, "splits")?,
                ),
                block_dim: (int(SHRINK_WARPS * 32, "shrink threads")?, 1, 1),
                shared_mem_bytes: 0,
            },
            expand_grid: LaunchConfig {
                grid_dim: (
                    int(rows, "rows")?,
                    int(host.d_out().div_ceil(EXPAND_THREADS), "d_out tiles")?,
                    1,
                ),
                block_dim: (int(EXPAND_THREADS, "expand threads")?, 1, 1),
                shared_mem_bytes: 0,
            },
        })
    }
}

impl LoraMixOp<'_> {
    fn run<T: KernelElement>(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        y: &CudaStorage,
        y_layout: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let dev = x.device().clone();
        let rows = self.plan.rows();
        let (r_max, d_in, d_out) = (self.host.r_max(), self.host.d_in(), self.host.d_out());
        let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) =
            (x_layout.contiguous_offsets(), y_layout.contiguous_offsets())
        else {
            candle_core::bail!("lora_mix: x and y must be contiguous");
        };
        if x_hi - x_lo != rows * d_in || y_hi - y_lo != rows * d_out {
            candle_core::bail!("lora_mix: x or y does not match the plan's {rows} rows");
        }
        let x_view = x.as_cuda_slice::<T>()?.slice(x_lo..x_hi);
        let y_view = y.as_cuda_slice::<T>()?.slice(y_lo..y_hi);
        let Some((a, b)) = T::slot_buffers(self.gpu.buffers()) else {
            candle_core::bail!("lora_mix: the slot stack is not in {:?}", T::DTYPE);
        };
        let multiprocessors = dev
            .cuda_stream()
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .w()?;
        let splits = shrink_splits(
            rows * self.plan.k(),
            r_max,
            d_in,
            multiprocessors.max(1) as usize,
        );
        let sizes = Sizes::new(&self.plan, self.host, splits)?;
        // One upload for the whole plan, slots then the weights' bits ([2, rows, k] as i32):
        // a host-to-device copy costs microseconds, a decode step's whole budget is tens.
        let entries = self.plan.slots().len();
        let mut packed = self.plan.slots().to_vec();
        packed.extend(self.plan.weights().iter().map(|w| w.to_bits() as i32));
        let plan_dev = dev.clone_htod(&packed)?;
        let plan_slots = plan_dev.slice(..entries);
        let plan_weights = plan_dev.slice(entries..);
        // SAFETY: the expand reads t[split, row, k, r] only for entries with a slot and
        // r < rank, and the shrink writes each of those for every split (an empty split
        // writes 0), so no uninitialized value is read; no memset launch needed.
        let mut t = unsafe { dev.alloc::<f32>(t_len(&self.plan, r_max, splits)) }?;
        // SAFETY: the expand kernel writes every one of the rows · d_out elements before
        // anything reads them (rows without experts get y_in copied).
        let mut out = unsafe { dev.alloc::<T>(rows * d_out) }?;
        let ptx = ptx().map_err(candle_core::Error::wrap)?;

        let shrink =
            dev.get_or_load_custom_func(&format!("lora_shrink_{}", T::SUFFIX), MODULE, ptx)?;
        let mut args = shrink.builder();
        args.arg(&x_view)
            .arg(a)
            .arg(self.gpu.ranks())
            .arg(&plan_slots)
            .arg(&mut t)
            .arg(&sizes.rows)
            .arg(&sizes.k)
            .arg(&sizes.r_max)
            .arg(&sizes.d_in)
            .arg(&sizes.splits);
        // SAFETY: argument types and order match `lora_shrink_{dtype}` in lora_mix.cu. x is
        // [rows, d_in], A [slots, r_max, d_in], ranks [slots] with every rank ≤ r_max (the
        // kernel clamps too), plan_slots [rows, k] holds −1 or a slot < slots (the plan was
        // validated against the stack), t has splits · rows · k · r_max elements; the grid
        // covers exactly rows · k entries, ⌈r_max / warps⌉ rank blocks and `splits` splits.
        unsafe { args.launch(sizes.shrink_grid) }.w()?;

        let expand =
            dev.get_or_load_custom_func(&format!("lora_expand_{}", T::SUFFIX), MODULE, ptx)?;
        let mut args = expand.builder();
        args.arg(&y_view)
            .arg(&mut out)
            .arg(b)
            .arg(self.gpu.ranks())
            .arg(self.gpu.scales())
            .arg(&plan_slots)
            .arg(&plan_weights)
            .arg(&t)
            .arg(&sizes.rows)
            .arg(&sizes.k)
            .arg(&sizes.r_max)
            .arg(&sizes.d_out)
            .arg(&sizes.splits);
        // SAFETY: argument types and order match `lora_expand_{dtype}` (plan_weights is the
        // f32 half of the packed plan: same size, read as float). y_in and out are
        // [rows, d_out], B [slots, d_out, r_max], ranks and scales [slots], the plan
        // [rows, k] with k ≤ MAX_EXPERTS and r_max ≤ MAX_RANK (checked in `Sizes::new`), so
        // the shared staging of t fits; t was written by the shrink on the same stream,
        // which orders the two launches. Threads with j ≥ d_out return after the barriers.
        unsafe { args.launch(sizes.expand_grid) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}
