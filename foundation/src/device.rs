//! Choosing where tensors live at run time: burn's pure-Rust CPU backend by default, a GPU
//! when the crate was built with the `cuda` or `wgpu` feature.

use burn::tensor::Device;

use crate::error::FoundationError;

/// A compute device by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's `flex` CPU backend.
    Cpu,
    /// The first CUDA GPU (feature `cuda`).
    Cuda,
    /// The default wgpu adapter (feature `wgpu`).
    Wgpu,
}

impl DeviceKind {
    /// Parses `cpu`, `cuda` or `wgpu`.
    ///
    /// # Errors
    /// Any other name.
    pub fn parse(name: &str) -> Result<DeviceKind, FoundationError> {
        match name {
            "cpu" | "flex" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            "wgpu" => Ok(DeviceKind::Wgpu),
            other => Err(FoundationError::Device(format!(
                "unknown device '{other}'; use cpu, cuda or wgpu"
            ))),
        }
    }

    /// The device, without autodiff.
    ///
    /// # Errors
    /// A GPU kind whose feature was not compiled in.
    pub fn device(self) -> Result<Device, FoundationError> {
        match self {
            DeviceKind::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => Ok(Device::cuda(0usize)),
            #[cfg(feature = "wgpu")]
            DeviceKind::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[allow(unreachable_patterns)]
            other => {
                let feature = if other == DeviceKind::Cuda {
                    "cuda"
                } else {
                    "wgpu"
                };
                Err(FoundationError::Device(format!(
                    "this build has no {feature} support; rebuild with `cargo build --release --features {feature}` (see docs/foundation.md) or use --device cpu"
                )))
            }
        }
    }
}
