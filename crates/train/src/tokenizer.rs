//! Training the VQ tokenizer: AdamW with warm-up + cosine learning rate, optional PatchGAN from a configured step,
//! periodic validation (PSNR, codebook usage, perplexity), weights written atomically.

use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::data::dataloader::batcher::Batcher;
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder as _};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Deserializer, Serialize};
use token_shuffle_data::ImageCaption;
use token_shuffle_data::batch::PixelBatcher;
use token_shuffle_data::imaging::tile;
use token_shuffle_vqgan::{CodebookUsage, PatchDiscriminator, VqLossConfig, VqModel, VqModelConfig, psnr, ssim};

use crate::checkpoint::write_record;
use crate::error::io;
use crate::images::tensor_to_images;
use crate::{CheckpointState, Checkpoints, TrainError, TrainingImages, WarmupCosine};

type Recorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Everything that defines a tokenizer training run (saved as `config.json` in the run directory).
#[derive(Config, Debug)]
pub struct TokenizerTrainingConfig {
    /// The model.
    pub model: VqModelConfig,
    /// The loss (pixel loss, codebook weight, GAN). Default: L2, no GAN.
    #[config(default = "VqLossConfig::new()")]
    pub loss: VqLossConfig,
    /// Image side in pixels; a multiple of the model's downsample factor. Default: 64.
    #[config(default = 64)]
    pub resolution: usize,
    /// Images per step. Default: 16.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Optimisation steps. Default: 2000.
    #[config(default = 2000)]
    pub steps: usize,
    /// Peak learning rate (AdamW, β = 0.9/0.999). Default: 1e-3.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Linear warm-up steps. Default: 100.
    #[config(default = 100)]
    pub warmup_steps: usize,
    /// Learning rate at the last step, as a fraction of the peak (cosine decay). Default: 0.1.
    #[config(default = 0.1)]
    pub final_learning_rate_ratio: f64,
    /// AdamW weight decay. Default: 0.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this l2 norm (burn clips per tensor). Default: 1.
    #[config(default = "Some(1.0)")]
    pub gradient_clip_norm: Option<f32>,
    /// Validate every this many steps (and after the last). Default: 250.
    #[config(default = 250)]
    pub valid_every: usize,
    /// Validation images. Default: 256.
    #[config(default = 256)]
    pub valid_images: usize,
    /// Log training losses every this many steps. Default: 25.
    #[config(default = 25)]
    pub log_every: usize,
    /// Seed of the weights and the data order. Default: 0.
    #[config(default = 0)]
    pub seed: u64,
}

impl TokenizerTrainingConfig {
    /// Checks what can be checked before loading data: the model, sizes, and steps.
    pub fn check(&self) -> Result<(), TrainError> {
        self.model.check()?;
        self.model.check_image_size(self.resolution, self.resolution)?;
        let section = crate::bounds::Section("tokenizer");
        for (field, value) in [
            ("batch_size", self.batch_size),
            ("steps", self.steps),
            ("valid_every", self.valid_every),
            ("valid_images", self.valid_images),
            ("log_every", self.log_every),
        ] {
            section.at_least_one(field, value)?;
        }
        section.positive("learning_rate", self.learning_rate)?;
        section.optimizer(
            self.final_learning_rate_ratio,
            self.weight_decay,
            self.gradient_clip_norm,
        )?;
        Ok(())
    }

    fn schedule(&self) -> WarmupCosine {
        WarmupCosine {
            peak: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            final_ratio: self.final_learning_rate_ratio,
        }
    }
}

/// Training losses at one step.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizerStep {
    /// Step (counting from 1).
    pub step: usize,
    /// Pixel loss.
    pub reconstruction: f32,
    /// Codebook loss.
    pub codebook: f32,
    /// β-weighted commitment loss.
    pub commitment: f32,
    /// Weighted entropy loss.
    pub entropy: f32,
    /// Generator GAN loss (when on).
    pub gan: Option<f32>,
    /// Discriminator hinge loss (when on).
    pub discriminator: Option<f32>,
    /// Learning rate of this step.
    pub learning_rate: f64,
    /// Training throughput since the last log line.
    pub images_per_second: f32,
}

