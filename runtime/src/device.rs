//! Where the base model runs, as the CLI names it (`--device cpu|cuda|cuda:N`), and how a
//! choice becomes a [`ModelBackend`]. `cpu` is the host backend (the faster CPU path);
//! `cuda` is the device backend on candle's CUDA device.
//!
//! Built without the `cuda` feature, or on a machine without a usable GPU, asking for CUDA
//! is a [`RuntimeError::DeviceUnavailable`] that says what to do, never a panic.

use crate::model::ModelBackend;
use crate::{Result, RuntimeError};
use candle_core::Device;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda {
        ordinal: usize,
    },
}

impl DeviceChoice {
    /// Opens the device: the host backend for `Cpu`, the device backend on the GPU for `Cuda`.
    pub fn backend(self) -> Result<ModelBackend> {
        match self {
            Self::Cpu => Ok(ModelBackend::Host),
            Self::Cuda { ordinal } => Ok(ModelBackend::Device(cuda_device(ordinal)?)),
        }
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, Self::Cuda { .. })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { ordinal: 0 } => f.write_str("cuda"),
            Self::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda { ordinal: 0 }),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|ordinal| Self::Cuda { ordinal })
                .ok_or_else(|| format!("unknown device {s:?}: expected cpu, cuda or cuda:N")),
        }
    }
}

impl serde::Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Opens CUDA device `ordinal` for the device backend.
#[cfg(feature = "cuda")]
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    let unavailable = |reason: String| RuntimeError::DeviceUnavailable {
        device: format!("cuda:{ordinal}"),
        reason,
    };
    // The driver layer has been seen to panic where a driver is missing; that is an error
    // here like any other.
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(unavailable(format!(
            "cannot open it ({e}); is there an NVIDIA GPU with a CUDA 13 driver on this machine?"
        ))),
        Err(_) => Err(unavailable(
            "the CUDA driver failed while opening it (is an NVIDIA driver installed?)".into(),
        )),
    }
}

/// Opens CUDA device `ordinal`: impossible in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    Err(RuntimeError::DeviceUnavailable {
        device: format!("cuda:{ordinal}"),
        reason: "this loramux was built without CUDA support; build it with \
                 scripts/build-cuda.sh (cargo feature `cuda`)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_device_names() {
        for (text, choice) in [
            ("cpu", DeviceChoice::Cpu),
            ("CUDA", DeviceChoice::Cuda { ordinal: 0 }),
            ("cuda:1", DeviceChoice::Cuda { ordinal: 1 }),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(choice));
        }
        assert_eq!(DeviceChoice::Cuda { ordinal: 0 }.to_string(), "cuda");
        assert_eq!(DeviceChoice::Cuda { ordinal: 2 }.to_string(), "cuda:2");
        for bad in ["tpu", "cuda:x", ""] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_is_the_host_backend() {
        assert!(matches!(
            DeviceChoice::Cpu.backend(),
            Ok(ModelBackend::Host)
        ));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let err = DeviceChoice::Cuda { ordinal: 0 }.backend().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("scripts/build-cuda.sh"), "{msg}");
        assert!(matches!(err, RuntimeError::DeviceUnavailable { .. }));
    }
}
