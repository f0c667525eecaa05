//! The one place where a concrete burn backend is chosen at run time (`--backend flex|wgpu|cuda`).
//!
//! Library code is generic over `B: Backend`; a command states what it runs as a [`BackendTask`] and
//! [`run_on`] instantiates it for the backend the user asked for, after checking that the backend is compiled
//! in and has a device.

use anyhow::{Result, bail};
use burn::tensor::backend::{Backend, Device, DeviceId};

/// The backends a command can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// burn's embedded CPU backend; always compiled in.
    Flex,
    /// WebGPU through Vulkan/Metal (on a CPU-only Linux machine: Mesa's lavapipe); cargo feature `wgpu`.
    Wgpu,
    /// NVIDIA GPUs through CUDA; cargo feature `cuda`.
    Cuda,
    /// CUDA with bf16 floats (`Cuda<bf16>`: tensor cores, half the memory); cargo feature `cuda`.
    #[value(name = "cuda-bf16")]
    CudaBf16,
    /// LibTorch (PyTorch's C++ library, through burn-tch) on the CPU; cargo feature `tch`, torch==2.9.0.
    Tch,
    /// LibTorch on CUDA GPU 0 (cuBLAS matmuls, PyTorch's fused attention); cargo feature `tch`.
    #[value(name = "tch-cuda")]
    TchCuda,
}

impl BackendKind {
    /// Every backend, compiled in or not.
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Flex,
        BackendKind::Wgpu,
        BackendKind::Cuda,
        BackendKind::CudaBf16,
        BackendKind::Tch,
        BackendKind::TchCuda,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::CudaBf16 => "cuda-bf16",
            BackendKind::Tch => "tch",
            BackendKind::TchCuda => "tch-cuda",
        }
    }

    /// The cargo feature that compiles the backend in.
    pub fn feature(self) -> &'static str {
        match self {
            BackendKind::CudaBf16 => "cuda",
            BackendKind::TchCuda => "tch",
            other => other.name(),
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Flex => true,
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda | BackendKind::CudaBf16 => cfg!(feature = "cuda"),
            BackendKind::Tch | BackendKind::TchCuda => cfg!(feature = "tch"),
        }
    }

    /// What to do when the backend finds no device.
    fn device_hint(self) -> &'static str {
        match self {
            BackendKind::Flex => "Flex runs on any CPU; this is a bug, please report it",
            BackendKind::Wgpu => {
                "install a Vulkan driver (on Debian/Ubuntu without a GPU: `apt-get install mesa-vulkan-drivers \
                 libvulkan1`, which provides the lavapipe CPU driver) and set XDG_RUNTIME_DIR"
            }
            BackendKind::Cuda | BackendKind::CudaBf16 => {
                "it needs an NVIDIA GPU with its driver and NVRTC; check `nvidia-smi`"
            }
            BackendKind::Tch | BackendKind::TchCuda => {
                "it needs torch==2.9.0's libraries on LD_LIBRARY_PATH (scripts/tch.sh sets it) and, for tch-cuda, \
                 a CUDA build of torch and an NVIDIA GPU"
            }
        }
    }
}

/// One device named on the command line (`--devices cuda:0,cuda:1`): `cpu` (a Flex replica; repeat it for
/// several), `cuda:N` (GPU N), `wgpu:N` (discrete GPU N), `wgpu:cpu` (a CPU Vulkan driver such as lavapipe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The backends this device belongs to, as written (`cpu`, `cuda`, `wgpu`).
    family: &'static str,
    /// The device's id in its backend (burn's `Device::from_id`).
    id: DeviceId,
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (family, suffix) = text.split_once(':').unwrap_or((text, ""));
        let index = |default: Option<u16>| -> Result<u16, String> {
            match (suffix, default) {
                ("", Some(d)) => Ok(d),
                (i, _) => i
                    .parse()
                    .map_err(|_| format!("`{text}`: the device index must be a number, e.g. {family}:0")),
            }
        };
        match family {
            "cpu" => Ok(DeviceSpec {
                family: "cpu",
                id: DeviceId::new(0, index(Some(0))?),
            }),
            "cuda" => Ok(DeviceSpec {
                family: "cuda",
                id: DeviceId::new(0, index(None)?),
            }),
            // cubecl-wgpu's ids: type 0 is a discrete GPU, 3 the CPU adapter.
            "wgpu" if suffix == "cpu" => Ok(DeviceSpec {
                family: "wgpu",
                id: DeviceId::new(3, 0),
            }),
            "wgpu" => Ok(DeviceSpec {
                family: "wgpu",
                id: DeviceId::new(0, index(None)?),
            }),
            _ => Err(format!(
                "`{text}` is not a device: use cpu, cuda:N, wgpu:N or wgpu:cpu (comma-separated for several)"
            )),
        }
    }
}

