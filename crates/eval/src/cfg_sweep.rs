//! Classifier-free guidance swept over schedules and scales on a trained run (`cargo xtask cfg`): the benchmark at
//! every schedule × scale, one curve per schedule, and a picture of the schedules at one scale.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use image::RgbImage;
use serde::Serialize;
use token_shuffle_data::scenes::Category;
use token_shuffle_lm::{CfgSchedule, GenerateOptions};
use token_shuffle_train::TrainedRun;

use crate::error::io;
use crate::report::{PALETTE, Panel, Series, line_chart};
use crate::run::{EvalOptions, benchmark_run};
use crate::{BenchmarkReport, EvalError};

/// What to sweep.
#[derive(Debug, Clone)]
pub struct CfgSweep {
    /// Guidance scales (1 = off).
    pub scales: Vec<f64>,
    /// Schedules, each with the name the report gives it.
    pub schedules: Vec<(String, CfgSchedule)>,
    /// The picture's scale: one row of samples per schedule at this scale (measured too when not in `scales`,
    /// but not reported).
    pub picture_scale: f64,
    /// The benchmark and the rest of generation; its scale and schedule are the sweep's.
    pub options: EvalOptions,
}

/// The benchmark at one schedule × scale.
#[derive(Debug, Clone, Serialize)]
pub struct CfgPoint {
    /// The schedule's name.
    pub schedule: String,
    /// The guidance scale.
    pub scale: f64,
    /// The held-out benchmark.
    pub report: BenchmarkReport,
}

/// What a sweep measured and drew.
#[derive(Debug, Clone)]
pub struct CfgSweepReport {
    /// One point per schedule × scale of [`CfgSweep::scales`], schedule by schedule.
    pub points: Vec<CfgPoint>,
    /// Overall score against scale, one line per schedule.
    pub figure: RgbImage,
    /// One row per schedule at [`CfgSweep::picture_scale`], the first prompt of each category.
    pub picture: RgbImage,
    /// The report: what was run and the table of every point.
    pub markdown: String,
}

impl CfgSweep {
    /// Checks every scale before anything is generated.
    ///
    /// # Errors
    /// [`EvalError::Config`] naming the scale.
    pub fn check(&self) -> Result<(), EvalError> {
        if self.schedules.is_empty() || self.scales.is_empty() {
            return Err(EvalError::Config(
                "a CFG sweep needs at least one schedule and one scale".into(),
            ));
        }
        for &scale in self.scales.iter().chain([&self.picture_scale]) {
            token_shuffle_lm::check_cfg_scale(scale).map_err(EvalError::Config)?;
        }
        Ok(())
    }

    /// Runs the benchmark on `run` at every schedule × scale; `on_point` sees each overall score as it is
    /// measured.
    ///
    /// # Errors
    /// [`CfgSweep::check`]'s; generation and figure errors.
    pub fn run<B: Backend>(
        &self,
        run: &TrainedRun<B>,
        title: &str,
        device: &B::Device,
        mut on_point: impl FnMut(&str, f64, f64),
    ) -> Result<CfgSweepReport, EvalError> {
        self.check()?;
        let mut scales = self.scales.clone();
        if !scales.contains(&self.picture_scale) {
            scales.push(self.picture_scale);
        }
        let (mut points, mut picture_rows, mut curves) = (Vec::new(), Vec::new(), Vec::new());
        for (index, (name, schedule)) in self.schedules.iter().enumerate() {
            let mut curve = Vec::new();
            for &scale in &scales {
                let options = EvalOptions {
                    generate: GenerateOptions {
                        cfg_scale: scale,
                        schedule: *schedule,
                        ..self.options.generate
                    },
                    ..self.options
                };
                let (report, samples, _) = benchmark_run(run, &options, device, |_, _| {})?;
                on_point(name, scale, report.overall);
                if scale == self.picture_scale {
                    // The first prompt of each category: the samples' top row.
                    let side = samples.width() / Category::ALL.len() as u32;
                    picture_rows.push(image::imageops::crop_imm(&samples, 0, 0, samples.width(), side).to_image());
                }
                if self.scales.contains(&scale) {
                    curve.push((scale, report.overall));
                    points.push(CfgPoint {
                        schedule: name.clone(),
                        scale,
                        report,
                    });
                }
            }
            curves.push(Series {
                name: name.clone(),
                points: curve,
                colour: PALETTE[index % PALETTE.len()],
            });
        }
        let figure = line_chart(&[Panel {
            title: "Benchmark against guidance scale".into(),
            x_label: "CFG scale".into(),
            y_label: "overall score (held-out prompts)".into(),
            log_y: false,
            series: curves,
        }])
        .map_err(|e| EvalError::Config(format!("drawing the CFG figure: {e}")))?;
        let markdown = self.markdown(title, &points);
        Ok(CfgSweepReport {
            points,
            figure,
            picture: token_shuffle_data::imaging::tile(&picture_rows, 1),
            markdown,
        })
    }

