//! One llama decoder layer: pre-norm attention (with Qwen3's per-head q/k norm where the
//! model has it) and pre-norm SwiGLU MLP, each residual.

use super::attention::{causal_attention, AttnShape, RowAttn};
use super::norm::{rms_norm, silu_mul};
use super::projection::{LoraStacks, ProjectionGroup};
use super::StepContext;
use crate::gate::{Gate, GateInput};
use crate::kv_cache::HostKv;
use crate::{Result, RuntimeError};

pub struct DecoderLayer {
    pub(super) index: usize,
    pub(super) attn_norm: Vec<f32>,
    pub(super) mlp_norm: Vec<f32>,
    /// Per-head q and k norm gains (Qwen3).
    pub(super) qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// q, k, v (one group when their formats allow stacking).
    pub(super) qkv: Vec<ProjectionGroup>,
    pub(super) o: ProjectionGroup,
    /// gate, up.
    pub(super) gate_up: Vec<ProjectionGroup>,
    pub(super) down: ProjectionGroup,
}

/// Runs groups over one input and returns the parts of all groups in order.
fn run_groups(
    groups: &[ProjectionGroup],
    x: &[f32],
    plan: &loramux_kernels::MixPlan,
    lora: &dyn LoraStacks,
) -> Result<Vec<Vec<f32>>> {
    let mut outs = Vec::new();
    for g in groups {
        outs.extend(g.forward(x, plan, lora)?);
    }
    Ok(outs)
}

fn take3(mut v: Vec<Vec<f32>>) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    match (v.pop(), v.pop(), v.pop()) {
        (Some(c), Some(b), Some(a)) if v.is_empty() => Ok((a, b, c)),
        _ => Err(RuntimeError::UnsupportedModel {
            reason: "q/k/v groups did not yield three outputs".into(),
        }),
    }
}

fn take2(mut v: Vec<Vec<f32>>) -> Result<(Vec<f32>, Vec<f32>)> {
    match (v.pop(), v.pop()) {
        (Some(b), Some(a)) if v.is_empty() => Ok((a, b)),
        _ => Err(RuntimeError::UnsupportedModel {
            reason: "gate/up groups did not yield two outputs".into(),
        }),
    }
}

impl DecoderLayer {
    pub(super) fn forward(
        &self,
        h: &mut [f32],
        step: &StepContext<'_>,
        caches: &mut [&mut HostKv],
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
        let (mut q, mut k, v) = take3(run_groups(&self.qkv, &x, &plan, lora)?)?;
        if let Some((q_norm, k_norm)) = &self.qk_norm {
            // Rows of head_dim: the norm runs over each head of each row.
            q = rms_norm(&q, q_norm, cfg.rms_norm_eps);
            k = rms_norm(&k, k_norm, cfg.rms_norm_eps);
        }
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
        let o = run_groups(std::slice::from_ref(&self.o), &attn, &plan, lora)?;
        for part in &o {
            h.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }

        let x = rms_norm(h, &self.mlp_norm, cfg.rms_norm_eps);
        let (mut g, u) = take2(run_groups(&self.gate_up, &x, &plan, lora)?)?;
        silu_mul(&mut g, &u);
        let d = run_groups(std::slice::from_ref(&self.down), &g, &plan, lora)?;
        for part in &d {
            h.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }
}