/// Reconstruction quality of a tokenizer on a set of images.
/// `done.json` of a tokenizer stage holds one; JSON has no NaN or ∞, so those are written as `null` and read back
/// as NaN.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconstructionReport {
    /// Step of training it was measured at (0 for a loaded model).
    pub step: usize,
    /// Images evaluated.
    pub images: usize,
    /// Mean PSNR over images, dB: +∞ when every reconstruction is exact, NaN when one is not finite.
    #[serde(deserialize_with = "nan_if_null")]
    pub psnr: f32,
    /// Mean SSIM over images (NaN when a reconstruction is not finite).
    #[serde(deserialize_with = "nan_if_null")]
    pub ssim: f32,
    /// Mean squared error on the [−1, 1] scale.
    #[serde(deserialize_with = "nan_if_null")]
    pub mse: f32,
    /// Fraction of codebook entries used at least once.
    #[serde(deserialize_with = "nan_if_null")]
    pub codebook_usage: f32,
    /// Perplexity of the code distribution.
    #[serde(deserialize_with = "nan_if_null")]
    pub perplexity: f32,
}

fn nan_if_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(deserializer)?.unwrap_or(f32::NAN))
}

/// `value` with `decimals` places, or, when it is not finite, what it is: "NaN (not finite)", "+∞", "−∞".
pub fn number(value: f64, decimals: usize) -> String {
    if value.is_nan() {
        "NaN (not finite)".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+∞" } else { "−∞" }.into()
    } else {
        format!("{value:.decimals$}")
    }
}

impl ReconstructionReport {
    /// "PSNR 31.90 dB, SSIM 0.952, codebook usage 100.0%, perplexity 200.1", each value that is not finite named
    /// as such (a NaN reconstruction must not read as a number).
    pub fn summary(&self) -> String {
        format!(
            "PSNR {} dB, SSIM {}, codebook usage {}%, perplexity {}",
            number(self.psnr as f64, 2),
            number(self.ssim as f64, 3),
            number(self.codebook_usage as f64 * 100.0, 1),
            number(self.perplexity as f64, 1)
        )
    }
}