    fn markdown(&self, title: &str, points: &[CfgPoint]) -> String {
        let mut table = BenchmarkReport::markdown_header("schedule × scale") + "\n";
        for point in points {
            table += &point
                .report
                .markdown_row(&format!("{} × {}", point.schedule, point.scale));
            table += "\n";
        }
        let names: Vec<&str> = self.schedules.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            "# CFG schedules and scales on {title}\n\nPrompt seed {}, {} prompts per category × {} images, sampling \
             seed {}. `scales.png`: overall score against scale, one line per schedule. `schedules.png`: one row per \
             schedule ({}) at scale {}, the first prompt of each category in the table's order.\n\n{table}",
            self.options.benchmark.seed,
            self.options.benchmark.prompts_per_category,
            self.options.benchmark.images_per_prompt,
            self.options.generate.seed,
            names.join(", "),
            self.picture_scale
        )
    }
}

impl CfgSweepReport {
    /// Writes `cfg.md`, `cfg.json`, `scales.png` and `schedules.png` into `dir` (created); returns their paths.
    ///
    /// # Errors
    /// [`EvalError::Io`] naming the file.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let files = ["cfg.md", "cfg.json", "scales.png", "schedules.png"].map(|name| dir.join(name));
        std::fs::write(&files[0], &self.markdown).map_err(io(&files[0]))?;
        let json = serde_json::to_string_pretty(&self.points).expect("the points serialise");
        std::fs::write(&files[1], json).map_err(io(&files[1]))?;
        token_shuffle_data::save_png(&self.figure, &files[2])?;
        token_shuffle_data::save_png(&self.picture, &files[3])?;
        Ok(files.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use token_shuffle_lm::Sampler;
    use token_shuffle_test_support::TestBackend;
    use token_shuffle_train::{RunConfig, run_pipeline};

    use crate::{CompositionalBenchmark, DetectorConfig};

    fn sweep() -> CfgSweep {
        CfgSweep {
            scales: vec![1.0, 3.0],
            schedules: vec![
                ("constant".into(), CfgSchedule::Constant),
                ("linear".into(), CfgSchedule::Linear),
            ],
            picture_scale: 2.0,
            options: EvalOptions {
                benchmark: CompositionalBenchmark {
                    seed: 0,
                    prompts_per_category: 1,
                    images_per_prompt: 1,
                    seen_pairs: false,
                },
                generate: GenerateOptions {
                    cfg_scale: 1.0,
                    schedule: CfgSchedule::Constant,
                    sampler: Sampler::default(),
                    seed: 0,
                },
                batch_size: 6,
                reconstruction_images: 0,
                detector: DetectorConfig::default(),
            },
        }
    }

    #[test]
    fn a_sweep_measures_every_schedule_at_every_scale_and_writes_its_report() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        run_pipeline::<Autodiff<TestBackend>>(&RunConfig::tiny(), dir.path(), &device, |_| {}).unwrap();
        let run = TrainedRun::<TestBackend>::load(dir.path(), &device).unwrap();
        let mut measured = Vec::new();
        let report = sweep()
            .run(&run, "tiny", &device, |name, scale, _| {
                measured.push((name.to_string(), scale))
            })
            .unwrap();
        let at = |name: &str, scale: f64| (name.to_string(), scale);
        // The picture's scale is generated too, but not reported.
        assert_eq!(
            measured,
            [
                at("constant", 1.0),
                at("constant", 3.0),
                at("constant", 2.0),
                at("linear", 1.0),
                at("linear", 3.0),
                at("linear", 2.0)
            ]
        );
        let reported: Vec<(String, f64)> = report.points.iter().map(|p| (p.schedule.clone(), p.scale)).collect();
        assert_eq!(
            reported,
            [
                at("constant", 1.0),
                at("constant", 3.0),
                at("linear", 1.0),
                at("linear", 3.0)
            ]
        );
        // At scale 1 guidance is off: every schedule generates the same images, so the same score.
        assert_eq!(report.points[0].report.overall, report.points[2].report.overall);
        assert_eq!(
            report.picture.height(),
            2 * report.picture.width() / Category::ALL.len() as u32
        );
        assert!(report.markdown.contains("| linear × 3 |"), "{}", report.markdown);
        let files = report.save(&dir.path().join("cfg")).unwrap();
        assert!(files.iter().all(|f| f.is_file()), "{files:?}");
    }

    #[test]
    fn bad_scales_and_empty_sweeps_are_refused_before_generating() {
        let mut bad = sweep();
        bad.picture_scale = f64::NAN;
        assert!(matches!(bad.check(), Err(EvalError::Config(_))));
        let mut empty = sweep();
        empty.schedules.clear();
        assert!(empty.check().unwrap_err().to_string().contains("at least one schedule"));
    }
}
