// LoRA mixture kernels of loramux, in the style of Punica's BGMV: every token row gathers its
// own experts from the slot stack, so one launch serves any mix of adapters.
//
//   SHRINK  t[split, row, k, r] = sum_{i in split} A[slot, r, i] * x[row, i]     (r < rank)
//   EXPAND  y_out[row, j] = y_in[row, j]
//                         + sum_k (w_k * scale[slot]) * sum_r B[slot, j, r] * sum_split t[.., r]
//
// Layouts (row-major): x [rows, d_in], y [rows, d_out], A [slots, r_max, d_in],
// B [slots, d_out, r_max], plan_slots/plan_weights [rows, k_max] (slot -1: no expert),
// t [splits, rows, k_max, r_max] f32. Storage is f32, f16 or bf16; arithmetic is f32.
// The CPU twins in src/twin.rs follow these loops one for one.
//
// Compiled at run time by NVRTC. No headers: the f16/bf16 conversions are written out so the
// source needs nothing from the toolkit, and they round to nearest even like the `half` crate.
// The Rust side defines LORA_MAX_RANK, LORA_MAX_EXPERTS and LORA_SHRINK_WARPS.

typedef unsigned short lm_u16;
struct lm_f16 { lm_u16 bits; };
struct lm_bf16 { lm_u16 bits; };

__device__ __forceinline__ float lm_to_f32(float v) { return v; }
__device__ __forceinline__ float lm_to_f32(lm_f16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}
__device__ __forceinline__ float lm_to_f32(lm_bf16 v) {
    return __uint_as_float(((unsigned int)v.bits) << 16);
}

__device__ __forceinline__ void lm_store(float v, float* out) { *out = v; }
__device__ __forceinline__ void lm_store(float v, lm_f16* out) {
    lm_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    out->bits = h;
}
__device__ __forceinline__ void lm_store(float v, lm_bf16* out) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays NaN (quiet), as in `half`
        out->bits = (lm_u16)((u >> 16) | 0x0040u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    out->bits = (lm_u16)(u >> 16);
}