/// What the training loop reports as it goes.
#[derive(Debug, Clone)]
pub enum TokenizerEvent {
    /// Training continues from the checkpoint after this step (an interrupted run of the same config).
    Resumed {
        /// Steps the checkpoint covers.
        step: usize,
    },
    /// A checkpoint that failed its integrity check was passed over on resume (it stays on disk).
    SkippedCheckpoint {
        /// Its directory.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Losses of a logged step.
    Step(TokenizerStep),
    /// A validation pass (a checkpoint is written after each).
    Validation(ReconstructionReport),
}

/// Encodes and decodes `images` in batches and measures PSNR, SSIM, MSE and codebook use.
pub fn evaluate_reconstruction<B: Backend>(
    model: &VqModel<B>,
    images: &[ImageCaption],
    batch_size: usize,
    device: &B::Device,
) -> Result<ReconstructionReport, TrainError> {
    let mut usage = CodebookUsage::new(model.codebook_size());
    let (mut psnr_sum, mut ssim_sum, mut mse_sum, mut count) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for chunk in images.chunks(batch_size.max(1)) {
        let batch: Tensor<B, 4> = Batcher::<B, _, _>::batch(&PixelBatcher, chunk.to_vec(), device).images;
        let codes = model.encode(batch.clone())?;
        usage.add(codes.clone());
        let reconstruction = model.decode(codes);
        let mse: f32 = (reconstruction.clone().clamp(-1.0, 1.0) - batch.clone())
            .square()
            .mean()
            .into_scalar()
            .elem();
        mse_sum += mse as f64 * chunk.len() as f64;
        ssim_sum += ssim(batch.clone(), reconstruction.clone())
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>();
        // No cap: an exact reconstruction is +∞ dB and a non-finite one NaN, and the mean says so (f32::min would
        // turn NaN into the cap and report a broken tokenizer as a perfect one).
        psnr_sum += psnr(batch, reconstruction).iter().map(|&p| p as f64).sum::<f64>();
        count += chunk.len();
    }
    Ok(ReconstructionReport {
        step: 0,
        images: count,
        psnr: (psnr_sum / count.max(1) as f64) as f32,
        ssim: (ssim_sum / count.max(1) as f64) as f32,
        mse: (mse_sum / count.max(1) as f64) as f32,
        codebook_usage: usage.usage(),
        perplexity: usage.perplexity(),
    })
}

/// Encodes `images` and decodes their codes: what the tokenizer keeps of them (and the best an LM over its codes
/// could produce).
pub fn reconstruct<B: Backend>(
    model: &VqModel<B>,
    images: &[ImageCaption],
    device: &B::Device,
) -> Result<Vec<image::RgbImage>, TrainError> {
    let batch: Tensor<B, 4> = Batcher::<B, _, _>::batch(&PixelBatcher, images.to_vec(), device).images;
    Ok(tensor_to_images(model.decode(model.encode(batch)?)))
}

/// Originals (odd rows) above their reconstructions (even rows), `columns` images per row.
pub fn reconstruction_grid<B: Backend>(
    model: &VqModel<B>,
    images: &[ImageCaption],
    columns: usize,
    device: &B::Device,
) -> Result<image::RgbImage, TrainError> {
    let (w, h) = images.first().map_or((1, 1), |i| i.image.dimensions());
    let decoded = reconstruct(model, images, device)?;
    let blank = image::RgbImage::from_pixel(w, h, image::Rgb([255; 3]));
    let mut cells = Vec::new();
    for (originals, reconstructions) in images.chunks(columns).zip(decoded.chunks(columns)) {
        let padding = columns - originals.len();
        cells.extend(
            originals
                .iter()
                .map(|i| i.image.clone())
                .chain(std::iter::repeat_n(blank.clone(), padding)),
        );
        cells.extend(
            reconstructions
                .iter()
                .cloned()
                .chain(std::iter::repeat_n(blank.clone(), padding)),
        );
    }
    Ok(tile(&cells, columns as u32))
}

/// Checks that `out`, a directory named for [`train_tokenizer`] on the command line, holds nothing another config
/// or another command made: it is new, empty, or a tokenizer run of this very `config` (which then resumes).
///
/// # Errors
/// [`TrainError::NotARun`] naming `out` and why: a run directory or one of its steps (`run.json` or `stage.json`
/// there: `cargo xtask train` manages those), a tokenizer of another config (the first differing field and both
/// values), an unreadable `config.json`, files of something else, or a path that is not a directory.
pub fn check_tokenizer_out(out: &Path, config: &TokenizerTrainingConfig) -> Result<(), TrainError> {
    let refuse = |why: String| TrainError::NotARun {
        dir: out.to_path_buf(),
        why,
    };
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(refuse(
            "is not a directory; give a directory for the tokenizer run".into(),
        ));
    }
    if let Some(marker) = ["run.json", "stage.json"].iter().find(|m| out.join(m).exists()) {
        return Err(refuse(format!(
            "holds {marker}: it is a run directory or one of its steps, which `cargo xtask train` manages; give \
             train-tokenizer a directory of its own"
        )));
    }
    let recorded = out.join("config.json");
    if recorded.exists() {
        let old: serde_json::Value = std::fs::read(&recorded)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| refuse("config.json is unreadable; give a new --out".into()))?;
        // Through text, as config.json was written: an f32 read back from text differs from its f64 widening.
        let text = serde_json::to_string(config).expect("the config serialises");
        let new: serde_json::Value = serde_json::from_str(&text).expect("its JSON reads");
        return match crate::stage::first_difference(&old, &new) {
            None => Ok(()),
            Some((field, was, now)) => Err(refuse(format!(
                "holds a tokenizer trained with {field} = {was}, not {now}; give a new --out (or the same settings \
                 to resume it)"
            ))),
        };
    }
    let mut entries = std::fs::read_dir(out).map_err(|source| TrainError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    if let Some(entry) = entries.find(|e| e.as_ref().map_or(true, |e| e.file_name() != ".lock")) {
        let name = entry.map_or_else(|e| e.to_string(), |e| e.file_name().to_string_lossy().into_owned());
        return Err(refuse(format!(
            "holds {name} and no tokenizer config.json: files of something else; give a new or empty directory"
        )));
    }
    Ok(())
}

