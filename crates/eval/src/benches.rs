//! The smaller benchmarks of `cargo xtask bench …` (the op, image decoding, generation per window size, one
//! high-resolution image, the VQ tokenizer, a matrix product, normalisation), each a struct of what to measure whose `run` returns a report
//! with its table. Machines here are shared and noisy, so every bench interleaves the variants it compares inside
//! each repetition (see [`timing`]) and reports medians and ratios, never a lone absolute time.

pub mod decode;
pub mod generate;
pub mod highres;
pub mod matmul;
pub mod norm;
pub mod op;
pub mod timing;
pub mod tokenizer;

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
    fn each_bench_reports_a_row_per_case_and_refuses_what_cannot_be_timed() {
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
    }
}
