//! The LM training loop as named steps: [`LmTrainer::start`] (fresh, from a pretrained checkpoint, or resumed),
//! then per step [`enter_stage`](LmTrainer::enter_stage), [`step`](LmTrainer::step) and
//! [`after_step`](LmTrainer::after_step) (log, validate, probe, checkpoint). The weights pass through the steps by
//! value, as burn's optimizers take them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsAccumulator;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_store::{ModuleSnapshot, PathFilter};
use token_shuffle_lm::{TokenShuffleLm, TokenShuffleLmConfig};

use super::batches::step_batches;
use super::gradients::{Losses, step_gradients};
use super::optimizers::Optimizers;
use super::{LmData, LmEvent, LmProbe, LmStep, LmTrainingConfig, LmValidation, evaluate_lm};
use crate::checkpoint::{CheckpointState, Checkpoints, metrics_up_to, reopen_metrics, write_record};
use crate::error::io;
use crate::images::EpochOrder;
use crate::{TrainError, WarmupCosine};

/// The LM of stage `index`, from its code cache's grid.
fn stage_config(
    config: &LmTrainingConfig,
    data: &BTreeMap<usize, LmData>,
    index: usize,
) -> Result<TokenShuffleLmConfig, TrainError> {
    let key = data[&config.stages[index].resolution].train.key();
    let lm = config.stage_lm(index, key.resolution as usize / key.grid[0].max(1));
    if lm.grid != key.grid {
        return Err(TrainError::Config(format!(
            "stage {index}: the code cache at {} px holds {:?} grids, not square ones the stage can use",
            key.resolution, key.grid
        )));
    }
    Ok(lm)
}

/// Reads every float parameter of a module, which draws the initial values of those not drawn yet.
struct InitialiseParameters;

impl<B: Backend> ModuleVisitor<B> for InitialiseParameters {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Stage `index`'s LM from random weights, built right after seeding with `seed + index`, so that the layers a
/// stage starts fresh are the same in a resumed run and an uninterrupted one.
fn build<B: AutodiffBackend>(
    config: &LmTrainingConfig,
    data: &BTreeMap<usize, LmData>,
    index: usize,
    device: &B::Device,
) -> Result<TokenShuffleLm<B>, TrainError> {
    let lm = stage_config(config, data, index)?;
    B::seed(device, config.seed.wrapping_add(index as u64));
    let lm = lm.init::<B>(device)?;
    // burn draws a parameter's initial values when it is first read. Drawn now, in one fixed order, they do not
    // depend on what reads them first: a forward pass, or the clones forked to other devices (each clone of a
    // parameter not yet drawn would draw its own values).
    lm.visit(&mut InitialiseParameters);
    Ok(lm)
}

/// The first stage's LM at a fresh start: from the seed, or — the place an initialisation plugs in — from the
/// pretrained checkpoint [`LmTrainingConfig::init`] (its new parts from the seed, as [`build`] draws them).
fn fresh_lm<B: AutodiffBackend>(
    config: &LmTrainingConfig,
    data: &BTreeMap<usize, LmData>,
    device: &B::Device,
    on_event: &mut dyn FnMut(&LmEvent),
) -> Result<TokenShuffleLm<B>, TrainError> {
    let Some(dir) = &config.init else {
        return build(config, data, 0, device);
    };
    let hf = token_shuffle_lm::HfConfig::read(dir)?;
    let lm = stage_config(config, data, 0)?;
    on_event(&LmEvent::Pretrained {
        dir: dir.clone(),
        architecture: hf.architecture.clone(),
        parameters: lm.count(lm.architecture.max_text_len)?.parameters,
    });
    B::seed(device, config.seed);
    let lm = token_shuffle_lm::load_hf::<B>(&hf, &lm, device)?;
    lm.visit(&mut InitialiseParameters);
    Ok(lm)
}

/// Copies every parameter of `from` into `to` whose path and shape exist in both, leaving out the shuffle layers
/// when `keep_shuffle` is false: the hand-over between stages.
pub(super) fn carry_over<B: Backend>(
    from: &TokenShuffleLm<B>,
    mut to: TokenShuffleLm<B>,
    keep_shuffle: bool,
) -> TokenShuffleLm<B> {
    let filter = if keep_shuffle {
        None
    } else {
        Some(
            PathFilter::new()
                .with_predicate(|path, _| !path.starts_with("shuffle.") && !path.starts_with("unshuffle.")),
        )
    };
    let snapshots = from.collect(filter.clone(), None, false);
    to.apply(snapshots, filter, None, false);
    to
}

/// Transformer positions of one sample besides its text: `[bos]`/`[boi]` and one per image window.
fn lm_positions<B: Backend>(lm: &TokenShuffleLm<B>) -> usize {
    let [h, w] = lm.grid();
    2 + h * w / (lm.window() * lm.window())
}

/// What a step did: its mean losses and learning rate.
pub(super) struct StepOutcome {
    losses: Losses,
    learning_rate: f64,
}

/// Positions and images trained since the last log line, and since when.
struct Throughput {
    since: Instant,
    positions: usize,
    images: usize,
}

impl Throughput {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            positions: 0,
            images: 0,
        }
    }

    /// `[positions, images]` per second.
    fn rates(&self) -> [f32; 2] {
        let seconds = self.since.elapsed().as_secs_f32();
        [self.positions as f32 / seconds, self.images as f32 / seconds]
    }
}

