//! One tiny smoke test of the modules on the wgpu backend (`--features wgpu`).
//!
//! Without a Vulkan driver the test says so and passes as skipped, unless `TOKEN_SHUFFLE_REQUIRE_WGPU=1`
//! (set by CI) turns the missing driver into a failure, so that CI really exercises the wgpu path.
#![cfg(feature = "wgpu")]

use burn::backend::Wgpu;
use burn::tensor::{Distribution, Tensor};
use token_shuffle::{TokenShuffleConfig, TokenUnshuffleConfig, window_merge, window_split};

#[test]
fn modules_and_ops_run_on_wgpu() {
    let device = Default::default();
    if !token_shuffle_test_support::device_or_skip::<Wgpu>("modules_and_ops_run_on_wgpu", &device) {
        return;
    }

    // The index shuffle is exact on the GPU path too.
    let x = Tensor::<Wgpu, 4>::random([2, 4, 8, 3], Distribution::Normal(0.0, 1.0), &device);
    let back = window_split(window_merge(x.clone(), 2).unwrap(), [4, 8], 2).unwrap();
    back.into_data().assert_eq(&x.clone().into_data(), true);

    // The modules produce finite outputs of the documented shapes.
    let config = TokenShuffleConfig::new(12).with_window(2);
    let shuffle = config.init::<Wgpu>(&device).unwrap();
    let unshuffle = TokenUnshuffleConfig::from(&config).init::<Wgpu>(&device).unwrap();
    let x = Tensor::<Wgpu, 4>::random([2, 4, 8, 12], Distribution::Normal(0.0, 1.0), &device);
    let merged = shuffle.forward(x).unwrap();
    assert_eq!(merged.dims(), [2, 8, 12]);
    let split = unshuffle.forward(merged).unwrap();
    assert_eq!(split.dims(), [2, 8, 4, 12]);
    let values = split.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0));
}
