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
use super::collective::{leaves, sum_over_ranks, weights_hash};
use super::gradients::{Losses, step_gradients};
use super::optimizers::Optimizers;
use super::{LmData, LmEvent, LmProbe, LmStep, LmTrainingConfig, LmValidation, Parallel, evaluate_lm};
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
    /// The multi-node job this process is a rank of; only rank 0 writes the run directory.
    cluster: Option<&'a token_shuffle_distributed::Cluster>,
    config_json: serde_json::Value,
    checkpoints: Checkpoints,
    optimizers: Optimizers<B>,
    /// The stage the weights belong to.
    stage: usize,
    /// The step the run (re)started at, counting from 0.
    first_step: usize,
    order: EpochOrder,
    /// `metrics.jsonl`, on the rank that writes.
    metrics: Option<(PathBuf, std::fs::File)>,
    throughput: Throughput,
}

impl<'a, B: AutodiffBackend> LmTrainer<'a, B> {
    /// Starts the run in `out`: fresh (refused when `out` holds checkpoints), or with `resume` from the latest
    /// valid checkpoint (refused when there is none). Writes `config.json` and reopens `metrics.jsonl` with the
    /// lines the checkpoint covers (rank 0 only, in a multi-node job, after the ranks have checked that they
    /// start alike). Returns the trainer and the weights its first step takes.
    pub(super) fn start(
        config: &'a LmTrainingConfig,
        data: &'a BTreeMap<usize, LmData>,
        out: &Path,
        resume: bool,
        parallel: Parallel<'a, B::Device>,
        on_event: &mut dyn FnMut(&LmEvent),
    ) -> Result<(Self, TokenShuffleLm<B>), TrainError> {
        let Parallel { devices, cluster } = parallel;
        let device = &devices[0];
        let writes = cluster.is_none_or(|c| c.is_leader());
        if writes {
            std::fs::create_dir_all(out).map_err(io(out))?;
        }
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
        if let Some(cluster) = cluster {
            check_ranks_agree(cluster, &config_json, data, &lm, first_step, &checkpoints)?;
        }
        let metrics = if writes {
            let config_path = out.join("config.json");
            config.save(&config_path).map_err(io(&config_path))?;
            Some((metrics_path.clone(), reopen_metrics(&metrics_path, &kept_metrics)?))
        } else {
            None
        };
        let trainer = Self {
            config,
            data,
            devices,
            cluster,
            config_json,
            checkpoints,
            optimizers,
            stage,
            first_step,
            order: EpochOrder::default(),
            metrics,
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
    /// and the optimizer update. In a multi-node job, rank `k` of `n` computes micro-batches `k, k + n, …` and the
    /// ranks sum their shares. A NaN or infinite loss stops the run before the update.
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
        let micro_batches = batches.len();
        for batch in &batches {
            self.throughput.positions += self.config.batch_size * (batch.longest_text() + lm_positions(&lm));
            self.throughput.images += self.config.batch_size;
        }
        let (rank, nodes) = self.cluster.map_or((0, 1), |c| (c.rank() as usize, c.nodes() as usize));
        let mine: Vec<_> = batches.into_iter().skip(rank).step_by(nodes).collect();
        let mut accumulator = GradientsAccumulator::new();
        let mut losses = Losses::default();
        for micro in step_gradients(&lm, &mine, micro_batches, self.devices) {
            let micro = micro?;
            losses.add_share(&micro.losses, micro_batches);
            accumulator.accumulate(&lm, micro.grads);
        }
        let mut grads = accumulator.grads();
        if let Some(cluster) = self.cluster {
            (grads, losses) = sum_over_ranks(cluster, &lm, &grads, losses, &self.devices[0]).map_err(|error| {
                TrainError::Cluster {
                    error,
                    checkpoint: self.checkpoints.latest().map(|(_, path)| path),
                }
            })?;
        }
        // After the sum, so that every rank of a job stops at the same step (a NaN anywhere makes the sum NaN).
        if let Some((part, value)) = losses.non_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: step + 1,
                part,
                value,
            });
        }
        let lm = self.optimizers.step(learning_rate, lm, grads);
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
        // The other ranks of a job train on; what follows is rank 0's alone (its result is rank 0's to write).
        if self.metrics.is_none() {
            return Ok(());
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
        match &mut self.metrics {
            Some((path, file)) => writeln!(file, "{value}").map_err(io(path)),
            None => Ok(()),
        }
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

/// What decides the weights an LM run trains besides its starting point, as `(path, value)` fields: the LM config's
/// leaves (without the logging-only fields) and the code caches' keys and sizes.
pub(super) fn config_fields(config_json: &serde_json::Value, data: &BTreeMap<usize, LmData>) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    leaves("lm", &super::decisive_lm(config_json), &mut fields);
    for (resolution, caches) in data {
        for (split, codes) in [("train", &caches.train), ("valid", &caches.valid)] {
            let key = format!("{:?}, {} samples", codes.key(), codes.len());
            fields.push((format!("codes[{resolution} px].{split}"), key));
        }
    }
    fields
}

/// Before a multi-node job's first step: the ranks compare what decides the weights they train — the LM config,
/// the code caches, the step they start at, the checkpoint they resume from and the hash of their weights — and
/// refuse to start, naming the differing field, when they disagree.
fn check_ranks_agree<B: Backend>(
    cluster: &token_shuffle_distributed::Cluster,
    config_json: &serde_json::Value,
    data: &BTreeMap<usize, LmData>,
    lm: &TokenShuffleLm<B>,
    first_step: usize,
    checkpoints: &Checkpoints,
) -> Result<(), TrainError> {
    let mut fields = config_fields(config_json, data);
    fields.push(("nodes".into(), cluster.nodes().to_string()));
    fields.push(("first step".into(), first_step.to_string()));
    fields.push(("weights (hash)".into(), weights_hash(lm)));
    cluster
        .check_agreement("LM training", &fields)
        .map_err(|error| TrainError::Cluster {
            error,
            checkpoint: checkpoints.latest().map(|(_, path)| path),
        })
}