/// The devices `specs` name on backend `B` (`kind`), each checked to work; the backend's default device when
/// `specs` is empty.
///
/// # Errors
/// When a device belongs to another backend than `kind`, or does not work.
pub fn devices<B: Backend>(kind: BackendKind, specs: &[DeviceSpec]) -> Result<Vec<B::Device>> {
    if specs.is_empty() {
        return Ok(vec![Default::default()]);
    }
    // The device kinds each backend has, and the id burn's `Device::from_id` gives each (burn-tch: type 0 is
    // CUDA, 2 the CPU).
    let families: &[&str] = match kind {
        BackendKind::Flex => &["cpu"],
        BackendKind::Wgpu => &["wgpu"],
        BackendKind::Cuda | BackendKind::CudaBf16 => &["cuda"],
        BackendKind::Tch | BackendKind::TchCuda => &["cpu", "cuda"],
    };
    specs
        .iter()
        .map(|spec| {
            if !families.contains(&spec.family) {
                bail!(
                    "--devices names a {} device but --backend is {}: its devices are written {}",
                    spec.family,
                    kind.name(),
                    families
                        .iter()
                        .map(|f| if *f == "cpu" {
                            "cpu".to_string()
                        } else {
                            format!("{f}:N")
                        })
                        .collect::<Vec<_>>()
                        .join(" or ")
                );
            }
            let id = match (kind, spec.family) {
                (BackendKind::Tch | BackendKind::TchCuda, "cpu") => DeviceId::new(2, 0),
                _ => spec.id,
            };
            let device = B::Device::from_id(id);
            probe_device::<B>(kind, &device)?;
            Ok(device)
        })
        .collect()
}

/// Work that is generic over the backend, run by [`run_on`] on the one the user chose.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` with `device`.
    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<Self::Output>;
}

/// Runs `task` on the backend `kind`, or explains why it cannot.
pub fn run_on<T: BackendTask>(kind: BackendKind, task: T) -> Result<T::Output> {
    match kind {
        BackendKind::Flex => probe_and_run::<burn::backend::Flex, T>(kind, Default::default(), task),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => probe_and_run::<burn::backend::Wgpu, T>(kind, Default::default(), task),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => probe_and_run::<burn::backend::Cuda, T>(kind, Default::default(), task),
        #[cfg(feature = "cuda")]
        BackendKind::CudaBf16 => {
            probe_and_run::<burn::backend::Cuda<burn::tensor::bf16>, T>(kind, Default::default(), task)
        }
        #[cfg(feature = "tch")]
        BackendKind::Tch => {
            probe_and_run::<burn::backend::LibTorch, T>(kind, burn::backend::libtorch::LibTorchDevice::Cpu, task)
        }
        #[cfg(feature = "tch")]
        BackendKind::TchCuda => {
            probe_and_run::<burn::backend::LibTorch, T>(kind, burn::backend::libtorch::LibTorchDevice::Cuda(0), task)
        }
        #[allow(unreachable_patterns)]
        _ => bail!(
            "the {} backend is not compiled into this binary: rebuild with the `{1}` cargo feature, e.g. \
             `cargo run --release -p xtask --features {1} -- …`",
            kind.name(),
            kind.feature()
        ),
    }
}

fn probe_and_run<B: Backend, T: BackendTask>(kind: BackendKind, device: B::Device, task: T) -> Result<T::Output> {
    probe_device::<B>(kind, &device)?;
    task.run::<B>(kind, device)
}

/// Whether `device` works (see [`token_shuffle_test_support::probe_device`]); if not, an error that says what
/// to install.
pub fn probe_device<B: Backend>(kind: BackendKind, device: &B::Device) -> Result<()> {
    token_shuffle_test_support::probe_device::<B>(device).or_else(|reason| {
        // LibTorch's reasons carry a C++ stack trace: its first line says it.
        let reason = reason.lines().next().unwrap_or_default();
        bail!(
            "the {} backend found no usable device ({reason}): {}",
            kind.name(),
            kind.device_hint()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports the backend it ran on.
    struct Name;
    impl BackendTask for Name {
        type Output = &'static str;
        fn run<B: Backend>(self, backend: BackendKind, _: B::Device) -> Result<&'static str> {
            Ok(backend.name())
        }
    }

    #[test]
    fn flex_is_always_there() {
        assert!(BackendKind::Flex.compiled_in());
        assert_eq!(run_on(BackendKind::Flex, Name).unwrap(), "flex");
    }

    #[test]
    fn devices_are_parsed_and_must_belong_to_the_backend() {
        let specs: Vec<DeviceSpec> = ["cpu", "cpu:1"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(
            devices::<burn::backend::Flex>(BackendKind::Flex, &specs).unwrap().len(),
            2
        );
        assert_eq!(devices::<burn::backend::Flex>(BackendKind::Flex, &[]).unwrap().len(), 1);
        let cuda: DeviceSpec = "cuda:1".parse().unwrap();
        assert_eq!(cuda.id, DeviceId::new(0, 1));
        let err = devices::<burn::backend::Flex>(BackendKind::Flex, &[cuda])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a cuda device but --backend is flex"), "{err}");
        for bad in ["gpu:0", "cuda", "cuda:x", "wgpu:-1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_that_is_not_compiled_in_says_how_to_get_it() {
        let err = run_on(BackendKind::Cuda, Name).unwrap_err().to_string();
        assert!(
            err.contains("not compiled into this binary") && err.contains("--features cuda"),
            "{err}"
        );
    }
}
