//! `cargo xtask eval`, `calibrate-detector` and `ablate`: the compositional benchmark on a run, the detector's
//! calibration, and the ablation runner.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::config::Config;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_data::ImageCaption;
use token_shuffle_eval::ablation::AblationEvent;
use token_shuffle_eval::{CompositionalBenchmark, DetectorConfig, EvalOptions, LmBudget, calibrate_through};
use token_shuffle_lm::CfgSchedule;
use token_shuffle_train::{RunConfig, TokenizerTrainingConfig, TrainedRun};

use crate::backend::{BackendKind, BackendTask, run_on};
use crate::run::{Bar, PipelineLog, SamplingArgs, Tenths};

/// The benchmark's size and batching, shared by `eval` and `ablate`.
#[derive(Args)]
pub struct BenchmarkArgs {
    /// Held-out prompts per category (6 categories). The default tells two runs 0.05 apart overall (see
    /// `CompositionalBenchmark::default`).
    #[arg(long, default_value_t = 32)]
    prompts_per_category: usize,
    /// Images generated per prompt.
    #[arg(long, default_value_t = 4)]
    images_per_prompt: usize,
    /// Seed of the held-out prompts (and of the held-out images for the reconstruction metrics).
    #[arg(long, default_value_t = 0)]
    prompt_seed: u64,
    /// Images generated at once.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Held-out images for the tokenizer's PSNR / SSIM / codebook usage (0 skips them).
    #[arg(long, default_value_t = 256)]
    reconstruction_images: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

impl BenchmarkArgs {
    fn options(&self) -> Result<EvalOptions> {
        Ok(EvalOptions {
            benchmark: CompositionalBenchmark {
                seed: self.prompt_seed,
                prompts_per_category: self.prompts_per_category,
                images_per_prompt: self.images_per_prompt,
                seen_pairs: false,
            },
            generate: self.sampling.options()?,
            batch_size: self.batch_size,
            reconstruction_images: self.reconstruction_images,
            detector: DetectorConfig::default(),
        })
    }
}

/// Prints a line per tenth of each evaluation phase, under a progress bar on a terminal.
fn progress_printer(started: Instant) -> impl FnMut(&str, usize, usize) {
    let mut tenths = Tenths::default();
    let mut bar = Bar::default();
    let mut phase = String::new();
    move |what, done, total| {
        if what != phase {
            phase = what.to_string();
            bar.start(what, total);
        }
        bar.update(done, Some(total));
        if tenths.is_new(what, done, total) {
            bar.line(&format!(
                "[{:>6.0} s]   {what}: {done}/{total}",
                started.elapsed().as_secs_f32()
            ));
        }
        if done >= total {
            bar.finish();
        }
    }
}

/// Arguments of `cargo xtask eval`.
#[derive(Args)]
pub struct Eval {
    /// Run directory made by `cargo xtask train` (or `demo`, or one variant of `ablate`).
    #[arg(long)]
    run: PathBuf,
    /// Evaluate the LM checkpoint after this many steps (in `lm/checkpoints/`) instead of the final LM; the report
    /// goes to `eval/step-<N>/`. Follows a run's score over training, or reads one before it finishes.
    #[arg(long)]
    checkpoint: Option<usize>,
    #[command(flatten)]
    benchmark: BenchmarkArgs,
    /// The diagnostic instead of the benchmark: the same categories on validation prompts, whose colour × shape
    /// pairs, counts and relations the model trained on (never the benchmark's score). Goes to `eval/seen-pairs/`.
    #[arg(long)]
    seen_pairs: bool,
    /// Backend to generate on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl Eval {
    pub fn run(self) -> Result<()> {
        let mut options = self.benchmark.options()?;
        options.benchmark.seen_pairs = self.seen_pairs;
        run_on(
            self.backend,
            EvalTask {
                run: self.run,
                checkpoint: self.checkpoint,
                options,
            },
        )
    }
}

struct EvalTask {
    run: PathBuf,
    checkpoint: Option<usize>,
    options: EvalOptions,
}

impl BackendTask for EvalTask {
    type Output = ();
    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let run = TrainedRun::<B>::load_at(&self.run, self.checkpoint, &device)?;
        let started = Instant::now();
        let (out, lm) = match self.checkpoint {
            Some(step) => (
                self.run.join("eval").join(format!("step-{step}")),
                format!("checkpoint after {step} steps"),
            ),
            None => (self.run.join("eval"), "final LM".to_string()),
        };
        let out = if self.options.benchmark.seen_pairs {
            out.join("seen-pairs")
        } else {
            out
        };
        eprintln!("eval {} ({lm}) on {}", self.run.display(), backend.name());
        let evaluation = token_shuffle_eval::evaluate_run(&run, &self.options, &device, progress_printer(started))?;
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let name = self
            .run
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned());
        let markdown = format!(
            "# Evaluation of {} ({lm})\n\nCFG {} ({:?}), sampling seed {}; `samples.png`: the first image of each prompt, one \
             column per category in the table's order.\n\n{}",
            self.run.display(),
            self.options.generate.cfg_scale,
            self.options.generate.schedule,
            self.options.generate.seed,
            evaluation.markdown(&name)
        );
        std::fs::write(out.join("report.md"), &markdown)?;
        std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&evaluation)?)?;
        token_shuffle_data::save_png(&evaluation.samples, &out.join("samples.png"))?;
        println!("{markdown}");
        eprintln!(
            "done in {:.1} s: {}/{{report.md, eval.json, samples.png}}",
            started.elapsed().as_secs_f32(),
            out.display()
        );
        Ok(())
    }
}

