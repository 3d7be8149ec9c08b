//! The one place where GGUF's q/k row order meets the Hugging Face order.
//!
//! llama.cpp's converter permutes the rows of `q_proj` and `k_proj` of llama-architecture
//! models so that rotary embedding can rotate adjacent pairs `(2i, 2i+1)` ("interleaved").
//! Hugging Face checkpoints — and every PEFT adapter trained on them — rotate the halves
//! `(i, i + d/2)` of each head instead. loramux runs the Hugging Face convention everywhere,
//! so the GGUF loader undoes the permutation once, here, on whole rows. Rows are
//! independent in every GGML format (blocks run along a row), so the permutation works on
//! quantized bytes without dequantizing.

/// Converter permutation, per head of `head_dim` rows: GGUF row `2i + j` holds HF row
/// `j · head_dim/2 + i` (i < head_dim/2, j ∈ {0, 1}). Returns the rows in HF order.
///
/// `data` is `rows · row_bytes` bytes; `rows` must be a multiple of `head_dim`.
pub fn unpermute_interleaved_rows(data: &[u8], rows: usize, head_dim: usize) -> Option<Vec<u8>> {
    if rows == 0
        || head_dim == 0
        || !head_dim.is_multiple_of(2)
        || !rows.is_multiple_of(head_dim)
        || !data.len().is_multiple_of(rows)
    {
        return None;
    }
    let row_bytes = data.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![0u8; data.len()];
    for head in 0..rows / head_dim {
        let base = head * head_dim;
        for i in 0..half {
            for j in 0..2 {
                let gguf_row = base + 2 * i + j;
                let hf_row = base + j * half + i;
                out[hf_row * row_bytes..(hf_row + 1) * row_bytes]
                    .copy_from_slice(&data[gguf_row * row_bytes..(gguf_row + 1) * row_bytes]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converter's permutation as llama.cpp writes it in numpy:
    /// `w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols)`.
    fn converter_permute(rows_hf: &[u32], head_dim: usize) -> Vec<u32> {
        let half = head_dim / 2;
        let mut out = Vec::new();
        for head in 0..rows_hf.len() / head_dim {
            for i in 0..half {
                for j in 0..2 {
                    out.push(rows_hf[head * head_dim + j * half + i]);
                }
            }
        }
        out
    }

    #[test]
    fn undoes_the_converter_permutation() {
        let head_dim = 8;
        let rows: Vec<u32> = (0..24).collect();
        let permuted = converter_permute(&rows, head_dim);
        let bytes: Vec<u8> = permuted.iter().flat_map(|r| r.to_le_bytes()).collect();
        let back = unpermute_interleaved_rows(&bytes, 24, head_dim).expect("valid shape");
        let back: Vec<u32> = back
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, rows);
    }

    #[test]
    fn refuses_rows_that_are_not_whole_heads() {
        assert!(unpermute_interleaved_rows(&[0u8; 40], 10, 4).is_none());
        assert!(unpermute_interleaved_rows(&[0u8; 48], 12, 3).is_none());
    }
}