/// Trains a tokenizer as `config` says on `images`, writing into `out`:
/// `config.json`, `model.safetensors` (after each validation and at the end, atomically), `metrics.jsonl` (one
/// JSON object per logged step and validation) and `reconstructions.png` (validation originals over their
/// reconstructions). `on_event` sees each logged step and validation as it happens.
///
/// A NaN or infinite loss stops the run with [`TrainError::NonFiniteLoss`] before the weights are updated or
/// saved, so the file on disk is the last good one.
pub fn train_tokenizer<B: AutodiffBackend>(
    config: &TokenizerTrainingConfig,
    images: &TrainingImages,
    out: &Path,
    device: &B::Device,
    mut on_event: impl FnMut(&TokenizerEvent),
) -> Result<VqModel<B::InnerBackend>, TrainError> {
    config.check()?;
    let _lock = crate::RunLock::acquire(out)?;
    let mut state = TokenizerState::<B>::fresh(config, device)?;
    // An interrupted run of this config continues from its newest valid checkpoint (one per validation): the
    // batches depend only on the seed and the step, so the resumed run reproduces the uninterrupted one.
    let checkpoints = Checkpoints::new(out.join("checkpoints"), 1);
    let config_json = serde_json::to_value(config).expect("the config serialises");
    let metrics_path = out.join("metrics.jsonl");
    // (Checkpoints of another config are refused here, before anything is written.)
    let (found, skipped) = checkpoints.latest_valid(&config_json)?;
    let config_path = out.join("config.json");
    config.save(&config_path).map_err(io(&config_path))?;
    for (path, why) in skipped {
        on_event(&TokenizerEvent::SkippedCheckpoint { path, why });
    }
    let (start, kept_metrics) = match found {
        Some((path, checkpoint)) => {
            state = state.resumed(&path, device)?;
            on_event(&TokenizerEvent::Resumed { step: checkpoint.step });
            (
                checkpoint.step,
                crate::checkpoint::metrics_up_to(&metrics_path, checkpoint.step),
            )
        }
        None => (0, String::new()),
    };
    let mut metrics = crate::checkpoint::reopen_metrics(&metrics_path, &kept_metrics)?;
    let mut record = |value: serde_json::Value| {
        use std::io::Write;
        writeln!(metrics, "{value}").map_err(io(&metrics_path))
    };

    let mut since_log = (Instant::now(), 0usize);
    for step in start..config.steps {
        let losses;
        (state, losses) = state.step(config, images, step, device)?;
        since_log.1 += config.batch_size;
        let done = step + 1;
        if done.is_multiple_of(config.log_every) || done == config.steps {
            let entry = losses.read(since_log.1 as f32 / since_log.0.elapsed().as_secs_f32());
            record(serde_json::json!({ "train": entry }))?;
            on_event(&TokenizerEvent::Step(entry));
            since_log = (Instant::now(), 0);
        }
        if done.is_multiple_of(config.valid_every) || done == config.steps {
            let inference = state.model.valid();
            let mut report = evaluate_reconstruction(&inference, images.valid(), config.batch_size, device)?;
            report.step = done;
            record(serde_json::json!({ "valid": report }))?;
            inference.save_safetensors(&out.join("model.safetensors"))?;
            let checkpoint = CheckpointState {
                step: done,
                stage: 0,
                config: config_json.clone(),
                files: Default::default(),
            };
            checkpoints.save(&checkpoint, |dir| {
                state.save(dir).map_err(|message| TrainError::Checkpoint {
                    path: dir.to_path_buf(),
                    message,
                })
            })?;
            on_event(&TokenizerEvent::Validation(report));
            since_log = (Instant::now(), 0);
        }
    }
    let model = state.model.valid();
    let shown = &images.valid()[..images.valid().len().min(16)];
    let grid = reconstruction_grid(&model, shown, 8, device)?;
    let grid_path = out.join("reconstructions.png");
    grid.save(&grid_path).map_err(|e| TrainError::Io {
        path: grid_path,
        source: std::io::Error::other(e),
    })?;
    Ok(model)
}