/// An LM training run in progress (all but the weights, which pass through its steps).
pub(super) struct LmTrainer<'a, B: AutodiffBackend> {
    config: &'a LmTrainingConfig,
    data: &'a BTreeMap<usize, LmData>,
    devices: &'a [B::Device],
    config_json: serde_json::Value,
    checkpoints: Checkpoints,
    optimizers: Optimizers<B>,
    /// The stage the weights belong to.
    stage: usize,
    /// The step the run (re)started at, counting from 0.
    first_step: usize,
    order: EpochOrder,
    metrics: (PathBuf, std::fs::File),
    throughput: Throughput,
}

impl<'a, B: AutodiffBackend> LmTrainer<'a, B> {
    /// Starts the run in `out`: fresh (refused when `out` holds checkpoints), or with `resume` from the latest
    /// valid checkpoint (refused when there is none). Writes `config.json` and reopens `metrics.jsonl` with the
    /// lines the checkpoint covers. Returns the trainer and the weights its first step takes.
    pub(super) fn start(
        config: &'a LmTrainingConfig,
        data: &'a BTreeMap<usize, LmData>,
        out: &Path,
        resume: bool,
        devices: &'a [B::Device],
        on_event: &mut dyn FnMut(&LmEvent),
    ) -> Result<(Self, TokenShuffleLm<B>), TrainError> {
        let device = &devices[0];
        std::fs::create_dir_all(out).map_err(io(out))?;
        let config_json = serde_json::to_value(config).expect("the config serialises");
        let checkpoints = Checkpoints::new(out.join("checkpoints"), config.keep_checkpoints);
        let metrics_path = out.join("metrics.jsonl");
        let refused = |message: &str| {
            Err(TrainError::Checkpoint {
                path: out.join("checkpoints"),
                message: message.into(),
            })
        };
        let (lm, optimizers, stage, first_step, kept_metrics) = if resume {
            let (found, skipped) = checkpoints.latest_valid(&config_json)?;
            for (path, why) in skipped {
                on_event(&LmEvent::SkippedCheckpoint { path, why });
            }
            let Some((path, state)) = found else {
                return refused(
                    "no valid checkpoint to resume from (each was skipped, see above): delete them to start over",
                );
            };
            let (lm, optimizers) = Self::resumed(config, data, device, &path, &state)?;
            (
                lm,
                optimizers,
                state.stage,
                state.step,
                metrics_up_to(&metrics_path, state.step),
            )
        } else {
            if checkpoints.latest().is_some() {
                return refused("holds checkpoints of an earlier run: resume it, or delete them to start over");
            }
            let lm = fresh_lm::<B>(config, data, device, on_event)?;
            let optimizers = Optimizers::new(config, &lm);
            (lm, optimizers, 0, 0, String::new())
        };
        let config_path = out.join("config.json");
        config.save(&config_path).map_err(io(&config_path))?;
        let metrics = reopen_metrics(&metrics_path, &kept_metrics)?;
        let trainer = Self {
            config,
            data,
            devices,
            config_json,
            checkpoints,
            optimizers,
            stage,
            first_step,
            order: EpochOrder::default(),
            metrics: (metrics_path, metrics),
            throughput: Throughput::new(),
        };
        Ok((trainer, lm))
    }

