//! # token-shuffle-test-support — what the workspace's tests share
//!
//! A dev-dependency of every library crate (and of `xtask`, for [`probe_device`]); never published.
//!
//! - [`TestBackend`]: the backend every numeric unit test runs on. Flex (CPU) by default; the cargo feature
//!   `test-wgpu`, `test-cuda` or `test-tch` moves the whole suite onto that backend, as burn-nn's `TestBackend` does:
//!   `cargo test --workspace --features test-wgpu`.
//! - [`assert_every_parameter_has_gradient`]: the check that a module's every weight is trained.
//! - [`Poison`]: a module mapper that turns every weight into NaN (a corrupt or diverged model).
//! - [`probe_device`] and [`device_or_skip`]: whether a backend finds a device (backends panic deep inside when
//!   they do not), for the command line's backend switch and for the GPU smoke tests.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend, backend::Backend};

/// The backend of the numeric tests: Flex unless a `test-*` feature chooses another.
#[cfg(not(any(feature = "test-wgpu", feature = "test-cuda", feature = "test-tch")))]
pub type TestBackend = burn::backend::Flex;
/// The backend of the numeric tests: wgpu (feature `test-wgpu`).
#[cfg(all(feature = "test-wgpu", not(feature = "test-cuda")))]
pub type TestBackend = burn::backend::Wgpu;
/// The backend of the numeric tests: LibTorch on the CPU (feature `test-tch`).
#[cfg(all(feature = "test-tch", not(any(feature = "test-wgpu", feature = "test-cuda"))))]
pub type TestBackend = burn::backend::LibTorch;
/// The backend of the numeric tests: CUDA (feature `test-cuda`).
#[cfg(feature = "test-cuda")]
pub type TestBackend = burn::backend::Cuda;

/// [`TestBackend`] with automatic differentiation.
pub type TestAutodiffBackend = burn::backend::Autodiff<TestBackend>;

/// The name of [`TestBackend`], for messages and for tolerances that differ per backend.
pub const TEST_BACKEND: &str = if cfg!(feature = "test-cuda") {
    "cuda"
} else if cfg!(feature = "test-wgpu") {
    "wgpu"
} else if cfg!(feature = "test-tch") {
    "tch"
} else {
    "flex"
};

/// Whether [`TestBackend`] computes NaN and ∞ as IEEE 754 says, so that tests of how non-finite values are
/// caught can run on it. Not on wgpu: WGSL lets an implementation assume that no float is NaN or ∞, and
/// burn-wgpu's `is_nan`/`is_finite` then report every value finite (seen on lavapipe).
pub const BACKEND_SEES_NON_FINITE: bool = !cfg!(feature = "test-wgpu");

/// Back-propagates `loss` and asserts that every float parameter of `module` received a non-zero gradient.
///
/// # Panics
/// When a parameter got no gradient or a zero one (naming it), or the module has no parameter.
pub fn assert_every_parameter_has_gradient<B: AutodiffBackend, M: Module<B>>(module: &M, loss: Tensor<B, 1>) {
    struct Check<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        path: Vec<String>,
        seen: usize,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Check<'_, B> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.seen += 1;
            let name = self.path.join(".");
            let grad = param
                .val()
                .grad(self.grads)
                .unwrap_or_else(|| panic!("no gradient reached {name}"));
            let norm: f32 = grad.abs().sum().into_scalar().elem();
            assert!(norm > 0.0, "the gradient of {name} is zero");
        }
    }
    let grads = loss.backward();
    let mut check = Check::<B> {
        grads: &grads,
        path: Vec::new(),
        seen: 0,
    };
    module.visit(&mut check);
    assert!(check.seen > 0, "the module has no parameter to check");
}

/// Turns every float parameter of a module into NaN (`model.map(&mut Poison)`): what a corrupt or diverged model
/// computes, for tests of what users see then.
pub struct Poison;

impl<B: Backend> ModuleMapper<B> for Poison {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| t.mul_scalar(f32::NAN))
    }
}

/// Creates and reads back one tiny tensor on `device`. Backends panic deep inside when they find no device; the
/// panic is caught here and returned as its message.
///
/// # Errors
/// The backend's panic message when it found no usable device.
pub fn probe_device<B: Backend>(device: &B::Device) -> Result<(), String> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = catch_unwind(AssertUnwindSafe(|| Tensor::<B, 1>::ones([1], device).into_data()));
    std::panic::set_hook(quiet);
    outcome.map(|_| ()).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no reason given".into())
    })
}

/// For a GPU smoke test: whether `device` works. When it does not, the test should return early: this prints
/// `SKIPPED <test>` with the install hint, unless `TOKEN_SHUFFLE_REQUIRE_WGPU=1` (set by CI), which makes a
/// missing driver a failure so that CI really exercises the GPU path.
///
/// # Panics
/// When the device is missing and `TOKEN_SHUFFLE_REQUIRE_WGPU=1`.
pub fn device_or_skip<B: Backend>(test: &str, device: &B::Device) -> bool {
    let Err(reason) = probe_device::<B>(device) else {
        return true;
    };
    let hint = "install a Vulkan driver (apt-get install mesa-vulkan-drivers libvulkan1) and set XDG_RUNTIME_DIR";
    let required = std::env::var("TOKEN_SHUFFLE_REQUIRE_WGPU").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "TOKEN_SHUFFLE_REQUIRE_WGPU=1 but {test} found no device ({reason}): {hint}"
    );
    eprintln!("SKIPPED {test}: no device ({reason}): {hint}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn the_gradient_check_names_a_parameter_that_gets_no_gradient() {
        let device = Default::default();
        let used = LinearConfig::new(2, 2).init::<TestAutodiffBackend>(&device);
        let x = Tensor::<TestAutodiffBackend, 2>::ones([1, 2], &device);
        assert_every_parameter_has_gradient(&used, used.forward(x.clone()).sum());
        // A frozen weight gets no gradient: the check must say so.
        let frozen = Linear {
            weight: Param::from_tensor(used.weight.val().detach()).set_require_grad(false),
            ..used.clone()
        };
        let loss = frozen.forward(x).sum();
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| assert_every_parameter_has_gradient(&frozen, loss)));
        let message = caught.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("weight"), "{message}");
    }

    #[test]
    fn the_test_backend_has_a_device() {
        assert_eq!(probe_device::<TestBackend>(&Default::default()), Ok(()));
    }
}