type Adam<M, B> = OptimizerAdaptor<AdamW, M, B>;
/// The PatchGAN discriminator and its optimizer.
type Gan<B> = (PatchDiscriminator<B>, Adam<PatchDiscriminator<B>, B>);

/// What a tokenizer run trains and checkpoints: the VQ model and its optimizer, and the PatchGAN discriminator
/// with its own when the GAN loss is on.
struct TokenizerState<B: AutodiffBackend> {
    model: VqModel<B>,
    optimizer: Adam<VqModel<B>, B>,
    gan: Option<Gan<B>>,
    optimizer_config: AdamWConfig,
}

impl<B: AutodiffBackend> TokenizerState<B> {
    /// Weights drawn from the config's seed, optimizers fresh.
    fn fresh(config: &TokenizerTrainingConfig, device: &B::Device) -> Result<Self, TrainError> {
        B::seed(device, config.seed);
        let model = config.model.init::<B>(device)?;
        let discriminator = match config.loss.gan_weight > 0.0 {
            true => Some(config.loss.discriminator.init::<B>(device)?),
            false => None,
        };
        let optimizer_config = AdamWConfig::new()
            .with_weight_decay(config.weight_decay)
            .with_grad_clipping(config.gradient_clip_norm.map(GradientClippingConfig::Norm));
        Ok(Self {
            model,
            optimizer: optimizer_config.init(),
            gan: discriminator.map(|d| (d, optimizer_config.init())),
            optimizer_config,
        })
    }

    /// The state a checkpoint directory holds.
    fn resumed(self, path: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let unreadable = |what: &str, e: burn::record::RecorderError| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "unreadable {what} ({}); delete this checkpoint to start over",
                crate::weights::recorder_message(e)
            ),
        };
        let recorder = Recorder::new();
        let model = self
            .model
            .load_file(path.join("model"), &recorder, device)
            .map_err(|e| unreadable("model", e))?;
        let record = recorder
            .load(path.join("optimizer"), device)
            .map_err(|e| unreadable("optimizer state", e))?;
        let gan = match self.gan {
            Some((discriminator, optimizer)) => {
                let discriminator = discriminator
                    .load_file(path.join("discriminator"), &recorder, device)
                    .map_err(|e| unreadable("discriminator", e))?;
                let optimizer_record = recorder
                    .load(path.join("discriminator-optimizer"), device)
                    .map_err(|e| unreadable("discriminator optimizer state", e))?;
                Some((discriminator, optimizer.load_record(optimizer_record)))
            }
            None => None,
        };
        Ok(Self {
            model,
            optimizer: self.optimizer.load_record(record),
            gan,
            optimizer_config: self.optimizer_config,
        })
    }

    /// Writes the state into a checkpoint directory.
    fn save(&self, dir: &Path) -> Result<(), String> {
        write_record::<B, _>(self.model.clone().into_record(), &dir.join("model"), "model")?;
        write_record::<B, _>(self.optimizer.to_record(), &dir.join("optimizer"), "optimizer state")?;
        if let Some((discriminator, optimizer)) = &self.gan {
            let discriminator = discriminator.clone().into_record();
            write_record::<B, _>(discriminator, &dir.join("discriminator"), "discriminator")?;
            let path = dir.join("discriminator-optimizer");
            write_record::<B, _>(optimizer.to_record(), &path, "discriminator optimizer state")?;
        }
        Ok(())
    }

    /// Step `step` (counting from 0): the generator's update, then the discriminator's once the GAN is on. A NaN
    /// or infinite loss stops the run before the update.
    fn step(
        self,
        config: &TokenizerTrainingConfig,
        images: &TrainingImages,
        step: usize,
        device: &B::Device,
    ) -> Result<(Self, StepLosses<B>), TrainError> {
        let batch = images.batch(step, config.batch_size, config.seed);
        let pixels = Batcher::<B, _, _>::batch(&PixelBatcher, batch, device).images;
        let forward = self.model.forward(pixels.clone())?;
        let discriminator = self.gan.as_ref().map(|(d, _)| d);
        let loss = config
            .loss
            .generator(&self.model, discriminator, pixels.clone(), &forward, step);
        let mut losses = StepLosses {
            step: step + 1,
            reconstruction: loss.reconstruction.clone(),
            codebook: loss.codebook.clone(),
            commitment: loss.commitment.clone(),
            entropy: loss.entropy.clone(),
            gan: loss.gan.clone(),
            discriminator: None,
            learning_rate: config.schedule().at(step),
        };
        let total: f32 = loss.total.clone().into_scalar().elem();
        if !total.is_finite() {
            let (part, value) = losses.read(0.0).first_non_finite().unwrap_or(("total", total));
            return Err(TrainError::NonFiniteLoss {
                step: step + 1,
                part,
                value,
            });
        }
        let grads = GradientsParams::from_grads(loss.total.backward(), &self.model);
        let mut optimizer = self.optimizer;
        let model = optimizer.step(losses.learning_rate, self.model, grads);
        let gan = self.gan.map(|(discriminator, mut optimizer)| {
            if !config.loss.gan_active(step) {
                return (discriminator, optimizer);
            }
            let loss = config
                .loss
                .discriminator(&discriminator, pixels, forward.reconstruction);
            losses.discriminator = Some(loss.clone().into_scalar().elem());
            let grads = GradientsParams::from_grads(loss.backward(), &discriminator);
            (optimizer.step(losses.learning_rate, discriminator, grads), optimizer)
        });
        let state = Self {
            model,
            optimizer,
            gan,
            optimizer_config: self.optimizer_config,
        };
        Ok((state, losses))
    }
}

