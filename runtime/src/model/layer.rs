//! One llama decoder layer: pre-norm attention and pre-norm SwiGLU MLP, each residual.

use super::attention::{causal_attention, AttnShape, RowAttn};
use super::norm::{rms_norm, silu_mul};
use super::projection::{as_tensor, LoraStacks, Projection};
use super::StepContext;
use crate::gate::{Gate, GateInput};
use crate::{KvCache, ModuleKind, Result};

pub struct DecoderLayer {
    pub(super) index: usize,
    pub(super) attn_norm: Vec<f32>,
    pub(super) mlp_norm: Vec<f32>,
    /// Indexed by `ModuleKind::index()`.
    pub(super) proj: Vec<Projection>,
}

impl DecoderLayer {
    fn proj(&self, m: ModuleKind) -> &Projection {
        &self.proj[m.index()]
    }

    pub(super) fn forward(
        &self,
        h: &mut [f32],
        step: &StepContext<'_>,
        caches: &mut [&mut KvCache],
        lora: &dyn LoraStacks,
        gate: &dyn Gate,
    ) -> Result<()> {
        let cfg = step.cfg;
        let x = rms_norm(h, &self.attn_norm, cfg.rms_norm_eps);
        let plan = gate.plan(&GateInput {
            layer: self.index,
            hidden: &x,
            hidden_size: cfg.hidden_size,
            row_candidates: &step.row_candidates,
        });
        let xt = as_tensor(&x, cfg.hidden_size)?;
        let mut q = self.proj(ModuleKind::Q).forward(&xt, &x, &plan, lora)?;
        let mut k = self.proj(ModuleKind::K).forward(&xt, &x, &plan, lora)?;
        let v = self.proj(ModuleKind::V).forward(&xt, &x, &plan, lora)?;
        step.rope.apply(&mut q, cfg.num_heads, &step.cos, &step.sin);
        step.rope
            .apply(&mut k, cfg.num_kv_heads, &step.cos, &step.sin);
        let kv_width = cfg.num_kv_heads * cfg.head_dim;
        for (s, rows) in step.seq_rows.iter().enumerate() {
            caches[s].append(
                self.index,
                &k[rows.start * kv_width..rows.end * kv_width],
                &v[rows.start * kv_width..rows.end * kv_width],
            );
        }
        let row_attn: Vec<RowAttn<'_>> = (0..step.rows())
            .map(|r| {
                let cache = &*caches[step.row_seq[r]];
                RowAttn {
                    keys: cache.keys(self.index),
                    values: cache.values(self.index),
                    position: step.positions[r],
                }
            })
            .collect();
        let attn = causal_attention(
            &q,
            &row_attn,
            &AttnShape {
                num_heads: cfg.num_heads,
                num_kv_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
            },
        );
        let attn_t = as_tensor(&attn, self.proj(ModuleKind::O).d_in())?;
        let o = self
            .proj(ModuleKind::O)
            .forward(&attn_t, &attn, &plan, lora)?;
        h.iter_mut().zip(&o).for_each(|(a, b)| *a += b);

        let x = rms_norm(h, &self.mlp_norm, cfg.rms_norm_eps);
        let xt = as_tensor(&x, cfg.hidden_size)?;
        let mut g = self.proj(ModuleKind::Gate).forward(&xt, &x, &plan, lora)?;
        let u = self.proj(ModuleKind::Up).forward(&xt, &x, &plan, lora)?;
        silu_mul(&mut g, &u);
        let gt = as_tensor(&g, cfg.intermediate_size)?;
        let d = self.proj(ModuleKind::Down).forward(&gt, &g, &plan, lora)?;
        h.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        Ok(())
    }
}
