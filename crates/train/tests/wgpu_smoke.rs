//! One tiny smoke test of LM training on the wgpu backend (`--features wgpu`): two steps of the tiniest LM, a
//! finite loss and a checkpoint on disk.
//!
//! Without a Vulkan driver the test says so and passes as skipped, unless `TOKEN_SHUFFLE_REQUIRE_WGPU=1` (set by
//! CI) turns the missing driver into a failure.
#![cfg(feature = "wgpu")]

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Wgpu};
use token_shuffle_data::cache::{CacheKey, CodeCache, fingerprint};
use token_shuffle_train::{LmData, LmEvent, LmTrainingConfig, Stage, train_lm};

#[test]
fn lm_training_runs_on_wgpu() {
    let device = Default::default();
    if !token_shuffle_test_support::device_or_skip::<Wgpu>("lm_training_runs_on_wgpu", &device) {
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
    let lm = token_shuffle_lm::LmArchitecture {
        text_vocab: 8,
        codebook: 8,
        max_text_len: 4,
        prompt_dropout: 0.0,
        ..token_shuffle_lm::LmArchitecture::micro()
    };
    let config = LmTrainingConfig::new(lm, vec![Stage::new(16, 2, 2, 1e-3)])
        .with_batch_size(4)
        .with_log_every(1);
    let data = BTreeMap::from([(
        16,
        LmData {
            train: cache.clone().into(),
            valid: cache.into(),
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
