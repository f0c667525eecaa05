//! `cargo xtask train`, `generate` and `demo`: the whole pipeline, generation from a run, and the newcomer's demo.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_distributed::{Cluster, ClusterConfig, Endpoint};
use token_shuffle_eval::EvalOptions;
use token_shuffle_lm::{CfgSchedule, GenerateOptions, Sampler};
use token_shuffle_train::stage::StageName;
use token_shuffle_train::{
    LmEvent, Parallel, PipelineEvent, PipelineSteps, RunConfig, ShardSlice, TokenizerEvent, TrainedRun,
    run_pipeline_probed,
};

use crate::backend::{BackendKind, BackendTask, DeviceSpec, run_on};
use crate::dashboard::Dashboard;

/// Arguments of `cargo xtask train`.
#[derive(Args)]
pub struct Train {
    /// Run config (JSON), e.g. configs/run-demo.json.
    #[arg(long)]
    config: PathBuf,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Backend to train on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
    /// Train the LM data parallel on these devices of the backend, comma-separated (`cuda:0,cuda:1`, `wgpu:0,…`,
    /// `cpu,cpu` for CPU replicas): each step's `lm.gradient_accumulation` micro-batches are shared among them and
    /// their gradients summed on the first, so the run is the same as on one device. Default: the backend's
    /// default device.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<DeviceSpec>,
    /// Show burn-train's live dashboard (its terminal UI: loss curves, progress, the latest event) instead of
    /// log lines. Needs a terminal; its render thread keeps one core busy. `q` then `s` stops the run (the next
    /// `train` resumes from its newest checkpoint).
    #[arg(long)]
    tui: bool,
    /// Delete this step of the run directory and every step after it, then train them again (tokenizer, text,
    /// codes, lm): the way to change a finished step's config in place.
    #[arg(long)]
    restart_from: Option<StageName>,
    /// Stop after this step (tokenizer, text, codes, lm): `--until text` prepares a run over webdataset shards for
    /// `cargo xtask encode --shard K/N` processes.
    #[arg(long)]
    until: Option<StageName>,
    #[command(flatten)]
    nodes: NodeArgs,
}

/// Where this process stands in a multi-node job (docs/MULTINODE.md). Without `--nodes`, torchrun's
/// (`WORLD_SIZE`, `RANK`, `MASTER_ADDR`, `MASTER_PORT`) or Slurm's (`SLURM_NTASKS`, `SLURM_PROCID`,
/// `SLURM_NODELIST`) variables give it when set; a job of one node trains in this process alone.
#[derive(Args)]
struct NodeArgs {
    /// Processes (machines) in the job: each trains the LM on its share of every step's micro-batches, the
    /// gradients summed over all. The run directory must be one shared directory, its steps before the LM made
    /// first (`--until codes` in one process).
    #[arg(long, requires_all = ["node_rank", "coordinator"])]
    nodes: Option<u32>,
    /// This process's rank, 0 to nodes - 1; rank 0 hosts the coordinator and writes the run directory.
    #[arg(long)]
    node_rank: Option<u32>,
    /// HOST:PORT where rank 0's coordinator listens and every rank reaches it; each rank also listens on
    /// PORT + 1 + its rank (see --node-address). Both listen on every interface: a trusted network only.
    #[arg(long)]
    coordinator: Option<Endpoint>,
    /// HOST:PORT where this rank serves its gradients to the others. Default: the address this machine reaches
    /// the coordinator from, port PORT + 1 + rank.
    #[arg(long)]
    node_address: Option<Endpoint>,
    /// Seconds a rank waits for the others (to form the job, at each step) before it stops, naming them; longer
    /// than rank 0's longest pause between steps (validation, the benchmark probe, a checkpoint).
    #[arg(long, default_value_t = token_shuffle_distributed::DEFAULT_TIMEOUT.as_secs())]
    collective_timeout: u64,
}

