//! One tiny smoke test of LM training on the wgpu backend (`--features wgpu`): two steps of the tiniest LM, a
//! finite loss and a checkpoint on disk.
//!
//! Without a Vulkan driver the test says so and passes as skipped, unless `TOKEN_SHUFFLE_REQUIRE_WGPU=1` (set by
//! CI) turns the missing driver into a failure.
#![cfg(feature = "wgpu")]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::backend::{Autodiff, Wgpu};
use burn::tensor::Tensor;
use token_shuffle_data::cache::{CacheKey, CodeCache, fingerprint};
use token_shuffle_train::{LmData, LmEvent, LmTrainingConfig, Stage, train_lm};

fn wgpu_available(device: &burn::tensor::Device<Wgpu>) -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = catch_unwind(AssertUnwindSafe(|| Tensor::<Wgpu, 1>::ones([1], device).into_data())).is_ok();
    std::panic::set_hook(hook);
    ok
}

#[test]
fn lm_training_runs_on_wgpu() {
    let device = Default::default();
    if !wgpu_available(&device) {
        let required = std::env::var("TOKEN_SHUFFLE_REQUIRE_WGPU").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "TOKEN_SHUFFLE_REQUIRE_WGPU=1 but wgpu found no adapter: install mesa-vulkan-drivers libvulkan1"
        );
        eprintln!(
            "SKIPPED lm_training_runs_on_wgpu: wgpu found no Vulkan adapter (apt-get install mesa-vulkan-drivers libvulkan1)"
        );
        return;
    }
    let key = CacheKey {
        tokenizer: fingerprint(b"t"),
        vq_model: fingerprint(b"v"),
        resolution: 16,
        grid: [4, 4],
    };
    let mut cache = CodeCache::new(key);
    for i in 0..8u32 {
        let codes: Vec<u32> = (0..16).map(|j| (i + j) % 8).collect();
        cache.push(&codes, &[i % 5, 1]).unwrap();
    }
    let lm: token_shuffle_lm::TokenShuffleLmConfig = serde_json::from_value(serde_json::json!({
        "text_vocab": 8, "codebook": 8, "grid": [4, 4], "max_text_len": 4,
        "decoder": { "d_model": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": null, "mlp_hidden": 32,
                     "max_seq_len": 0, "rope_theta": 10000.0, "norm_eps": 1e-5 },
        "window": 2, "fusion": "ResidualMlp", "shuffle_mlp_blocks": 1, "z_loss_weight": 1e-4,
        "text_loss_weight": 0.0, "prompt_dropout": 0.0
    }))
    .unwrap();
    let config = LmTrainingConfig::new(lm, vec![Stage::new(16, 2, 2, 1e-3)])
        .with_batch_size(4)
        .with_log_every(1);
    let data = BTreeMap::from([(
        16,
        LmData {
            train: cache.clone(),
            valid: cache,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    train_lm::<Autodiff<Wgpu>>(&config, &data, dir.path(), false, &device, |e| {
        if let LmEvent::Step(s) = e {
            losses.push(s.image_ce);
        }
    })
    .unwrap();
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    assert!(dir.path().join("checkpoints/step-00000002/model.mpk").exists());
}
