//! `--device auto|cpu|cuda|cuda:N`: which device tch runs on. Training, generation and
//! distillation take the same code path on every device; only this choice differs.
use crate::error::{bail, Result};
use std::fmt;
use std::str::FromStr;
use tch::Device;

/// The `--device` flag as given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA device 0 when one is visible, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// `cuda` (= `cuda:0`) or `cuda:N`.
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" | "gpu" => Ok(DeviceArg::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(DeviceArg::Cuda)
                    .map_err(|_| format!("invalid CUDA ordinal {n:?} in {s:?}; use auto, cpu, cuda or cuda:N")),
                None => Err(format!("unknown device {s:?}; use auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Auto => write!(f, "auto"),
            DeviceArg::Cpu => write!(f, "cpu"),
            DeviceArg::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Number of CUDA devices tch can use (0 without a GPU or without the `cuda` build feature).
pub fn cuda_devices() -> usize {
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

impl DeviceArg {
    /// The tch device, or a clear error when CUDA is asked for but absent.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Auto => Ok(if cuda_devices() > 0 { Device::Cuda(0) } else { Device::Cpu }),
            DeviceArg::Cuda(n) => {
                let count = cuda_devices();
                if count == 0 {
                    let why = if cfg!(feature = "cuda") {
                        "no CUDA device is visible to libtorch (check nvidia-smi, CUDA_VISIBLE_DEVICES and that LIBTORCH points at a CUDA build of torch)"
                    } else {
                        "this scdd was built without the `cuda` feature (rebuild with `cargo build --release --features cuda` against a CUDA libtorch)"
                    };
                    bail!("--device {self}: CUDA is not available: {why}; use --device cpu or auto");
                }
                if n >= count {
                    bail!("--device {self}: there are only {count} CUDA device(s) (cuda:0..cuda:{})", count - 1);
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// A human-readable device name for reports (`cpu (2 threads)`, `cuda:0`).
pub fn describe(d: Device) -> String {
    match d {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        assert_eq!("auto".parse::<DeviceArg>().unwrap(), DeviceArg::Auto);
        assert_eq!("CPU".parse::<DeviceArg>().unwrap(), DeviceArg::Cpu);
        assert_eq!("cuda".parse::<DeviceArg>().unwrap(), DeviceArg::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceArg>().unwrap(), DeviceArg::Cuda(3));
        assert!("cuda:x".parse::<DeviceArg>().is_err());
        assert!("tpu".parse::<DeviceArg>().is_err());
        assert_eq!(DeviceArg::Cpu.resolve().unwrap(), Device::Cpu);
        if cuda_devices() == 0 {
            assert_eq!(DeviceArg::Auto.resolve().unwrap(), Device::Cpu);
            let e = DeviceArg::Cuda(0).resolve().unwrap_err().to_string();
            assert!(e.contains("CUDA is not available"), "{e}");
        }
    }
}