/// Arguments of `cargo xtask calibrate-detector`.
#[derive(Args)]
pub struct CalibrateDetector {
    /// Resolutions to render the ground truth at.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    resolutions: Vec<u32>,
    /// Held-out prompts per category.
    #[arg(long, default_value_t = 50)]
    prompts_per_category: usize,
    /// Seed of the held-out prompts.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Pass the renders through this VQ tokenizer (encode, decode) before detection: a directory with
    /// config.json and model.safetensors, as `train-tokenizer` writes (or a run's `tokenizer/`).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Backend of the tokenizer.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl CalibrateDetector {
    pub fn run(self) -> Result<()> {
        let backend = self.backend;
        run_on(backend, self)
    }
}

impl BackendTask for CalibrateDetector {
    type Output = ();
    fn run<B: Backend>(self, _: BackendKind, device: B::Device) -> Result<()> {
        let benchmark = CompositionalBenchmark {
            seed: self.seed,
            prompts_per_category: self.prompts_per_category,
            images_per_prompt: 1,
            seen_pairs: false,
        };
        let tokenizer = match &self.tokenizer {
            Some(dir) => {
                let config = TokenizerTrainingConfig::load(dir.join("config.json")).with_context(|| {
                    format!(
                        "{}: no tokenizer config.json (made by `cargo xtask train-tokenizer`)",
                        dir.display()
                    )
                })?;
                Some(
                    config
                        .model
                        .init::<B>(&device)?
                        .load_safetensors(&dir.join("model.safetensors"))?,
                )
            }
            None => None,
        };
        let through = self.tokenizer.as_ref().map_or(String::new(), |dir| {
            format!(", each render passed through the VQ tokenizer {}", dir.display())
        });
        println!(
            "Pass rates of the detector + judge: on ground-truth renders with their own prompt (truth), with another \
             prompt of the category (wrong caption; its chance = what the judge says of the true objects), with the \
             prompt changed in one detail (near miss; chance 0), and on uniform noise (chance 0). {} held-out \
             prompts per category, seed {}{through}.\n",
            self.prompts_per_category, self.seed
        );
        for &resolution in &self.resolutions {
            let started = Instant::now();
            let calibration =
                calibrate_through(
                    &benchmark,
                    resolution,
                    &DetectorConfig::default(),
                    |renders| match &tokenizer {
                        Some(vq) => {
                            let images: Vec<ImageCaption> = renders
                                .into_iter()
                                .map(|image| ImageCaption {
                                    id: String::new(),
                                    caption: String::new(),
                                    image,
                                })
                                .collect();
                            Ok(token_shuffle_train::reconstruct(vq, &images, &device)?)
                        }
                        None => Ok(renders),
                    },
                )?;
            println!("{}", calibration.markdown());
            eprintln!("({resolution} px: {:.1} s)", started.elapsed().as_secs_f32());
        }
        Ok(())
    }
}

