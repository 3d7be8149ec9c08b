//! Hugging Face safetensors folder: `config.json`, one or more `*.safetensors`, and
//! `tokenizer.json` (+ `tokenizer_config.json` for the chat template). f32/f16/bf16.

use super::{TensorRole, TokenizerSource, WeightSource};
use crate::{ModelConfig, Result, RuntimeError};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct SafetensorsSource {
    dir: PathBuf,
    config: ModelConfig,
    /// Tensor name → file that holds it.
    index: HashMap<String, PathBuf>,
    files: HashMap<PathBuf, candle_core::safetensors::MmapedSafetensors>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<Self> {
        let config = super::hf_config::read(&dir.join("config.json"))?;
        config.validate()?;
        let mut files = HashMap::new();
        let mut index = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| RuntimeError::io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| RuntimeError::io(dir, e))?.path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            // SAFETY: the file is mapped read-only; loramux never writes model files, and a
            // concurrent writer would be a misuse the OS cannot prevent for any reader.
            let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }.map_err(
                |e| RuntimeError::ModelFormat {
                    path: path.clone(),
                    reason: e.to_string(),
                },
            )?;
            for (name, _) in st.tensors() {
                index.insert(name, path.clone());
            }
            files.insert(path, st);
        }
        if files.is_empty() {
            return Err(RuntimeError::ModelFormat {
                path: dir.to_path_buf(),
                reason: "no *.safetensors file in the folder".into(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            index,
            files,
        })
    }
}

impl WeightSource for SafetensorsSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn tensor(&mut self, role: TensorRole) -> Result<Option<QTensor>> {
        let name = role.hf_name();
        let Some(file) = self.index.get(&name) else {
            return Ok(None);
        };
        let st = &self.files[file];
        let t: Tensor = st
            .load(&name, &Device::Cpu)
            .map_err(|e| RuntimeError::ModelFormat {
                path: file.clone(),
                reason: format!("tensor {name}: {e}"),
            })?;
        let t = t.to_dtype(DType::F32)?;
        Ok(Some(QTensor::quantize(&t, GgmlDType::F32)?))
    }

    fn tokenizer_source(&self) -> TokenizerSource {
        let chat_template = std::fs::read_to_string(self.dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.get("chat_template")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            });
        TokenizerSource::File {
            tokenizer_json: self.dir.join("tokenizer.json"),
            chat_template,
        }
    }
}