impl NodeArgs {
    /// The job, joined: `None` for one process.
    fn join(&self) -> Result<Option<Cluster>> {
        let config = match (self.nodes, self.node_rank, &self.coordinator) {
            (Some(nodes), Some(rank), Some(coordinator)) => Some(ClusterConfig::new(nodes, rank, coordinator.clone())?),
            _ => ClusterConfig::from_env(|name| std::env::var(name).ok())?,
        };
        let Some(mut config) = config.filter(|c| c.nodes > 1) else {
            return Ok(None);
        };
        config.node = self.node_address.clone();
        config.timeout = std::time::Duration::from_secs(self.collective_timeout);
        eprintln!(
            "rank {} of {}: joining the job at {} (waiting up to {} s for every rank)",
            config.rank, config.nodes, config.coordinator, self.collective_timeout
        );
        let cluster = Cluster::join(config)?;
        eprintln!("rank {} of {}: every rank has arrived", cluster.rank(), cluster.nodes());
        Ok(Some(cluster))
    }
}

impl Train {
    pub fn run(self) -> Result<()> {
        let config = RunConfig::load_file(&self.config)?;
        let name = self
            .config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let dir = self
            .run
            .unwrap_or_else(|| token_shuffle_train::run_dir(name.trim_start_matches("run-")));
        let cluster = self.nodes.join()?;
        run_on(
            self.backend,
            TrainTask {
                config,
                dir,
                steps: PipelineSteps {
                    restart_from: self.restart_from,
                    until: self.until,
                },
                devices: self.devices,
                cluster,
                tui: self.tui,
            },
        )?;
        Ok(())
    }
}

struct TrainTask {
    config: RunConfig,
    dir: PathBuf,
    steps: PipelineSteps,
    devices: Vec<DeviceSpec>,
    cluster: Option<Cluster>,
    tui: bool,
}

impl BackendTask for TrainTask {
    type Output = ();
    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let devices = if self.devices.is_empty() {
            vec![device.clone()]
        } else {
            crate::backend::devices::<B>(backend, &self.devices)?
        };
        eprintln!(
            "run {} on {} ({} device{}{})",
            self.dir.display(),
            backend.name(),
            devices.len(),
            if devices.len() == 1 { "" } else { "s" },
            match &self.cluster {
                Some(c) => format!(", rank {} of {} nodes", c.rank(), c.nodes()),
                None => String::new(),
            }
        );
        let started = Instant::now();
        let mut log = PipelineLog::new(&self.config);
        let mut dashboard = self.tui.then(|| Dashboard::open(&self.config)).transpose()?;
        let mut probe = token_shuffle_eval::benchmark_probe::<B>(EvalOptions::during_training(), device.clone());
        run_pipeline_probed::<Autodiff<B>>(
            &self.config,
            &self.dir,
            Parallel {
                devices: &devices,
                cluster: self.cluster.as_ref(),
            },
            self.steps,
            Some(&mut probe),
            |event| match dashboard.as_mut() {
                Some(board) => {
                    board.show(event, &log.line_of(event));
                    if board.stop_requested() {
                        // Closing the dashboard gives the terminal back before the message.
                        dashboard = None;
                        eprintln!(
                            "stopped from the dashboard; `cargo xtask train` with the same config resumes {} from \
                             its newest checkpoint",
                            self.dir.display()
                        );
                        std::process::exit(130);
                    }
                }
                None => log.print(event),
            },
        )?;
        drop(dashboard);
        drop(log);
        eprintln!(
            "done in {:.1} min: {}",
            started.elapsed().as_secs_f32() / 60.0,
            self.dir.display()
        );
        Ok(())
    }
}

/// Prints a pipeline's events: one line per event, a line per tenth of a long step that is not training, and, on a
/// terminal, a progress bar (rate and ETA) under the lines for the step in progress. Piped (CI, logs), only the
/// lines.
pub struct PipelineLog {
    started: Instant,
    tokenizer_steps: usize,
    lm_steps: usize,
    tenths: Tenths,
    bar: Bar,
}

impl PipelineLog {
    pub fn new(config: &RunConfig) -> Self {
        Self {
            started: Instant::now(),
            tokenizer_steps: config.tokenizer.steps,
            lm_steps: config.lm.total_steps(),
            tenths: Tenths::default(),
            bar: Bar::default(),
        }
    }