/// A step's losses, read from the device only when logged.
struct StepLosses<B: Backend> {
    step: usize,
    reconstruction: Tensor<B, 1>,
    codebook: Tensor<B, 1>,
    commitment: Tensor<B, 1>,
    entropy: Tensor<B, 1>,
    gan: Option<Tensor<B, 1>>,
    discriminator: Option<f32>,
    learning_rate: f64,
}

impl<B: Backend> StepLosses<B> {
    fn read(self, images_per_second: f32) -> TokenizerStep {
        let read = |t: Tensor<B, 1>| -> f32 { t.into_scalar().elem() };
        TokenizerStep {
            step: self.step,
            reconstruction: read(self.reconstruction),
            codebook: read(self.codebook),
            commitment: read(self.commitment),
            entropy: read(self.entropy),
            gan: self.gan.map(read),
            discriminator: self.discriminator,
            learning_rate: self.learning_rate,
            images_per_second,
        }
    }
}

impl TokenizerStep {
    /// The first loss part that is NaN or infinite, named as [`TrainError::NonFiniteLoss`] names it.
    fn first_non_finite(&self) -> Option<(&'static str, f32)> {
        [
            ("reconstruction", self.reconstruction),
            ("codebook", self.codebook),
            ("commitment", self.commitment),
            ("entropy", self.entropy),
            ("gan", self.gan.unwrap_or(0.0)),
        ]
        .into_iter()
        .find(|(_, value)| !value.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageSource;
    use burn::backend::Autodiff;
    use token_shuffle_test_support::TestBackend;

    fn tiny_config() -> TokenizerTrainingConfig {
        let model = VqModelConfig::new(32)
            .with_code_dim(4)
            .with_channels(8)
            .with_channel_multipliers(vec![1, 2])
            .with_res_blocks(1)
            .with_z_channels(8)
            .with_norm_groups(4);
        TokenizerTrainingConfig::new(model)
            .with_resolution(32)
            .with_batch_size(4)
            .with_steps(6)
            .with_warmup_steps(2)
            .with_valid_every(3)
            .with_valid_images(4)
            .with_log_every(2)
    }

    #[test]
    fn a_tokenizer_out_dir_of_another_config_or_command_is_refused() {
        let config = tiny_config();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tok");
        assert!(check_tokenizer_out(&out, &config).is_ok(), "a new directory");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join(".lock"), "").unwrap();
        assert!(check_tokenizer_out(&out, &config).is_ok(), "empty but for a lock");
        config.save(out.join("config.json")).unwrap();
        check_tokenizer_out(&out, &config).expect("the same config resumes");
        let err = check_tokenizer_out(&out, &config.clone().with_steps(7))
            .unwrap_err()
            .to_string();
        assert!(err.contains("steps = 6, not 7"), "{err}");
        std::fs::write(out.join("config.json"), "{").unwrap();
        assert!(
            check_tokenizer_out(&out, &config)
                .unwrap_err()
                .to_string()
                .contains("unreadable")
        );
        std::fs::remove_file(out.join("config.json")).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let err = check_tokenizer_out(&out, &config).unwrap_err().to_string();
        assert!(err.contains("holds notes.txt"), "{err}");
        std::fs::write(out.join("run.json"), "{}").unwrap();
        let err = check_tokenizer_out(&out, &config).unwrap_err().to_string();
        assert!(err.contains("holds run.json"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(check_tokenizer_out(&file, &config).is_err());
        assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    }

    /// A tokenizer whose output is not finite (NaN weights) reports PSNR and SSIM as NaN, named as such in its
    /// summary and kept NaN through `done.json` — not the 100 dB a capped PSNR made of it.
    #[test]
    fn a_non_finite_reconstruction_is_reported_as_such() {
        let _turn = crate::tests::one_at_a_time(); // it initialises a model (burn's process-wide RNG)
        if !token_shuffle_test_support::BACKEND_SEES_NON_FINITE {
            eprintln!("SKIPPED: {} cannot see NaN", token_shuffle_test_support::TEST_BACKEND);
            return;
        }
        use token_shuffle_test_support::Poison;
        let config = tiny_config();
        let device = Default::default();
        let images = TrainingImages::load(&ImageSource::Scenes, 32, 2, config.seed).unwrap();
        let model = config.model.init::<TestBackend>(&device).unwrap().map(&mut Poison);
        let report = evaluate_reconstruction(&model, images.valid(), 2, &device).unwrap();
        assert!(report.psnr.is_nan() && report.ssim.is_nan(), "{report:?}");
        assert!(
            report
                .summary()
                .starts_with("PSNR NaN (not finite) dB, SSIM NaN (not finite)"),
            "{}",
            report.summary()
        );
        let read: ReconstructionReport = serde_json::from_slice(&serde_json::to_vec(&report).unwrap()).unwrap();
        assert!(read.psnr.is_nan() && read.ssim.is_nan());
        assert_eq!(read.codebook_usage, report.codebook_usage);
    }

    /// A run killed after its step-3 checkpoint (GAN on from step 2, so the discriminator and its optimizer are
    /// in the checkpoint) and started again continues from step 4 with the uninterrupted run's losses, bit for bit.
    #[test]
    fn a_killed_tokenizer_run_resumes_bit_exactly() {
        let _turn = crate::tests::one_at_a_time();
        let mut config = tiny_config().with_log_every(1);
        config.loss.gan_weight = 0.1;
        config.loss.gan_start_step = 2;
        config.loss.discriminator = config.loss.discriminator.clone().with_channels(8).with_norm_groups(4);
        let images = TrainingImages::load(&ImageSource::Scenes, 32, config.valid_images, config.seed).unwrap();
        let device = Default::default();
        let losses = |events: &[TokenizerEvent]| -> Vec<(usize, f32, Option<f32>)> {
            events
                .iter()
                .filter_map(|e| match e {
                    TokenizerEvent::Step(s) => Some((s.step, s.reconstruction, s.discriminator)),
                    _ => None,
                })
                .collect()
        };

        let straight_dir = tempfile::tempdir().unwrap();
        let mut straight = Vec::new();
        train_tokenizer::<Autodiff<TestBackend>>(&config, &images, straight_dir.path(), &device, |e| {
            straight.push(e.clone())
        })
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut before = Vec::new();
        let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            train_tokenizer::<Autodiff<TestBackend>>(&config, &images, dir.path(), &device, |e| {
                before.push(e.clone());
                if matches!(e, TokenizerEvent::Validation(v) if v.step == 3) {
                    panic!("killed");
                }
            })
        }));
        assert!(killed.is_err());
        let mut after = Vec::new();
        train_tokenizer::<Autodiff<TestBackend>>(&config, &images, dir.path(), &device, |e| after.push(e.clone()))
            .unwrap();
        assert!(
            matches!(after[0], TokenizerEvent::Resumed { step: 3 }),
            "{:?}",
            after[0]
        );
        let mut resumed = losses(&before);
        resumed.extend(losses(&after));
        assert_eq!(resumed, losses(&straight));
        assert!(resumed.last().unwrap().2.is_some(), "the discriminator trained");
        // The final weights agree to float noise, not bit for bit: Flex's parallel reductions may add in another
        // order from one run to the next (two uninterrupted runs differ in the last bits as well), and the step
        // after the last logged loss shows it only in the weights.
        let weights = |d: &Path| -> Vec<f32> {
            let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
            let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            bytes[8 + header..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let (resumed_weights, straight_weights) = (weights(dir.path()), weights(straight_dir.path()));
        assert_eq!(resumed_weights.len(), straight_weights.len());
        let worst = resumed_weights
            .iter()
            .zip(&straight_weights)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "the final weights differ by up to {worst}");
        let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics.lines().filter(|l| l.starts_with("{\"train\"")).count(),
            6,
            "{metrics}"
        );
    }