// Written out rather than relying on the overloads NVRTC may or may not provide.
__device__ __forceinline__ long long lm_min(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ int lm_min(int a, int b) { return a < b ? a : b; }

// Grid (rows * k_max, ceil(r_max / LORA_SHRINK_WARPS), splits), LORA_SHRINK_WARPS warps per
// block. Each warp computes one rank row r over one split of d_in: lanes stride the row (the
// loads of a warp are contiguous), four independent sums keep loads in flight, then a
// butterfly reduction.
template <typename T>
__device__ void lora_shrink(const T* __restrict__ x, const T* __restrict__ a,
                            const int* __restrict__ ranks, const int* __restrict__ plan_slots,
                            float* __restrict__ t, int rows, int k_max, int r_max,
                            long long d_in, int splits) {
    const int entry = blockIdx.x;  // row * k_max + k
    const int slot = plan_slots[entry];
    if (slot < 0) return;
    const int rank = lm_min(ranks[slot], r_max);
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int r = blockIdx.y * LORA_SHRINK_WARPS + warp;
    if (r >= rank) return;  // the whole warp leaves together: the shuffles below stay full
    const int split = blockIdx.z;
    const long long chunk = (d_in + splits - 1) / splits;
    const long long lo = lm_min(d_in, (long long)split * chunk);
    const long long hi = lm_min(d_in, lo + chunk);
    const long long row = entry / k_max;
    const T* xr = x + row * d_in;
    const T* ar = a + ((long long)slot * r_max + r) * d_in;
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    long long i = lo + lane;
    for (; i + 96 < hi; i += 128) {
        s0 += lm_to_f32(ar[i]) * lm_to_f32(xr[i]);
        s1 += lm_to_f32(ar[i + 32]) * lm_to_f32(xr[i + 32]);
        s2 += lm_to_f32(ar[i + 64]) * lm_to_f32(xr[i + 64]);
        s3 += lm_to_f32(ar[i + 96]) * lm_to_f32(xr[i + 96]);
    }
    for (; i < hi; i += 32) s0 += lm_to_f32(ar[i]) * lm_to_f32(xr[i]);
    float acc = (s0 + s1) + (s2 + s3);
    for (int offset = 16; offset > 0; offset >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    if (lane == 0) t[((long long)split * rows * k_max + entry) * r_max + r] = acc;
}

// Grid (rows, ceil(d_out / blockDim.x)). The block first stages this row's t (splits added
// in order, scaled by w * scale) in shared memory; then each thread computes one output
// column j over all experts and ranks and writes y_out = y_in + sum, rounded once.
template <typename T>
__device__ void lora_expand(const T* __restrict__ y_in, T* __restrict__ y_out,
                            const T* __restrict__ b, const int* __restrict__ ranks,
                            const float* __restrict__ scales,
                            const int* __restrict__ plan_slots,
                            const float* __restrict__ plan_weights,
                            const float* __restrict__ t, int rows, int k_max, int r_max,
                            long long d_out, int splits) {
    __shared__ float u[LORA_MAX_EXPERTS * LORA_MAX_RANK];
    __shared__ int slot_of[LORA_MAX_EXPERTS];
    __shared__ int rank_of[LORA_MAX_EXPERTS];
    const long long row = blockIdx.x;
    if (threadIdx.x < k_max) {
        const int slot = plan_slots[row * k_max + threadIdx.x];
        slot_of[threadIdx.x] = slot;
        rank_of[threadIdx.x] = slot < 0 ? 0 : lm_min(ranks[slot], r_max);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < k_max * r_max; e += blockDim.x) {
        const int k = e / r_max;
        const int r = e % r_max;
        float v = 0.f;
        if (r < rank_of[k]) {
            for (int s = 0; s < splits; ++s)
                v += t[(((long long)s * rows + row) * k_max + k) * r_max + r];
            v *= plan_weights[row * k_max + k] * scales[slot_of[k]];
        }
        u[e] = v;
    }
    __syncthreads();
    const long long j = (long long)blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= d_out) return;
    float acc = 0.f;
    for (int k = 0; k < k_max; ++k) {
        const int rank = rank_of[k];
        if (rank == 0) continue;
        const T* bj = b + ((long long)slot_of[k] * d_out + j) * r_max;
        const float* uk = u + k * r_max;
        for (int r = 0; r < rank; ++r) acc += lm_to_f32(bj[r]) * uk[r];
    }
    const long long at = row * d_out + j;
    lm_store(lm_to_f32(y_in[at]) + acc, &y_out[at]);
}

// Typed entry points, named {op}_{dtype} like the Rust launchers that call them.
#define LM_KERNELS(T, NAME)                                                                    \
    extern "C" __global__ void __launch_bounds__(LORA_SHRINK_WARPS * 32) lora_shrink_##NAME( \
        const T* x, const T* a, const int* ranks, const int* plan_slots, float* t, int rows,  \
        int k_max, int r_max, long long d_in, int splits) {                                   \
        lora_shrink<T>(x, a, ranks, plan_slots, t, rows, k_max, r_max, d_in, splits);        \
    }                                                                                          \
    extern "C" __global__ void lora_expand_##NAME(                                             \
        const T* y_in, T* y_out, const T* b, const int* ranks, const float* scales,           \
        const int* plan_slots, const float* plan_weights, const float* t, int rows,           \
        int k_max, int r_max, long long d_out, int splits) {                                  \
        lora_expand<T>(y_in, y_out, b, ranks, scales, plan_slots, plan_weights, t, rows,      \
                       k_max, r_max, d_out, splits);                                          \
    }

LM_KERNELS(float, f32)
LM_KERNELS(lm_f16, f16)
LM_KERNELS(lm_bf16, bf16)