    /// The LM's steps changed (an ablation variant's time budget set them).
    pub fn set_lm_steps(&mut self, steps: usize) {
        self.lm_steps = steps;
    }

    /// The line [`print`](Self::print) writes for `event`.
    pub fn line_of(&self, event: &PipelineEvent) -> String {
        event_line(event, self.started, self.tokenizer_steps, self.lm_steps)
    }

    pub fn print(&mut self, event: &PipelineEvent) {
        match event {
            PipelineEvent::Phase {
                name, skipped: false, ..
            } => {
                let length = match *name {
                    "tokenizer" => self.tokenizer_steps,
                    "lm" => self.lm_steps,
                    _ => 0,
                };
                self.bar.start(name, length);
            }
            PipelineEvent::Tokenizer(TokenizerEvent::Step(s)) => self.bar.update(s.step, None),
            PipelineEvent::Lm(LmEvent::Step(s)) => self.bar.update(s.step, None),
            PipelineEvent::Progress { done, total, .. } => self.bar.update(*done, Some(*total)),
            _ => {}
        }
        if let PipelineEvent::Progress { what, done, total } = event
            && !self.tenths.is_new(what, *done, *total)
        {
            return;
        }
        self.bar.line(&self.line_of(event));
    }
}

/// A progress bar on a terminal (indicatif: position, rate, ETA) that log lines are printed above; on anything
/// else, nothing but the lines.
#[derive(Default)]
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// Starts a bar for `what` of `length` items (0: not known yet), finishing the previous one.
    pub fn start(&mut self, what: &str, length: usize) {
        use std::io::IsTerminal;
        self.finish();
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(length as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>12} [{bar:40}] {pos}/{len}  {per_sec}  ETA {eta}  ({elapsed})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            self.0 = Some(bar);
        }
    }

    /// Moves the bar to `position` (and sets its length when given).
    pub fn update(&self, position: usize, length: Option<usize>) {
        if let Some(bar) = &self.0 {
            if let Some(length) = length {
                bar.set_length(length as u64);
            }
            bar.set_position(position as u64);
        }
    }

    /// Prints a log line (above the bar on a terminal).
    pub fn line(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for PipelineLog {
    fn drop(&mut self) {
        self.bar.finish();
    }
}

/// Thins progress reports of long work to one per tenth of each task.
#[derive(Default)]
pub struct Tenths(Option<(String, usize)>);

impl Tenths {
    /// Whether `done` of `total` of `what` starts a tenth not reported yet (and remembers it).
    pub fn is_new(&mut self, what: &str, done: usize, total: usize) -> bool {
        let tenth = (what.to_string(), done * 10 / total.max(1));
        let new = self.0.as_ref() != Some(&tenth);
        self.0 = Some(tenth);
        new
    }
}

/// The log line of an event.
fn event_line(event: &PipelineEvent, started: Instant, tokenizer_steps: usize, lm_steps: usize) -> String {
    let t = started.elapsed().as_secs_f32();
    match event {
        PipelineEvent::Phase {
            name,
            skipped: true,
            detail,
        } => format!("[{t:>6.0} s] {name}: up to date ({detail}), skipped"),
        PipelineEvent::Phase {
            name,
            skipped: false,
            detail,
        } => format!("[{t:>6.0} s] {name}: {detail}"),
        PipelineEvent::Progress { what, done, total } => format!(
            "[{t:>6.0} s]   {what}: {done}/{total} ({:.0}%)",
            *done as f32 * 100.0 / *total as f32
        ),
        PipelineEvent::Tokenizer(TokenizerEvent::Resumed { step }) => {
            format!("[{t:>6.0} s]   tokenizer resumed from its checkpoint after step {step}")
        }
        PipelineEvent::Tokenizer(TokenizerEvent::SkippedCheckpoint { path, why }) => {
            format!("[{t:>6.0} s]   skipping checkpoint {}: {why}", path.display())
        }
        PipelineEvent::Tokenizer(TokenizerEvent::Step(s)) => format!(
            "[{t:>6.0} s]   tokenizer step {:>5}/{tokenizer_steps}  rec {:.5}  codebook {:.5}  lr {:.2e}  {:.1} img/s",
            s.step, s.reconstruction, s.codebook, s.learning_rate, s.images_per_second
        ),
        PipelineEvent::Tokenizer(TokenizerEvent::Validation(v)) => {
            format!("[{t:>6.0} s]   tokenizer valid {:>5}  {}", v.step, v.summary())
        }
        PipelineEvent::Lm(LmEvent::Stage {
            index,
            stage,
            first_step,
        }) => format!(
            "[{t:>6.0} s]   lm stage {index}: {} px, s = {}, {} steps from step {first_step}, lr {:.1e}",
            stage.resolution, stage.window, stage.steps, stage.learning_rate
        ),
        PipelineEvent::Lm(LmEvent::Step(s)) => format!(
            "[{t:>6.0} s]   lm step {:>5}/{lm_steps}  image CE {:.4}  z {:.2}  lr {:.2e}  {:.0} tokens/s  {:.1} img/s",
            s.step, s.image_ce, s.z_loss, s.learning_rate, s.tokens_per_second, s.images_per_second
        ),
        PipelineEvent::Lm(LmEvent::Validation(v)) => {
            format!(
                "[{t:>6.0} s]   lm valid {:>5}  image CE {:.4}  perplexity {:.1}",
                v.step, v.image_ce, v.perplexity
            )
        }
        PipelineEvent::Lm(LmEvent::Benchmark { step, result }) => {
            let interval = result
                .overall_interval
                .map(|(low, high)| format!(" ({low:.2}–{high:.2})"))
                .unwrap_or_default();
            format!(
                "[{t:>6.0} s]   lm benchmark {step:>5}  overall {:.3}{interval} on validation-seed prompts",
                result.overall
            )
        }
        PipelineEvent::Lm(LmEvent::SkippedCheckpoint { path, why }) => {
            format!("[{t:>6.0} s]   skipping checkpoint {}: {why}", path.display())
        }
        PipelineEvent::Data { step, summary } => format!("[{t:>6.0} s]   {step} data: {summary}"),
        PipelineEvent::Restarted { from, deleted } => {
            let deleted: Vec<String> = deleted.iter().map(|d| d.display().to_string()).collect();
            format!(
                "[{t:>6.0} s] restarting from the {} step: deleted {}",
                from.name(),
                if deleted.is_empty() {
                    "nothing (none existed)".into()
                } else {
                    deleted.join(", ")
                }
            )
        }
        PipelineEvent::Lm(LmEvent::Checkpoint { step, path }) => {
            format!("[{t:>6.0} s]   checkpoint {step}: {}", path.display())
        }
        PipelineEvent::Lm(LmEvent::Pretrained {
            dir,
            architecture,
            parameters,
        }) => format!(
            "[{t:>6.0} s]   lm starts from {} ({architecture}): {:.1}M parameters, {:.1} MiB of f32 weights \
             (+ 2x that for AdamW, 1x for gradients)",
            dir.display(),
            *parameters as f64 / 1e6,
            (*parameters * 4) as f64 / (1u64 << 20) as f64
        ),
    }
}

/// Arguments of `cargo xtask generate`.
#[derive(Args)]
pub struct Generate {
    /// Run directory made by `cargo xtask train`, e.g. runs/demo.
    #[arg(long)]
    run: PathBuf,
    /// A prompt; repeat for several (one image each, laid out in a grid).
    #[arg(long, required = true)]
    prompt: Vec<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Images per row of the grid.
    #[arg(long, default_value_t = 4)]
    columns: usize,
    /// Output image: .png, .jpg or .webp (never a directory, a device, or a file of a run directory).
    #[arg(long, default_value = "out.png")]
    out: PathBuf,
    /// Backend to generate on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

/// How images are sampled: guidance, its schedule, temperature, top-k, seed (shared by generate, eval, ablate).
#[derive(Args)]
pub struct SamplingArgs {
    /// Classifier-free guidance scale (1 = off); finite and ≥ 0.
    #[arg(long, default_value_t = 7.5, allow_negative_numbers = true)]
    cfg: f64,
    /// How the guidance scale rises over the image: constant, linear, half-linear, drop-first-<K> (the first K
    /// windows unguided), sin, sigmoid.
    #[arg(long, default_value = "half-linear")]
    schedule: String,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampling temperature; finite and > 0 (for greedy sampling use `--top-k 1`).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Keep the k most likely codes (k ≥ 1), or `all`. The default is the library's (`Sampler::default()`).
    #[arg(long, default_value = "1000")]
    top_k: String,
    /// Keep the most likely codes whose probabilities sum to p, in (0, 1] (default: off).
    #[arg(long)]
    top_p: Option<f64>,
}

impl SamplingArgs {
    /// The generation options these flags give, every value checked before any work starts.
    pub fn options(&self) -> Result<GenerateOptions> {
        let schedule: CfgSchedule = self.schedule.parse().map_err(anyhow::Error::msg)?;
        token_shuffle_lm::check_cfg_scale(self.cfg).map_err(|why| anyhow::anyhow!("--cfg {}: {why}", self.cfg))?;
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "--temperature {} must be a finite number > 0; for greedy sampling use `--top-k 1`",
                self.temperature
            );
        }
        let top_k = match self.top_k.as_str() {
            "all" => None,
            k => match k.parse::<usize>() {
                Ok(k) if k >= 1 => Some(k),
                _ => bail!("--top-k {k:?} must be a whole number ≥ 1, or `all`"),
            },
        };
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            bail!("--top-p {p} must be in (0, 1]");
        }
        let sampler = Sampler {
            temperature: self.temperature,
            top_k,
            top_p: self.top_p,
        };
        Ok(GenerateOptions {
            cfg_scale: self.cfg,
            schedule,
            sampler,
            seed: self.seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        sampling: SamplingArgs,
    }

    fn options(args: &[&str]) -> Result<GenerateOptions> {
        Flags::try_parse_from(std::iter::once("generate").chain(args.iter().copied()))?
            .sampling
            .options()
    }

    #[test]
    fn the_command_line_samples_like_the_library_by_default() {
        let defaults = options(&[]).unwrap();
        assert_eq!(defaults.sampler, Sampler::default());
        assert_eq!(options(&["--top-k", "all"]).unwrap().sampler.top_k, None);
        assert_eq!(
            options(&["--schedule", "drop-first-3"]).unwrap().schedule,
            CfgSchedule::DropFirst { windows: 3 }
        );
    }

    #[test]
    fn flags_that_cannot_sample_are_refused_up_front() {
        for (args, named) in [
            (&["--temperature", "NaN"][..], "--temperature NaN"),
            (&["--temperature", "-1"][..], "--temperature -1"),
            (&["--cfg", "inf"][..], "--cfg inf"),
            (&["--cfg", "NaN"][..], "--cfg NaN"),
            (&["--cfg", "1e39"][..], "overflow"),
            (&["--top-k", "0"][..], "--top-k \"0\""),
            (&["--top-p", "0"][..], "--top-p 0"),
        ] {
            let err = options(args).unwrap_err().to_string();
            assert!(err.contains(named), "{args:?}: {err}");
        }
    }
}

impl Generate {
    pub fn run(self) -> Result<()> {
        let options = self.sampling.options()?;
        // A bad --out is refused before any work, not after generating.
        token_shuffle_data::files::check_user_image(&self.out)?;
        let backend = self.backend;
        run_on(
            backend,
            GenerateTask {
                run: self.run,
                prompts: self.prompt,
                options,
                columns: self.columns,
                out: self.out,
            },
        )
    }
}

struct GenerateTask {
    run: PathBuf,
    prompts: Vec<String>,
    options: GenerateOptions,
    columns: usize,
    out: PathBuf,
}

impl BackendTask for GenerateTask {
    type Output = ();
    fn run<B: Backend>(self, _: BackendKind, device: B::Device) -> Result<()> {
        let run = TrainedRun::<B>::load(&self.run, &device)?;
        let started = Instant::now();
        let grid = run.generate(&self.prompts, &self.options, self.columns, &device, &mut |_, _| {})?;
        token_shuffle_data::save_user_image(&grid, &self.out)?;
        eprintln!(
            "{} image(s) in {:.1} s → {}",
            self.prompts.len(),
            started.elapsed().as_secs_f32(),
            self.out.display()
        );
        Ok(())
    }
}

/// Arguments of `cargo xtask demo`.
#[derive(Args)]
pub struct Demo {
    /// Run directory.
    #[arg(long, default_value = "runs/demo")]
    run: PathBuf,
    /// Delete this step of the run directory and every step after it, then train them again (tokenizer, text,
    /// codes, lm).
    #[arg(long)]
    restart_from: Option<StageName>,
    /// Show burn-train's live dashboard while training (as `train --tui`).
    #[arg(long)]
    tui: bool,
}

impl Demo {
    pub fn run(self) -> Result<()> {
        // The demo's run config is a Rust preset (`configs/run-demo.json` is tested equal to it).
        let config = RunConfig::demo();
        let started = Instant::now();
        run_on(
            BackendKind::Flex,
            TrainTask {
                config,
                dir: self.run.clone(),
                steps: PipelineSteps {
                    restart_from: self.restart_from,
                    until: None,
                },
                devices: Vec::new(),
                cluster: None,
                tui: self.tui,
            },
        )?;
        run_on(BackendKind::Flex, DemoReport { run: self.run, started })
    }
}

struct DemoReport {
    run: PathBuf,
    started: Instant,
}

impl BackendTask for DemoReport {
    type Output = ();
    fn run<B: Backend>(self, _: BackendKind, device: B::Device) -> Result<()> {
        let report =
            token_shuffle_eval::demo_report::<B>(&self.run, self.started, &device, |phase| eprintln!("{phase}"))?;
        report.save(&self.run)?;
        eprintln!(
            "demo finished in {:.1} min: {}/samples.png, benchmark.png, loss.png, report.md",
            self.started.elapsed().as_secs_f32() / 60.0,
            self.run.display()
        );
        Ok(())
    }
}

/// Arguments of `cargo xtask encode`.
#[derive(Args)]
pub struct Encode {
    /// Run config (JSON) whose data are webdataset shards.
    #[arg(long)]
    config: PathBuf,
    /// Run directory (default: runs/<config name>); its tokenizer and text tokenizer must be finished
    /// (`cargo xtask train --until text`).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Encode shard i when i mod N == K: process K of N of a job array (default: every shard).
    #[arg(long, conflicts_with = "merge")]
    shard: Option<ShardSlice>,
    /// Encode nothing: check that every shard's code caches are there and whole (after the K/N processes).
    #[arg(long)]
    merge: bool,
    /// Backend to encode on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl Encode {
    pub fn run(self) -> Result<()> {
        let config = RunConfig::load_file(&self.config)?;
        let dir = match self.run {
            Some(dir) => dir,
            None => token_shuffle_train::run_dir(
                self.config
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "run".into())
                    .trim_start_matches("run-"),
            ),
        };
        let backend = self.backend;
        run_on(
            backend,
            EncodeTask {
                config,
                dir,
                slice: (!self.merge).then(|| self.shard.unwrap_or(ShardSlice::ALL)),
            },
        )
    }
}

struct EncodeTask {
    config: RunConfig,
    dir: PathBuf,
    /// `None`: check only (`--merge`).
    slice: Option<ShardSlice>,
}

impl BackendTask for EncodeTask {
    type Output = ();
    fn run<B: Backend>(self, _: BackendKind, device: B::Device) -> Result<()> {
        match self.slice {
            None => {
                let summary = token_shuffle_train::check_shard_codes::<B>(&self.config, &self.dir, &device)?;
                println!("{summary}; `cargo xtask train` with this config goes on with the LM");
            }
            Some(slice) => {
                let started = Instant::now();
                let mut log = PipelineLog::new(&self.config);
                token_shuffle_train::encode_shards::<B>(&self.config, &self.dir, slice, &device, |e| log.print(e))?;
                drop(log);
                eprintln!(
                    "shards {}/{} encoded in {:.1} min into {}",
                    slice.index,
                    slice.count,
                    started.elapsed().as_secs_f32() / 60.0,
                    self.dir.join("codes").display()
                );
            }
        }
        Ok(())
    }
}