/// Arguments of `cargo xtask ablate`.
#[derive(Args)]
pub struct Ablate {
    /// The run every variant starts from (data, tokenizer, LM shape, steps, batch), e.g. configs/run-demo.json.
    #[arg(long, default_value = "configs/run-demo.json")]
    config: PathBuf,
    /// Window sizes s.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    windows: Vec<usize>,
    /// Fusions: mlp (the paper's), linear, last-token.
    #[arg(long, value_delimiter = ',', default_value = "mlp")]
    fusion: Vec<String>,
    /// Residual MLP blocks on each side (default: the config's).
    #[arg(long, value_delimiter = ',')]
    mlp_blocks: Vec<usize>,
    /// LM training steps of every stage (default: the config's).
    #[arg(long, conflicts_with = "minutes")]
    lm_steps: Option<usize>,
    /// Give every variant the same LM training time instead of the same steps: its steps are these minutes over
    /// its own step time, measured before it trains (the paper's equal-compute question).
    #[arg(long)]
    minutes: Option<f64>,
    /// Directory of the ablation (one run directory per variant inside).
    #[arg(long, default_value = "runs/ablate")]
    run: PathBuf,
    #[command(flatten)]
    benchmark: BenchmarkArgs,
    /// Backend to train and generate on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl Ablate {
    pub fn run(self) -> Result<()> {
        let mut base = RunConfig::load_file(&self.config)?;
        if let Some(steps) = self.lm_steps {
            base.lm.stages.iter_mut().for_each(|stage| stage.steps = steps);
        }
        let fusions = self
            .fusion
            .iter()
            .map(|f| f.parse::<token_shuffle::Fusion>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let blocks = if self.mlp_blocks.is_empty() {
            vec![base.lm.model.shuffle_mlp_blocks]
        } else {
            self.mlp_blocks.clone()
        };
        let variants = token_shuffle_eval::variants(&self.windows, &fusions, &blocks);
        let options = self.benchmark.options()?;
        run_on(
            self.backend,
            AblateTask {
                base,
                variants,
                budget: self.minutes.map_or(LmBudget::Steps, LmBudget::Minutes),
                dir: self.run,
                options,
            },
        )
    }
}

struct AblateTask {
    base: RunConfig,
    variants: Vec<token_shuffle_eval::Variant>,
    budget: LmBudget,
    dir: PathBuf,
    options: EvalOptions,
}

impl BackendTask for AblateTask {
    type Output = ();
    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let names: Vec<String> = self.variants.iter().map(token_shuffle_eval::Variant::name).collect();
        eprintln!(
            "ablate {} on {}: {}",
            self.dir.display(),
            backend.name(),
            names.join(", ")
        );
        let started = Instant::now();
        let mut log = PipelineLog::new(&self.base);
        let mut progress = progress_printer(started);
        let report = token_shuffle_eval::run_ablation::<Autodiff<B>>(
            &self.base,
            &self.variants,
            &self.dir,
            self.budget,
            &self.options,
            &device,
            |event| match event {
                AblationEvent::Variant { index, total, name } => {
                    eprintln!(
                        "[{:>6.0} s] variant {}/{total}: {name}",
                        started.elapsed().as_secs_f32(),
                        index + 1
                    )
                }
                AblationEvent::Budget { step_ms, steps } => {
                    log.set_lm_steps(*steps);
                    eprintln!(
                        "[{:>6.0} s]   budget: {step_ms:.0} ms per training step measured, so {steps} LM steps",
                        started.elapsed().as_secs_f32()
                    )
                }
                AblationEvent::Pipeline(event) => log.print(event),
                AblationEvent::Eval { what, done, total } => progress(what, *done, *total),
            },
        )?;
        println!("{}", report.markdown());
        eprintln!(
            "done in {:.1} min: {dir}/ablation.md, ablation.json, loss.png; each variant's run in {dir}/<variant>/",
            started.elapsed().as_secs_f32() / 60.0,
            dir = self.dir.display()
        );
        Ok(())
    }
}

/// Arguments of `cargo xtask cfg`.
#[derive(Args)]
pub struct CfgSweep {
    /// Run directory made by `cargo xtask train`.
    #[arg(long)]
    run: PathBuf,
    /// Guidance scales (1 = off).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,5,7.5")]
    scales: Vec<f64>,
    /// Schedules: constant, linear, half-linear, drop-first-K, sin, sigmoid.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "constant,linear,half-linear,drop-first-16,sin,sigmoid"
    )]
    schedules: Vec<String>,
    /// The picture's guidance scale: one row per schedule at this scale.
    #[arg(long, default_value_t = 3.0)]
    picture_scale: f64,
    #[command(flatten)]
    benchmark: BenchmarkArgs,
    /// Backend to generate on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl CfgSweep {
    pub fn run(self) -> Result<()> {
        let schedules = self
            .schedules
            .iter()
            .map(|s| s.parse::<CfgSchedule>().map(|parsed| (s.clone(), parsed)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let sweep = token_shuffle_eval::CfgSweep {
            scales: self.scales,
            schedules,
            picture_scale: self.picture_scale,
            options: self.benchmark.options()?,
        };
        sweep.check()?;
        run_on(self.backend, CfgTask { run: self.run, sweep })
    }
}

struct CfgTask {
    run: PathBuf,
    sweep: token_shuffle_eval::CfgSweep,
}

impl BackendTask for CfgTask {
    type Output = ();
    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let run = TrainedRun::<B>::load(&self.run, &device)?;
        let started = Instant::now();
        eprintln!(
            "cfg {} on {}: {} schedules × {} scales",
            self.run.display(),
            backend.name(),
            self.sweep.schedules.len(),
            self.sweep.scales.len()
        );
        let title = self.run.display().to_string();
        let report = self.sweep.run(&run, &title, &device, |name, scale, overall| {
            eprintln!(
                "[{:>6.0} s]   {name} × {scale}: overall {overall:.3}",
                started.elapsed().as_secs_f32()
            )
        })?;
        let out = self.run.join("cfg");
        report.save(&out)?;
        println!("{}", report.markdown);
        eprintln!(
            "done in {:.1} min: {}/{{cfg.md, cfg.json, scales.png, schedules.png}}",
            started.elapsed().as_secs_f32() / 60.0,
            out.display()
        );
        Ok(())
    }
}