    #[test]
    fn a_short_run_writes_weights_metrics_and_a_reconstruction_grid() {
        let _turn = crate::tests::one_at_a_time();
        let config = tiny_config();
        let images = TrainingImages::load(&ImageSource::Scenes, 32, config.valid_images, config.seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let mut events = Vec::new();
        let model =
            train_tokenizer::<Autodiff<TestBackend>>(&config, &images, dir.path(), &device, |e| events.push(e.clone()))
                .unwrap();

        let steps: Vec<usize> = events
            .iter()
            .filter_map(|e| {
                if let TokenizerEvent::Step(s) = e {
                    Some(s.step)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(steps, [2, 4, 6]);
        let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics.lines().filter(|l| l.starts_with("{\"valid\"")).count(),
            2,
            "{metrics}"
        );
        let grid = image::open(dir.path().join("reconstructions.png")).unwrap();
        assert_eq!(
            (grid.width(), grid.height()),
            (8 * 32, 2 * 32),
            "4 originals over 4 reconstructions, 8 per row"
        );

        // The saved weights are the returned model's, and the saved config rebuilds it.
        let saved = TokenizerTrainingConfig::load(dir.path().join("config.json")).unwrap();
        let loaded = saved
            .model
            .init::<TestBackend>(&device)
            .unwrap()
            .load_safetensors(&dir.path().join("model.safetensors"))
            .unwrap();
        let batch = Batcher::<TestBackend, _, _>::batch(&PixelBatcher, images.valid().to_vec(), &device).images;
        assert_eq!(
            model.encode(batch.clone()).unwrap().into_data(),
            loaded.encode(batch).unwrap().into_data()
        );
    }

    #[test]
    fn a_diverging_run_stops_with_the_step_and_leaves_the_last_weights_intact() {
        if !token_shuffle_test_support::BACKEND_SEES_NON_FINITE {
            eprintln!("SKIPPED: {} cannot see NaN", token_shuffle_test_support::TEST_BACKEND);
            return;
        }
        let _turn = crate::tests::one_at_a_time();
        // A learning rate of 1e30 blows the weights up after the first update: step 2's loss is not finite.
        let config = tiny_config()
            .with_learning_rate(1e30)
            .with_warmup_steps(0)
            .with_valid_every(1)
            .with_gradient_clip_norm(None);
        let images = TrainingImages::load(&ImageSource::Scenes, 32, config.valid_images, config.seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.safetensors");
        let mut saved = Vec::new();
        let result = train_tokenizer::<Autodiff<TestBackend>>(&config, &images, dir.path(), &Default::default(), |e| {
            if let TokenizerEvent::Validation(_) = e {
                saved = std::fs::read(&weights).unwrap();
            }
        });
        let err = result.unwrap_err();
        assert!(matches!(err, TrainError::NonFiniteLoss { step: 2, .. }), "{err}");
        assert!(err.to_string().contains("step 2"), "{err}");
        assert_eq!(
            std::fs::read(&weights).unwrap(),
            saved,
            "the weights saved after step 1 are untouched"
        );
    }
}
