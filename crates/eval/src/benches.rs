//! The smaller benchmarks of `cargo xtask bench …` (the op, image decoding, generation per window size, one
//! high-resolution image, a code cache of a million images, the VQ tokenizer, a matrix product, normalisation), each a struct of what to measure whose `run` returns a report
//! with its table. Machines here are shared and noisy, so every bench interleaves the variants it compares inside
//! each repetition (see [`timing`]) and reports medians and ratios, never a lone absolute time.

pub mod code_cache;
pub mod decode;
pub mod generate;
pub mod highres;
pub mod matmul;
pub mod norm;
pub mod op;
pub mod timing;
pub mod tokenizer;

pub use code_cache::{CodeCacheBench, CodeCacheReport};
pub use decode::{DecodeBench, DecodeReport};
pub use generate::{GenerateBench, GenerateReport, GenerateRow};
pub use highres::{HighresBench, HighresEvent, HighresReport, HighresRow};
pub use matmul::{MatmulBench, MatmulReport};
pub use norm::{NormBench, NormReport};
pub use op::{OpBench, OpReport};
pub use tokenizer::{TokenizerBench, TokenizerReport, TokenizerRow};

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use token_shuffle_test_support::TestBackend;

    #[test]
    fn the_op_norm_and_matmul_benches_report_a_row_per_case_and_refuse_what_cannot_be_timed() {
        let device = Default::default();
        let op = OpBench {
            shape: [1, 8, 8, 4],
            windows: vec![1, 2, 4],
            warmup: 0,
            repeats: 2,
        };
        let report = op.run::<TestBackend>(&device).unwrap();
        let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "plain copy (x + 0)",
                "merge + split, s = 1",
                "merge + split, s = 2",
                "merge + split, s = 4"
            ]
        );
        assert_eq!(report.rows[0].vs_copy, 1.0);
        assert!(report.rows[1].gb_per_s.is_none(), "s = 1 moves nothing");
        assert!(report.table().lines().count() == 5);
        let odd = OpBench { windows: vec![3], ..op };
        assert!(
            odd.run::<TestBackend>(&device)
                .unwrap_err()
                .to_string()
                .contains("s = 3 does not divide")
        );

        let norm = NormBench {
            shape: [1, 4, 4, 4],
            groups: 2,
            repeats: 1,
        };
        assert_eq!(norm.run::<TestBackend>(&device).unwrap().rows.len(), 5);
        let bad = NormBench { groups: 3, ..norm };
        assert!(
            bad.run::<TestBackend>(&device)
                .unwrap_err()
                .to_string()
                .contains("groups must divide")
        );

        let matmul = MatmulBench { size: 8, repeats: 1 };
        assert!(matmul.run::<TestBackend>(&device).unwrap().tflop_per_s > 0.0);
    }

    #[test]
    fn the_model_benches_time_each_window_and_resolution() {
        let device = Default::default();

        let generate = GenerateBench {
            lm: token_shuffle_lm::LmArchitecture::micro(),
            grid: 4,
            windows: vec![1, 2],
            repeats: 1,
        };
        let report = generate.run::<TestBackend>(&device).unwrap();
        let steps: Vec<usize> = report.rows.iter().map(|r| r.steps).collect();
        assert_eq!(steps, [16, 4], "one decoding step per window");
        assert_eq!(report.rows[0].speedup, 1.0);

        let tokenizer = TokenizerBench {
            model: token_shuffle_vqgan::VqModelConfig::micro(),
            resolutions: vec![16],
            batch: 2,
            repeats: 2,
        };
        let report = tokenizer.run::<Autodiff<TestBackend>>(&device).unwrap();
        assert_eq!(report.rows[0].train_ms.len(), 2, "every timed repetition kept");
        assert!(
            TokenizerBench {
                repeats: 0,
                ..tokenizer
            }
            .run::<Autodiff<TestBackend>>(&device)
            .is_err()
        );

        let highres = HighresBench {
            lm: token_shuffle_lm::LmArchitecture::micro(),
            vq: token_shuffle_vqgan::VqModelConfig::micro(),
            resolutions: vec![16],
            windows: vec![1, 2],
            cfg: 2.0,
            text_len: 2,
            decode: true,
        };
        let mut events = Vec::new();
        let heap = crate::memory::PeakAlloc::new();
        let report = highres
            .run::<TestBackend, _>(&device, Some(&heap), |e| events.push(e.clone()))
            .unwrap();
        let codes = (16 / highres.vq.downsample_factor()).pow(2);
        let steps: Vec<usize> = report.rows.iter().map(|r| r.steps).collect();
        assert_eq!(steps, [codes, codes / 4], "one step per window");
        assert!(
            report.rows[0].decode.is_some() && report.rows[1].decode.is_none(),
            "one decode per resolution"
        );
        let decodes = events
            .iter()
            .filter(|e| matches!(e, HighresEvent::Decoding { .. }))
            .count();
        assert_eq!(decodes, 1);
        assert_eq!(report.table().lines().count(), 2 + 2);
        let odd = HighresBench {
            windows: vec![3],
            ..highres
        };
        assert!(
            odd.check()
                .unwrap_err()
                .to_string()
                .contains("--window 3 does not divide")
        );
    }

    #[test]
    fn the_code_cache_bench_builds_reads_and_deletes_its_shards() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCacheBench {
            images: vec![50],
            grid: 4,
            codebook: 16,
            shard_images: 20,
            batches: 3,
            batch_size: 2,
            dir: dir.path().join("caches"),
            keep: false,
            drop_caches: false,
        };
        let report = cache.run(&crate::memory::PeakAlloc::new(), |_| {}).unwrap();
        assert_eq!((report.rows[0].images, report.rows[0].shards), (50, 3));
        assert!(
            !dir.path().join("caches/50").exists(),
            "the files are deleted unless kept"
        );
        std::fs::create_dir_all(dir.path().join("caches/50")).unwrap();
        let refused = cache
            .run(&crate::memory::PeakAlloc::new(), |_| {})
            .unwrap_err()
            .to_string();
        assert!(refused.contains("exists: remove it"), "{refused}");
    }
}
