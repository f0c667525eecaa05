//! Generation keeps no per-step logits: its peak heap does not grow with the number of steps beyond the KV cache.
//!
//! An integration test of its own (one test, its own process) because it installs a counting global allocator:
//! other tests running alongside would count too.

use burn::backend::Flex;
use token_shuffle_eval::memory::PeakAlloc;
use token_shuffle_lm::{CfgSchedule, DecoderConfig, GenerateOptions, LmArchitecture, Sampler};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc::new();

/// Peak heap, in bytes, of generating one image with CFG on a `grid`×`grid` code grid at s = 1.
fn generation_peak(grid: usize, codebook: usize) -> usize {
    let device = Default::default();
    let model = LmArchitecture::new(16, codebook, 4, DecoderConfig::new(16, 1, 2, 32))
        .into_config([grid, grid], 1)
        .init::<Flex>(&device)
        .unwrap();
    let options = GenerateOptions {
        cfg_scale: 3.0,
        schedule: CfgSchedule::Constant,
        sampler: Sampler::default(),
        seed: 0,
    };
    let (codes, peak) = HEAP.peak_during(|| model.generate(&[vec![1, 2, 3]], &options, &device, &mut |_| {}));
    assert_eq!(codes.unwrap().dims(), [1, grid, grid]);
    peak
}

#[test]
fn generation_holds_no_per_step_logits() {
    let codebook = 4096;
    let short = generation_peak(8, codebook); // 64 steps
    let long = generation_peak(24, codebook); // 576 steps
    // Keeping each step's guided logits ([1, 1, K] f32 = 16 KiB) would add 512 × 16 KiB = 8 MiB to the long run.
    // What may grow is the KV cache (1 layer × k, v × 2 rows × 512 more positions × 16 f32 = 128 KiB), the code
    // ids (4 KiB) and allocator noise.
    let kept = 512 * codebook * 4;
    assert!(
        long.saturating_sub(short) < kept / 4,
        "peak heap {short} B for 64 steps, {long} B for 576: grows like per-step logits ({kept} B)"
    );
}