    /// The step the run (re)starts at, counting from 0.
    pub(super) fn first_step(&self) -> usize {
        self.first_step
    }

    /// The weights and optimizer state of the checkpoint at `path`.
    fn resumed(
        config: &LmTrainingConfig,
        data: &BTreeMap<usize, LmData>,
        device: &B::Device,
        path: &Path,
        state: &CheckpointState,
    ) -> Result<(TokenShuffleLm<B>, Optimizers<B>), TrainError> {
        let unreadable = |what: &str, e: burn::record::RecorderError| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "unreadable {what} ({}); delete this checkpoint to resume from the one before",
                crate::weights::recorder_message(e)
            ),
        };
        if state.stage >= config.stages.len() {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!("names stage {} of {}", state.stage, config.stages.len()),
            });
        }
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let lm = build::<B>(config, data, state.stage, device)?
            .load_file(path.join("model"), &recorder, device)
            .map_err(|e| unreadable("model", e))?;
        let mut optimizers = Optimizers::new(config, &lm);
        optimizers.load(path, device).map_err(|(what, e)| unreadable(what, e))?;
        Ok((lm, optimizers))
    }

    /// Before step `step` (counting from 0): a new stage carries the weights over into its LM and restarts the
    /// optimizers; a stage's first step, and the run's, are announced.
    pub(super) fn enter_stage(
        &mut self,
        lm: TokenShuffleLm<B>,
        step: usize,
        on_event: &mut dyn FnMut(&LmEvent),
    ) -> Result<TokenShuffleLm<B>, TrainError> {
        let (index, stage_step) = self.config.stage_at(step);
        let stage = &self.config.stages[index];
        let lm = if index == self.stage {
            lm
        } else {
            let keep_shuffle = self.config.stages[self.stage].window == stage.window;
            let next = carry_over(
                &lm,
                build(self.config, self.data, index, &self.devices[0])?,
                keep_shuffle,
            );
            self.optimizers.restart(&next);
            self.stage = index;
            next
        };
        if stage_step == 0 || step == self.first_step {
            on_event(&LmEvent::Stage {
                index,
                stage: stage.clone(),
                first_step: step + 1,
            });
        }
        Ok(lm)
    }

    /// Step `step` (counting from 0): its micro-batches' gradients on the devices, summed in micro-batch order,
    /// and the optimizer update. A NaN or infinite loss stops the run before the update.
    pub(super) fn step(
        &mut self,
        lm: TokenShuffleLm<B>,
        step: usize,
    ) -> Result<(TokenShuffleLm<B>, StepOutcome), TrainError> {
        let (index, stage_step) = self.config.stage_at(step);
        let stage = &self.config.stages[index];
        let learning_rate = WarmupCosine {
            peak: stage.learning_rate,
            warmup_steps: self.config.warmup_steps.min(stage.steps / 2),
            total_steps: stage.steps,
            final_ratio: self.config.final_learning_rate_ratio,
        }
        .at(stage_step);
        let batches = step_batches(&self.data[&stage.resolution].train, &mut self.order, step, self.config)?;
        let mut accumulator = GradientsAccumulator::new();
        let mut losses = Losses::default();
        for (batch, micro) in batches.iter().zip(step_gradients(&lm, &batches, self.devices)) {
            let micro = micro?;
            if let Some((part, value)) = micro.losses.non_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: step + 1,
                    part,
                    value,
                });
            }
            losses.add_share(&micro.losses, batches.len());
            accumulator.accumulate(&lm, micro.grads);
            self.throughput.positions += self.config.batch_size * (batch.longest_text() + lm_positions(&lm));
            self.throughput.images += self.config.batch_size;
        }
        let lm = self.optimizers.step(learning_rate, lm, accumulator.grads());
        Ok((lm, StepOutcome { losses, learning_rate }))
    }

    /// After step `step`: the log line, the validation, the probe and the checkpoint that fall on it (a stage's
    /// last step has all but the probe, the run's last all four).
    pub(super) fn after_step(
        &mut self,
        lm: &TokenShuffleLm<B>,
        step: usize,
        outcome: StepOutcome,
        probe: Option<&mut LmProbe<'_, B::InnerBackend>>,
        on_event: &mut dyn FnMut(&LmEvent),
    ) -> Result<(), TrainError> {
        let config = self.config;
        let done = step + 1;
        let (index, stage_step) = config.stage_at(step);
        let stage_end = stage_step + 1 == config.stages[index].steps;
        if done.is_multiple_of(config.log_every) || stage_end {
            self.log(done, index, outcome, on_event)?;
        }
        if done.is_multiple_of(config.valid_every) || stage_end {
            self.validate(lm, done, index, on_event)?;
        }
        if let Some(probe) = probe.filter(|_| config.benchmark_every > 0)
            && (done.is_multiple_of(config.benchmark_every) || done == config.total_steps())
        {
            let result = probe(done, &lm.valid())?;
            self.record(serde_json::json!({ "benchmark": { "step": done, "result": result } }))?;
            on_event(&LmEvent::Benchmark { step: done, result });
            self.throughput = Throughput::new();
        }
        if done.is_multiple_of(config.checkpoint_every) || stage_end {
            self.checkpoint(lm, done, index, on_event)?;
        }
        Ok(())
    }

    /// Appends one line to `metrics.jsonl`.
    fn record(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        let (path, file) = &mut self.metrics;
        writeln!(file, "{value}").map_err(io(path))
    }

    fn log(
        &mut self,
        done: usize,
        stage: usize,
        outcome: StepOutcome,
        on_event: &mut dyn FnMut(&LmEvent),
    ) -> Result<(), TrainError> {
        let [tokens_per_second, images_per_second] = self.throughput.rates();
        let entry = LmStep {
            step: done,
            stage,
            image_ce: outcome.losses.image_ce,
            z_loss: outcome.losses.z_loss,
            text_ce: outcome.losses.text_ce,
            learning_rate: outcome.learning_rate,
            tokens_per_second,
            images_per_second,
        };
        self.record(serde_json::json!({ "train": entry }))?;
        on_event(&LmEvent::Step(entry));
        self.throughput = Throughput::new();
        Ok(())
    }

    fn validate(
        &mut self,
        lm: &TokenShuffleLm<B>,
        done: usize,
        stage: usize,
        on_event: &mut dyn FnMut(&LmEvent),
    ) -> Result<(), TrainError> {
        let valid = &self.data[&self.config.stages[stage].resolution].valid;
        let image_ce = evaluate_lm(&lm.valid(), valid, self.config.batch_size, &self.devices[0])?;
        let entry = LmValidation {
            step: done,
            image_ce,
            perplexity: image_ce.exp(),
        };
        self.record(serde_json::json!({ "valid": entry }))?;
        on_event(&LmEvent::Validation(entry));
        self.throughput = Throughput::new();
        Ok(())
    }

    fn checkpoint(
        &mut self,
        lm: &TokenShuffleLm<B>,
        done: usize,
        stage: usize,
        on_event: &mut dyn FnMut(&LmEvent),
    ) -> Result<(), TrainError> {
        let state = CheckpointState {
            step: done,
            stage,
            config: self.config_json.clone(),
            files: Default::default(),
        };
        let path = self.checkpoints.save(&state, |dir| {
            let failed = |message| TrainError::Checkpoint {
                path: dir.to_path_buf(),
                message,
            };
            write_record::<B, _>(lm.clone().into_record(), &dir.join("model"), "model").map_err(failed)?;
            self.optimizers.save(dir).map_err(failed)
        })?;
        on_event(&LmEvent::Checkpoint { step: done, path });
        Ok(())
    }
}
