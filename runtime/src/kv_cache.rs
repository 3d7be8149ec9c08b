//! Per-sequence KV cache, owned by the caller (the engine or the generator), never by layers.
//!
//! A cache holds the keys and values of the backend that filled it:
//! - host model: per layer `[positions, num_kv_heads, head_dim]` row-major f32 for K and for
//!   V, so appending a step is a plain `extend`;
//! - device model: per layer K and V tensors `[num_kv_heads, positions, head_dim]` on the
//!   model's device (preallocated, grown in chunks), so attention is one batched matmul.
//!
//! A new cache is empty and takes the kind of the first model that writes into it, so
//! callers create caches the same way for either backend. K is stored after rotary embedding.

use crate::{ModelConfig, Result, RuntimeError};
use candle_core::Tensor;

#[derive(Debug, Clone)]
pub struct KvCache {
    kv_width: usize,
    layers: usize,
    /// Positions a device cache preallocates (and grows by).
    chunk: usize,
    store: Store,
    len: usize,
}

#[derive(Debug, Clone)]
enum Store {
    Host(HostKv),
    Device(DeviceKv),
}

/// The host model's cache: per layer, K and V as `[positions, kv_width]` f32.
#[derive(Debug, Clone)]
pub(crate) struct HostKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

/// The device model's cache: per layer, K and V `[num_kv_heads, positions, head_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct DeviceKv {
    layers: Vec<candle_nn::kv_cache::KvCache>,
}

/// Positions a device cache allocates at once: enough for most chats without regrowing,
/// small enough that a batch of short sequences does not reserve the whole context.
const DEVICE_CHUNK: usize = 512;

impl KvCache {
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            kv_width: cfg.num_kv_heads * cfg.head_dim,
            layers: cfg.num_layers,
            chunk: DEVICE_CHUNK.min(cfg.max_position.max(1)),
            store: Store::Host(HostKv {
                keys: vec![Vec::new(); cfg.num_layers],
                values: vec![Vec::new(); cfg.num_layers],
            }),
            len: 0,
        }
    }

    /// Positions already cached (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held, for memory accounting.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::Host(h) => h
                .keys
                .iter()
                .chain(&h.values)
                .map(|v| v.capacity() * 4)
                .sum(),
            Store::Device(d) => d
                .layers
                .iter()
                .flat_map(|l| [l.k_cache().all_data(), l.v_cache().all_data()])
                .flatten()
                .map(|t| t.elem_count() * t.dtype().size_in_bytes())
                .sum(),
        }
    }

    /// The host store, for the host model. An empty cache of the other kind is converted.
    pub(crate) fn host(&mut self) -> Result<&mut HostKv> {
        if self.len == 0 && !matches!(self.store, Store::Host(_)) {
            self.store = Store::Host(HostKv {
                keys: vec![Vec::new(); self.layers],
                values: vec![Vec::new(); self.layers],
            });
        }
        match &mut self.store {
            Store::Host(h) => Ok(h),
            Store::Device(_) => Err(mixed_backends()),
        }
    }

    /// The device store, for the device model. An empty cache of the other kind is converted.
    pub(crate) fn device(&mut self) -> Result<&mut DeviceKv> {
        if self.len == 0 && !matches!(self.store, Store::Device(_)) {
            self.store = Store::Device(DeviceKv {
                // K/V are [num_kv_heads, positions, head_dim]: positions are dimension 1.
                layers: (0..self.layers)
                    .map(|_| candle_nn::kv_cache::KvCache::new(1, self.chunk))
                    .collect(),
            });
        }
        match &mut self.store {
            Store::Device(d) => Ok(d),
            Store::Host(_) => Err(mixed_backends()),
        }
    }

    /// Called once per step after every layer appended the step's tokens.
    pub(crate) fn commit(&mut self, tokens: usize) {
        self.len += tokens;
        if let Store::Host(h) = &self.store {
            debug_assert!(h.keys.iter().all(|k| k.len() == self.len * self.kv_width));
        }
    }
}

fn mixed_backends() -> RuntimeError {
    RuntimeError::InvalidRequest {
        reason: "this KV cache was filled by a model on another backend (host vs device)".into(),
    }
}

impl HostKv {
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.keys[layer].extend_from_slice(k);
        self.values[layer].extend_from_slice(v);
    }

    pub(crate) fn keys(&self, layer: usize) -> &[f32] {
        &self.keys[layer]
    }

    pub(crate) fn values(&self, layer: usize) -> &[f32] {
        &self.values[layer]
    }
}

impl DeviceKv {
    fn layer(&mut self, layer: usize) -> Result<&mut candle_nn::kv_cache::KvCache> {
        self.layers
            .get_mut(layer)
            .ok_or_else(|| RuntimeError::UnsupportedModel {
                reason: format!("KV cache has no layer {layer}"),
            })
    }

    /// Appends `k`, `v` (`[num_kv_heads, tokens, head_dim]`) to `layer`; returns the whole
    /// cached K and V of that layer, contiguous, `[num_kv_heads, positions, head_dim]`.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let cache = self.layer(layer)?;
        let (k, v) = cache.append(&k.contiguous()?, &v.contiguous()?)?;
        Ok((k.contiguous()?, v.contiguous()?))
    }

    /// Appends like [`DeviceKv::append`] without reading the cache back; returns the
    /// positions now cached in `layer`.
    pub(crate) fn push(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<usize> {
        let cache = self.layer(layer)?;
        cache.k_cache_mut().append(&k.contiguous()?)?;
        cache.v_cache_mut().append(&v.contiguous()?)?;
        Ok(cache.current_seq_len())
    }

    /// K and V of `layer` over the first `len` positions, `[num_kv_heads, len, head_dim]`,
    /// where `len` may exceed the cached positions: the storage past them holds zeros (it is
    /// allocated zeroed and only ever written at the end of the cached positions), and more
    /// zeros are padded on where it ends. Callers mask those positions out.
    pub(crate) fn padded(&mut self, layer: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let cache = self.layer(layer)?;
        let pad = |c: &candle_nn::kv_cache::Cache| -> Result<Tensor> {
            let all = c
                .all_data()
                .as_ref()
                .ok_or_else(|| RuntimeError::UnsupportedModel {
                    reason: format!("KV cache layer {layer} read before any append"),
                })?;
            let capacity = all.dim(1)?;
            Ok(if capacity >= len {
                all.narrow(1, 0, len)?
            } else {
                all.pad_with_zeros(1, 0, len - capacity)?
            })
        };
        Ok((pad(cache.k_cache())?, pad(cache.v_cache())?))
    }
}
