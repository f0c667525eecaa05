//! The whole run: tokenizer → text tokenizer → code caches → LM, each step skipped when its output exists and
//! was made from the same config (and inputs), and generation from a finished run.
//!
//! A run directory holds:
//! ```text
//! run.json                      the RunConfig
//! tokenizer/                    config.json, model.safetensors, metrics.jsonl, reconstructions.png, done.json
//! text/tokenizer.json           byte-level BPE trained on the training captions
//! codes/{train,valid}-<px>.bin  code caches (keyed by the fingerprints of the VQ weights and the text tokenizer)
//! lm/                           config.json, metrics.jsonl, checkpoints/, model.mpk (final weights)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::tensor::backend::{AutodiffBackend, Backend};
use token_shuffle_data::cache::{CacheKey, CodeCache};
use token_shuffle_data::codes::Codes;
use token_shuffle_data::text::TextTokenizer;
use token_shuffle_lm::TokenShuffleLm;
use token_shuffle_vqgan::VqModel;

use crate::encoding::{cache_key, encode_cache};
use crate::error::io;
use crate::events::report_data;
use crate::pretrained::Pretrained;
use crate::shards::{ShardEncoding, shard_codes};
use crate::stage::{self, StageName, StageRecord};
use crate::weights::{load_vq, save_lm};
use crate::{
    ImageSource, LmData, Parallel, PipelineEvent, RunConfig, RunLock, ShardSlice, TrainError, TrainedRun,
    TrainingImages, train_lm_probed, train_tokenizer,
};

/// Runs every step of `config` in `dir` on backend `B`, skipping the steps that are up to date. An interrupted LM
/// step resumes from its latest checkpoint.
pub fn run_pipeline<B: AutodiffBackend>(
    config: &RunConfig,
    dir: &Path,
    device: &B::Device,
    on_event: impl FnMut(&PipelineEvent),
) -> Result<(), TrainError> {
    run_pipeline_probed::<B>(
        config,
        dir,
        Parallel::local(std::slice::from_ref(device)),
        PipelineSteps::default(),
        None,
        on_event,
    )
}

/// A measurement of the run as it stands after a given LM step (the LM so far, with the run's tokenizers), taken
/// every [`crate::LmTrainingConfig::benchmark_every`] steps: the compositional benchmark, in practice.
pub type RunProbe<'a, B> = dyn FnMut(usize, &TrainedRun<B>) -> Result<crate::ProbeResult, TrainError> + 'a;

/// Which part of the pipeline [`run_pipeline_probed`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineSteps {
    /// Delete this step and the ones after it first (reported as [`PipelineEvent::Restarted`]).
    pub restart_from: Option<StageName>,
    /// Stop after this step (e.g. after the text tokenizer, before `encode --shard K/N` processes fill the code
    /// caches of webdataset shards).
    pub until: Option<StageName>,
}

/// [`run_pipeline`] with a probe of the run during LM training (see [`RunProbe`]), optionally restarted from a step
/// or stopped after one ([`PipelineSteps`]). The LM trains data parallel on `parallel` (see [`train_lm_probed`]);
/// everything else runs on its first device.
///
/// A multi-node job (`parallel.cluster`) trains the LM step only: the steps before it must be finished in `dir`
/// (`until: codes` in one process first), and only rank 0 writes `dir`.
///
/// # Errors
/// As [`run_pipeline`]; an error of the probe stops the LM step (its checkpoints are untouched).
pub fn run_pipeline_probed<B: AutodiffBackend>(
    config: &RunConfig,
    dir: &Path,
    parallel: Parallel<'_, B::Device>,
    steps: PipelineSteps,
    probe: Option<&mut RunProbe<'_, B::InnerBackend>>,
    mut on_event: impl FnMut(&PipelineEvent),
) -> Result<(), TrainError> {
    let on_event: &mut dyn FnMut(&PipelineEvent) = &mut on_event;
    let Some(device) = parallel.devices.first() else {
        return Err(TrainError::Config("no device to run on".into()));
    };
    let run = OpenRun::open::<B::InnerBackend, _>(config, dir, parallel, steps, device, on_event)?;
    let until = |step: StageName| steps.until == Some(step);
    tokenizer_step::<B>(&run, device, on_event)?;
    if until(StageName::Tokenizer) {
        return Ok(());
    }
    let (vq, vq_fingerprint) = load_vq::<B::InnerBackend>(config, &run.stage_dir(StageName::Tokenizer), device)?;
    let text = text_step(&run, on_event)?;
    if until(StageName::Text) {
        return Ok(());
    }
    let caches = codes_step(&run, &vq, &vq_fingerprint, &text, device, on_event)?;
    if until(StageName::Codes) {
        return Ok(());
    }
    lm_step::<B>(&run, vq, text, &caches, parallel, probe, on_event)
}

/// A run directory the pipeline works in: checked against its config, under the run's lock.
struct OpenRun<'a> {
    config: &'a RunConfig,
    dir: &'a Path,
    /// Each step's record as this config makes it.
    plan: Vec<(StageName, StageRecord)>,
    source: ImageSource,
    pretrained: Option<Pretrained>,
    /// The run's lock, held by the process that writes (rank 0 of a multi-node job).
    lock: Option<RunLock>,
}

impl<'a> OpenRun<'a> {
    /// Checks `config` (with its devices and its pretrained checkpoint) and every step already in `dir` against
    /// it before anything is written, takes the run's lock, deletes the steps from `steps.restart_from` on, and
    /// writes `run.json`. A rank of a multi-node job checks that the steps before the LM are finished instead; only
    /// rank 0 locks and writes.
    fn open<B: Backend, D>(
        config: &'a RunConfig,
        dir: &'a Path,
        parallel: Parallel<'_, D>,
        steps: PipelineSteps,
        device: &B::Device,
        on_event: &mut dyn FnMut(&PipelineEvent),
    ) -> Result<Self, TrainError> {
        config.check()?;
        // Before hours of tokenizer training, not after.
        config.lm.check_devices(parallel.total_devices())?;
        let (pretrained, pretrained_print) = match check_pretrained::<B>(config, dir, device)? {
            Some((pretrained, print)) => (Some(pretrained), Some(print)),
            None => (None, None),
        };
        let writes = parallel.cluster.is_none_or(|c| c.is_leader());
        let lock = writes.then(|| RunLock::acquire(dir)).transpose()?;
        let plan = stage::plan_from(config, pretrained_print.as_deref());
        if let Some(cluster) = parallel.cluster {
            check_ready_for_ranks(dir, &plan, cluster, steps)?;
        }
        if let Some(from) = steps.restart_from {
            // The steps kept must come from this config, checked before anything is deleted.
            let kept: Vec<_> = plan.iter().filter(|(stage, _)| *stage < from).cloned().collect();
            stage::check_on_disk::<B>(dir, &kept, config, device)?;
            let deleted = stage::restart(dir, from)?;
            on_event(&PipelineEvent::Restarted { from, deleted });
        }
        // Every step already on disk must come from this config, checked before anything is written.
        stage::check_on_disk::<B>(dir, &plan, config, device)?;
        let source: ImageSource = config.data.resolve()?;
        // The LM reads captions: a folder image without one is found now, not after the tokenizer has trained.
        if let ImageSource::Folder(root) = &source
            && !config.allow_uncaptioned
        {
            token_shuffle_data::folder::captioned_images(root, false)?;
        }
        if writes {
            let run_json = dir.join("run.json");
            config.save(&run_json).map_err(io(&run_json))?;
        }
        Ok(Self {
            config,
            dir,
            plan,
            source,
            pretrained,
            lock,
        })
    }

    /// Whether this process writes the run directory (it is not a rank other than 0 of a multi-node job).
    fn writes(&self) -> bool {
        self.lock.is_some()
    }

    /// The record `step` is made with.
    fn record(&self, step: StageName) -> StageRecord {
        self.plan[step as usize].1.clone()
    }

    fn stage_dir(&self, step: StageName) -> PathBuf {
        self.dir.join(step.name())
    }

    /// Whether `step` is finished with this config's record.
    fn is_finished(&self, step: StageName) -> Result<bool, TrainError> {
        self.record(step).is_finished(&self.stage_dir(step), step)
    }

    /// Records `step` as finished, with what loading its data found.
    fn finish(&self, step: StageName, data: Vec<String>) -> Result<(), TrainError> {
        let finished = StageRecord {
            data,
            ..self.record(step)
        };
        finished.finish(&self.stage_dir(step), &stage::outputs(step, self.config))?;
        Ok(())
    }
}

/// The run's pretrained checkpoint ([`crate::LmTrainingConfig::init`]), read and checked against the config, and
/// its fingerprint. Its weights are read and matched against the model now, not after hours of tokenizer training
/// (a truncated shard, a tensor of another shape), when the LM step will read them: it has not finished and has
/// no checkpoint to resume from (the fingerprint covers a checkpoint changed since).
fn check_pretrained<B: Backend>(
    config: &RunConfig,
    dir: &Path,
    device: &B::Device,
) -> Result<Option<(Pretrained, String)>, TrainError> {
    let Some(init) = config.lm.init.as_deref() else {
        return Ok(None);
    };
    let pretrained = Pretrained::open(init)?;
    pretrained.check_architecture(&config.lm.model)?;
    let lm_dir = dir.join(StageName::Lm.name());
    let lm_started =
        lm_dir.join("done.json").exists() || !crate::Checkpoints::new(lm_dir.join("checkpoints"), 1).list().is_empty();
    if !lm_started {
        let first = config.lm.stage_lm(0, config.tokenizer.model.downsample_factor());
        token_shuffle_lm::load_hf::<B>(&pretrained.hf, &first, device)?;
    }
    let print = pretrained.fingerprint()?;
    Ok(Some((pretrained, print)))
}

/// Step 1 of 4: the VQ tokenizer.
fn tokenizer_step<B: AutodiffBackend>(
    run: &OpenRun,
    device: &B::Device,
    on_event: &mut dyn FnMut(&PipelineEvent),
) -> Result<(), TrainError> {
    let tokenizer = &run.config.tokenizer;
    let skipped = run.is_finished(StageName::Tokenizer)?;
    on_event(&PipelineEvent::Phase {
        name: "tokenizer",
        skipped,
        detail: format!("{} steps on {}", tokenizer.steps, run.source),
    });
    if skipped {
        return Ok(());
    }
    let tokenizer_dir = run.stage_dir(StageName::Tokenizer);
    run.record(StageName::Tokenizer).write(&tokenizer_dir)?;
    let images = TrainingImages::load_at_most(
        &run.source,
        tokenizer.resolution as u32,
        tokenizer.valid_images,
        tokenizer.seed,
        crate::images_to_hold(tokenizer.steps, tokenizer.batch_size, tokenizer.valid_images),
    )?;
    let data = report_data(&images, "tokenizer", on_event);
    let model = train_tokenizer::<B>(tokenizer, &images, &tokenizer_dir, device, |e| {
        on_event(&PipelineEvent::Tokenizer(e.clone()))
    })?;
    let report = crate::evaluate_reconstruction(&model, images.valid(), tokenizer.batch_size, device)?;
    let done = tokenizer_dir.join("done.json");
    std::fs::write(&done, serde_json::to_vec_pretty(&report).expect("serialises")).map_err(io(&done))?;
    run.finish(StageName::Tokenizer, data.into_iter().collect())
}

/// Step 2 of 4: the text tokenizer, the pretrained checkpoint's or a BPE trained on the captions of the LM's
/// training images.
fn text_step(run: &OpenRun, on_event: &mut dyn FnMut(&PipelineEvent)) -> Result<TextTokenizer, TrainError> {
    let text_dir = run.stage_dir(StageName::Text);
    let text_path = text_dir.join("tokenizer.json");
    let phase = |skipped, detail| PipelineEvent::Phase {
        name: "text tokenizer",
        skipped,
        detail,
    };
    if run.is_finished(StageName::Text)? {
        on_event(&phase(true, text_path.display().to_string()));
        return Ok(TextTokenizer::load(&text_path)?);
    }
    let (text, data) = match &run.pretrained {
        Some(pretrained) => {
            let from = pretrained.hf.dir.join("tokenizer.json");
            let vocab = pretrained.tokenizer.vocab_size();
            on_event(&phase(
                false,
                format!("the checkpoint's, {vocab} ids ({})", from.display()),
            ));
            run.record(StageName::Text).write(&text_dir)?;
            (pretrained.tokenizer.clone(), None)
        }
        None => {
            on_event(&phase(false, format!("BPE, ≤ {} ids", run.config.text_vocab_size)));
            run.record(StageName::Text).write(&text_dir)?;
            let (captions, data) = training_captions(run, on_event)?;
            let text = TextTokenizer::train(captions.iter().map(String::as_str), run.config.text_vocab_size)?;
            (text, data)
        }
    };
    text.save(&text_path)?;
    run.finish(StageName::Text, data.into_iter().collect())?;
    Ok(text)
}

/// The captions of the LM's training images, and what loading them found.
fn training_captions(
    run: &OpenRun,
    on_event: &mut dyn FnMut(&PipelineEvent),
) -> Result<(Vec<String>, Option<String>), TrainError> {
    let config = run.config;
    if let ImageSource::Shards { paths, .. } = &run.source {
        // Captions only: decoding every image of a large shard set just to read its captions took most of this
        // step's time and memory.
        let options = crate::images::folder_options(32, config.allow_uncaptioned);
        return Ok((token_shuffle_data::shards::training_captions(paths, &options)?, None));
    }
    let first_resolution = *stage::resolutions(config).first().expect("checked: at least one stage");
    let images = TrainingImages::load_captioned(
        &run.source,
        32.max(first_resolution as u32 / 8),
        1,
        config.tokenizer.seed,
        config.allow_uncaptioned,
    )?;
    let data = report_data(&images, "text tokenizer", on_event);
    let count = images.train_len().unwrap_or(config.lm_images);
    let captions = images.train_range(0..count).into_iter().map(|i| i.caption).collect();
    Ok((captions, data))
}

/// Step 3 of 4: the code caches, one per stage resolution.
fn codes_step<B: Backend>(
    run: &OpenRun,
    vq: &VqModel<B>,
    vq_fingerprint: &str,
    text: &TextTokenizer,
    device: &B::Device,
    on_event: &mut dyn FnMut(&PipelineEvent),
) -> Result<BTreeMap<usize, LmData>, TrainError> {
    let codes_dir = run.stage_dir(StageName::Codes);
    let codes_done = run.is_finished(StageName::Codes)?;
    if !codes_done {
        run.record(StageName::Codes).write(&codes_dir)?;
    }
    let mut caches = BTreeMap::new();
    let mut codes_data = Vec::new();
    for resolution in stage::resolutions(run.config) {
        let key = cache_key(vq, vq_fingerprint, text, resolution)?;
        on_event(&PipelineEvent::Phase {
            name: "code cache",
            skipped: codes_done,
            detail: format!("{resolution} px"),
        });
        let [train, valid]: [Codes; 2] = if let ImageSource::Shards { paths: shards, .. } = &run.source {
            if !codes_done {
                let encoding = ShardEncoding::new(run.config, vq, text, &key, &codes_dir);
                codes_data.extend(encoding.encode(shards, ShardSlice::ALL, device, on_event)?);
            }
            shard_codes(shards, &codes_dir, &key, run.config.tokenizer.valid_images)?
        } else {
            let paths = ["train", "valid"].map(|split| codes_dir.join(format!("{split}-{resolution}.bin")));
            if codes_done {
                [
                    CodeCache::open(&paths[0], &key)?.into(),
                    CodeCache::open(&paths[1], &key)?.into(),
                ]
            } else {
                let (caches, data) = encode_images(run, vq, text, key, device, on_event)?;
                codes_data.extend(data);
                for (cache, path) in caches.iter().zip(&paths) {
                    cache.save(path)?;
                }
                caches.map(Codes::from)
            }
        };
        caches.insert(resolution, LmData { train, valid });
    }
    if !codes_done {
        run.finish(StageName::Codes, codes_data)?;
    }
    Ok(caches)
}

/// The training and validation code caches of the run's images (scenes or a folder) at `key`'s resolution, and
/// what loading them found.
fn encode_images<B: Backend>(
    run: &OpenRun,
    vq: &VqModel<B>,
    text: &TextTokenizer,
    key: CacheKey,
    device: &B::Device,
    on_event: &mut dyn FnMut(&PipelineEvent),
) -> Result<([CodeCache; 2], Option<String>), TrainError> {
    let (config, resolution) = (run.config, key.resolution);
    let images = TrainingImages::load_captioned(
        &run.source,
        resolution,
        config.tokenizer.valid_images,
        config.tokenizer.seed,
        config.allow_uncaptioned,
    )?;
    let data = report_data(&images, "code cache", on_event);
    let count = images.train_len().unwrap_or(config.lm_images);
    let mut on_progress = |done, total| {
        on_event(&PipelineEvent::Progress {
            what: format!("encoding {resolution} px"),
            done,
            total,
        })
    };
    let batch_size = config.tokenizer.batch_size;
    let train = encode_cache(
        vq,
        text,
        key.clone(),
        count,
        |r| images.train_range(r),
        batch_size,
        device,
        &mut on_progress,
    )?;
    let valid_images = images.valid();
    let valid = encode_cache(
        vq,
        text,
        key,
        valid_images.len(),
        |r| valid_images[r].to_vec(),
        batch_size,
        device,
        &mut on_progress,
    )?;
    Ok(([train, valid], data))
}

/// Step 4 of 4: the LM, resumed from its latest checkpoint if an earlier run of this config was interrupted.
fn lm_step<B: AutodiffBackend>(
    run: &OpenRun,
    vq: VqModel<B::InnerBackend>,
    text: TextTokenizer,
    caches: &BTreeMap<usize, LmData>,
    parallel: Parallel<'_, B::Device>,
    mut probe: Option<&mut RunProbe<'_, B::InnerBackend>>,
    on_event: &mut dyn FnMut(&PipelineEvent),
) -> Result<(), TrainError> {
    let config = run.config;
    let lm_dir = run.stage_dir(StageName::Lm);
    let skipped = run.is_finished(StageName::Lm)?;
    on_event(&PipelineEvent::Phase {
        name: "lm",
        skipped,
        detail: format!("{} steps", config.lm.total_steps()),
    });
    if skipped {
        return Ok(());
    }
    // Ranks that disagree stop before rank 0 records the LM step with its config.
    if let Some(cluster) = parallel.cluster {
        crate::lm::check_ranks_configs(cluster, &config.lm, caches)?;
    }
    if run.writes() {
        run.record(StageName::Lm).write(&lm_dir)?;
    }
    // An interrupted run of this config resumes from its newest valid checkpoint (train_lm skips corrupt ones,
    // saying so, and refuses checkpoints of another config).
    let resume = !crate::Checkpoints::new(lm_dir.join("checkpoints"), 1).list().is_empty();
    // The probe sees the LM so far with the run's tokenizers.
    let mut trained = probe.as_mut().map(|probe| {
        move |step: usize, lm: &TokenShuffleLm<B::InnerBackend>| {
            let run = TrainedRun {
                config: config.clone(),
                vq: vq.clone(),
                text: text.clone(),
                lm: lm.clone(),
            };
            probe(step, &run)
        }
    });
    let lm = train_lm_probed::<B>(
        &config.lm,
        caches,
        &lm_dir,
        resume,
        parallel,
        trained
            .as_mut()
            .map(|probe| probe as &mut crate::LmProbe<'_, B::InnerBackend>),
        |e| on_event(&PipelineEvent::Lm(e.clone())),
    )?;
    if !run.writes() {
        return Ok(());
    }
    save_lm(&lm, &lm_dir)?;
    let done = lm_dir.join("done.json");
    std::fs::write(&done, b"{}").map_err(io(&done))?;
    run.finish(StageName::Lm, Vec::new())
}

/// Before a rank of a multi-node job reads `dir`: the steps before the LM must be finished there (the job trains
/// the LM only), and nothing may be restarted or stopped early.
fn check_ready_for_ranks(
    dir: &Path,
    plan: &[(StageName, StageRecord)],
    cluster: &token_shuffle_distributed::Cluster,
    steps: PipelineSteps,
) -> Result<(), TrainError> {
    let prepare = "make them in one process first (`cargo xtask train --config C --run R --until codes`), then \
                   start every rank";
    if steps.restart_from.is_some() || steps.until.is_some() {
        return Err(TrainError::Config(format!(
            "rank {}: a multi-node job trains the LM step only, so --restart-from and --until are refused; {prepare}",
            cluster.rank()
        )));
    }
    for (step, record) in plan.iter().filter(|(step, _)| *step < StageName::Lm) {
        if !record.is_finished(&dir.join(step.name()), *step)? {
            return Err(TrainError::NotARun {
                dir: dir.to_path_buf(),
                why: format!(
                    "rank {}: its {} step is not finished, and a multi-node job trains the LM step only: {prepare}",
                    cluster.rank(),
                    step.name()
                ),
            });
        }
    }
    Ok(())
}

/// The default path of a run named `name`.
pub fn run_dir(name: &str) -> PathBuf {
    PathBuf::from("runs").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_shard_codes, encode_shards};
    use burn::backend::Autodiff;
    use token_shuffle_lm::{CfgSchedule, GenerateOptions, Sampler};
    use token_shuffle_test_support::TestBackend;

    /// The tiniest preset: a few steps of everything, on 32 px scenes.
    fn tiny_run() -> RunConfig {
        RunConfig::tiny()
    }

    /// Writes `shards` webdataset shards of `per_shard` captioned 32 px scenes into `dir` (`000.tar`, …), with one
    /// undecodable image in shard 1.
    fn write_scene_shards(dir: &Path, shards: usize, per_shard: usize) {
        use token_shuffle_data::scenes::{SceneCorpus, Split};
        let corpus = SceneCorpus::new(5, Split::Train, shards * per_shard);
        for shard in 0..shards {
            let samples: Vec<(String, Vec<u8>, String)> = (0..per_shard)
                .map(|i| {
                    let scene = corpus.scene((shard * per_shard + i) as u64);
                    let mut png = std::io::Cursor::new(Vec::new());
                    scene
                        .render(32)
                        .unwrap()
                        .write_to(&mut png, image::ImageFormat::Png)
                        .unwrap();
                    (format!("sample{i:03}"), png.into_inner(), scene.caption)
                })
                .collect();
            let mut members: Vec<(&str, &str, Vec<u8>, Option<&str>)> = samples
                .iter()
                .map(|(key, png, caption)| (key.as_str(), "png", png.clone(), Some(caption.as_str())))
                .collect();
            if shard == 1 {
                members.push(("broken", "jpg", b"not a jpeg".to_vec(), Some("a broken image")));
            }
            token_shuffle_data::shards::write_shard(&dir.join(format!("{shard:03}.tar")), &members).unwrap();
        }
    }

    /// A run over webdataset shards: `train --until text`, two `encode --shard K/2` processes, `encode --merge`,
    /// then `train` goes on with the LM from the per-shard caches (read from disk) without encoding again.
    #[test]
    fn webdataset_shards_encode_in_slices_and_train_end_to_end() {
        let _turn = crate::tests::one_at_a_time();
        let data = tempfile::tempdir().unwrap();
        write_scene_shards(data.path(), 3, 40);
        let config = RunConfig {
            data: crate::DataSource::Shards(format!("{}/{{000..002}}.tar", data.path().display())),
            ..tiny_run()
        };
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let until_text = PipelineSteps {
            restart_from: None,
            until: Some(StageName::Text),
        };
        run_pipeline_probed::<Autodiff<TestBackend>>(
            &config,
            dir.path(),
            crate::Parallel::local(std::slice::from_ref(&device)),
            until_text,
            None,
            |_| {},
        )
        .unwrap();
        assert!(!dir.path().join("codes").exists() && !dir.path().join("lm").exists());

        let err = check_shard_codes::<TestBackend>(&config, dir.path(), &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("6 of 6 code cache files at 32 px are missing"), "{err}");
        let slice = |text: &str| text.parse::<ShardSlice>().unwrap();
        // Three processes at once: 1 of 2 takes shard 1 (the one with a bad image), 0 of 2 shards 0 and 2, and
        // 0 of 2 again, started by mistake: each shard is encoded by whoever takes it first, the codes step's
        // record is written once, and all three succeed.
        let encoders = ["1/2", "0/2", "0/2"].map(|k| {
            let (config, dir, device) = (&config, dir.path(), &device);
            move || {
                let mut summaries = Vec::new();
                encode_shards::<TestBackend>(config, dir, slice(k), device, |e| {
                    if let PipelineEvent::Data { summary, .. } = e {
                        summaries.push(summary.clone());
                    }
                })
                .map(|()| summaries)
            }
        });
        let [one, zero, again] = std::thread::scope(|s| encoders.map(|f| s.spawn(f)).map(|h| h.join().unwrap()));
        let skipped = one.unwrap();
        assert!(
            skipped.len() == 1 && skipped[0].contains("001.tar:broken.jpg"),
            "the bad image is named: {skipped:?}"
        );
        for summaries in [zero.unwrap(), again.unwrap()] {
            assert!(
                summaries.iter().all(|s| s.contains("another process is encoding it")),
                "{summaries:?}"
            );
        }
        let summary = check_shard_codes::<TestBackend>(&config, dir.path(), &device).unwrap();
        // 120 good images (the broken one skipped), split by a hash of shard and key.
        assert!(
            summary.contains("all 3 shards encoded (111 training, 9 validation samples)"),
            "{summary}"
        );
        let caches = dir.path().join("codes/shards-32");
        let locks: Vec<_> = std::fs::read_dir(&caches)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".lock"))
            .collect();
        assert!(locks.is_empty(), "--merge clears the encoders' lock files: {locks:?}");
        let written: Vec<(PathBuf, Vec<u8>)> = (0..3)
            .flat_map(|s| ["train", "valid"].map(|part| caches.join(format!("{s:03}.{part}.bin"))))
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();

        let mut events = Vec::new();
        run_pipeline::<Autodiff<TestBackend>>(&config, dir.path(), &device, |e| events.push(e.clone())).unwrap();
        assert!(dir.path().join("lm/model.mpk").exists());
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, PipelineEvent::Progress { what, .. } if what.contains("shards"))),
            "nothing is encoded again"
        );
        for (path, bytes) in written {
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{} unchanged", path.display());
        }
        let record = StageRecord::read(&dir.path().join("codes")).unwrap().unwrap();
        assert_eq!(record.outputs.len(), 6, "{:?}", record.outputs.keys());
        // The tokenizer (2 steps × 4 images, 4 validation images: it holds about 80) held a seeded sample of the
        // 121 samples (120 scenes and the broken image), and said so; what it loaded is counted there.
        let tokenizer = StageRecord::read(&dir.path().join("tokenizer")).unwrap().unwrap();
        let data = tokenizer.data.join(" ");
        assert!(data.contains("a seeded sample of the shards' 121 samples"), "{data}");
        let loaded: usize = data
            .strip_prefix("loaded ")
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("`loaded N of M images` first: {data}"));
        assert!((40..=110).contains(&loaded), "{data}");
    }

    /// The whole pipeline on the tiniest models: it runs, a second run skips every step, and the trained run
    /// generates images of the right size.
    #[test]
    fn train_then_generate_end_to_end() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let config = tiny_run();
        let phases = |events: &[PipelineEvent]| -> Vec<(&'static str, bool)> {
            events
                .iter()
                .filter_map(|e| {
                    if let PipelineEvent::Phase { name, skipped, .. } = e {
                        Some((*name, *skipped))
                    } else {
                        None
                    }
                })
                .collect()
        };
        let mut first = Vec::new();
        run_pipeline::<Autodiff<TestBackend>>(&config, dir.path(), &device, |e| first.push(e.clone())).unwrap();
        assert_eq!(
            phases(&first),
            [
                ("tokenizer", false),
                ("text tokenizer", false),
                ("code cache", false),
                ("lm", false)
            ]
        );
        let mut second = Vec::new();
        run_pipeline::<Autodiff<TestBackend>>(&config, dir.path(), &device, |e| second.push(e.clone())).unwrap();
        assert_eq!(
            phases(&second),
            [
                ("tokenizer", true),
                ("text tokenizer", true),
                ("code cache", true),
                ("lm", true)
            ]
        );

        let run = TrainedRun::<TestBackend>::load(dir.path(), &device).unwrap();
        let options = GenerateOptions {
            cfg_scale: 2.0,
            schedule: CfgSchedule::Linear,
            sampler: Sampler::default(),
            seed: 3,
        };
        let prompts = ["a red circle".to_string(), "two blue squares".to_string()];
        let grid = run.generate(&prompts, &options, 2, &device, &mut |_, _| {}).unwrap();
        assert_eq!(grid.dimensions(), (64, 32), "two 32 px images side by side");

        let too_long = ["a red circle ".repeat(20)];
        let err = run
            .generate(&too_long, &options, 1, &device, &mut |_, _| {})
            .unwrap_err();
        assert!(err.to_string().contains("at most 80"), "{err}");
        let pasted = ["a red circle ".repeat(400)];
        let err = run
            .generate(&pasted, &options, 1, &device, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("(1200 words)") && err.len() < 300, "{err}");

        // A checkpoint loads in place of the final LM (tiny keeps the one after step 2, its last, which equals
        // the final weights); one that does not exist is named with the ones that do.
        let at_2 = TrainedRun::<TestBackend>::load_at(dir.path(), Some(2), &device).unwrap();
        let final_codes = |run: &TrainedRun<TestBackend>| {
            run.generate(&prompts, &options, 2, &device, &mut |_, _| {})
                .unwrap()
                .into_raw()
        };
        assert_eq!(final_codes(&at_2), final_codes(&run));
        let err = TrainedRun::<TestBackend>::load_at(dir.path(), Some(7), &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no LM checkpoint after 7 steps; it has: 2"), "{err}");
    }

    #[test]
    fn a_second_process_on_the_same_run_directory_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let held = crate::RunLock::acquire(dir.path()).unwrap();
        let err = run_pipeline::<Autodiff<TestBackend>>(&tiny_run(), dir.path(), &Default::default(), |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("already in use by process"), "{err}");
        let written: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(written, [".lock"], "nothing but the lock file");
        drop(held);
    }

    #[test]
    fn parts_that_do_not_fit_are_named() {
        let mut config = tiny_run();
        config.lm.model.codebook = 64;
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("lm.model.codebook = 64")
        );
        let mut config = tiny_run();
        config.lm.stages[0].resolution = 34;
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("stage 0") && err.contains("34×34"), "{err}");
        let mut config = tiny_run();
        config.lm.stages[0].window = 3;
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("stage 0") && err.contains("8×8 grid") && err.contains("3"),
            "{err}"
        );
    }

    /// Every file under `dir` with its bytes, to show that nothing changed.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n != "lock") {
                    files.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        files
    }

    fn train(
        config: &RunConfig,
        dir: &Path,
        restart_from: Option<StageName>,
    ) -> Result<Vec<PipelineEvent>, TrainError> {
        let mut events = Vec::new();
        let steps = PipelineSteps {
            restart_from,
            until: None,
        };
        let devices = [Default::default()];
        run_pipeline_probed::<Autodiff<TestBackend>>(config, dir, Parallel::local(&devices), steps, None, |e| {
            events.push(e.clone())
        })?;
        Ok(events)
    }

    fn skipped(events: &[PipelineEvent]) -> Vec<bool> {
        events
            .iter()
            .filter_map(|e| match e {
                PipelineEvent::Phase { skipped, .. } => Some(*skipped),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_changed_config_is_refused_before_anything_is_written_and_restart_from_remakes_the_step() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_run();
        train(&config, dir.path(), None).unwrap();
        let before = snapshot(dir.path());

        let mut wider = config.clone();
        wider.tokenizer.model.channels = 16;
        let mut other_data = config.clone();
        other_data.data = crate::DataSource::Twemoji;
        let mut more_images = config.clone();
        more_images.lm_images = 24;
        let mut other_lm = config.clone();
        other_lm.lm.stages[0].learning_rate = 0.5;
        for (changed, stage, field) in [
            (
                &wider,
                "tokenizer",
                "`tokenizer.model.channels` = 8, the config says 16",
            ),
            (
                &other_data,
                "tokenizer",
                "`data` = \"scenes\", the config says \"twemoji\"",
            ),
            (&more_images, "text", "`lm_images` = 12, the config says 24"),
            (
                &other_lm,
                "lm",
                "`lm.stages.0.learning_rate` = 0.001, the config says 0.5",
            ),
        ] {
            let err = train(changed, dir.path(), None).unwrap_err().to_string();
            assert!(
                err.contains(&format!("its {stage} step is from another config")) && err.contains(field),
                "{err}"
            );
            assert!(err.contains(&format!("--restart-from {stage}")), "{err}");
            assert!(
                snapshot(dir.path()) == before,
                "nothing was written after refusing {field}"
            );
        }

        // A wider LM is still refused; fields that change only logging are not a changed config.
        let mut wider_lm = config.clone();
        wider_lm.lm.model.decoder.d_model *= 2;
        let err = train(&wider_lm, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("its lm step is from another config") && err.contains("lm.model.decoder.d_model"),
            "{err}"
        );
        let mut chattier = config.clone();
        chattier.lm.log_every = 1;
        chattier.lm.keep_checkpoints = 7;
        assert_eq!(skipped(&train(&chattier, dir.path(), None).unwrap()), [true; 4]);

        // Restarting from the LM keeps the tokenizer, text tokenizer and codes, and trains the LM again.
        let events = train(&other_lm, dir.path(), Some(StageName::Lm)).unwrap();
        assert!(matches!(&events[0], PipelineEvent::Restarted { from: StageName::Lm, deleted } if deleted.len() == 1));
        assert_eq!(skipped(&events), [true, true, true, false]);
        // And the run is now the new config's: a second run skips everything.
        assert_eq!(skipped(&train(&other_lm, dir.path(), None).unwrap()), [true; 4]);
    }

    #[test]
    fn corrupt_files_are_named_and_never_up_to_date() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_run();
        train(&config, dir.path(), None).unwrap();
        let device = Default::default();

        // Flip a byte in the middle of the tokenizer's weights.
        let weights = dir.path().join("tokenizer/model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&weights, &bytes).unwrap();
        for err in [
            train(&config, dir.path(), None).unwrap_err().to_string(),
            TrainedRun::<TestBackend>::load(dir.path(), &device)
                .err()
                .unwrap()
                .to_string(),
        ] {
            assert!(
                err.contains("tokenizer/model.safetensors")
                    && err.contains("checksum")
                    && err.contains("--restart-from tokenizer"),
                "{err}"
            );
        }
        bytes[middle] ^= 0x55;
        std::fs::write(&weights, &bytes).unwrap();

        // A truncated final LM is not "up to date".
        let lm = dir.path().join("lm/model.mpk");
        let full = std::fs::read(&lm).unwrap();
        std::fs::write(&lm, &full[..full.len() / 2]).unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("lm/model.mpk") && err.contains("--restart-from lm"),
            "{err}"
        );
        std::fs::write(&lm, &full).unwrap();
        assert_eq!(skipped(&train(&config, dir.path(), None).unwrap()), [true; 4]);
    }

    #[test]
    fn a_run_made_before_step_records_is_adopted_when_its_run_json_agrees() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_run();
        train(&config, dir.path(), None).unwrap();
        for stage in StageName::ALL {
            std::fs::remove_file(dir.path().join(stage.name()).join("stage.json")).unwrap();
        }
        let mut other = config.clone();
        other.tokenizer.steps = 3;
        let err = train(&other, dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("`tokenizer.steps` = 2, the config says 3"), "{err}");
        assert_eq!(skipped(&train(&config, dir.path(), None).unwrap()), [true; 4]);
        assert!(dir.path().join("lm/stage.json").exists(), "records written on adoption");

        // Weights found without a record are adopted only if they load: damaged ones are made again (here the LM
        // resumes from its last checkpoint and writes the same weights), never recorded as finished.
        let lm = dir.path().join("lm/model.mpk");
        let good = std::fs::read(&lm).unwrap();
        std::fs::remove_file(dir.path().join("lm/stage.json")).unwrap();
        std::fs::write(&lm, &good[..64]).unwrap();
        assert_eq!(
            skipped(&train(&config, dir.path(), None).unwrap()),
            [true, true, true, false]
        );
        assert_eq!(std::fs::read(&lm).unwrap(), good, "the LM's weights were made again");
    }

    /// The parameters of `lm` under `prefix`, by path.
    fn parameters_under(lm: &TokenShuffleLm<TestBackend>, prefix: &str) -> BTreeMap<String, Vec<f32>> {
        use burn_store::ModuleSnapshot;
        lm.collect(None, None, false)
            .into_iter()
            .filter(|s| s.full_path().starts_with(prefix))
            .map(|s| (s.full_path(), s.to_data().unwrap().to_vec().unwrap()))
            .collect()
    }

    #[test]
    fn a_run_starts_from_a_pretrained_checkpoint_with_its_tokenizer_and_refuses_a_changed_one() {
        let _turn = crate::tests::one_at_a_time();
        let checkpoint = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/fixtures/hf/llama-gqa");
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fixture.join(file), checkpoint.path().join(file)).unwrap();
        }
        // The file gives only where the weights come from; the checkpoint fills in the decoder.
        let mut json = serde_json::to_value(tiny_run()).unwrap();
        let model = json["lm"]["model"].as_object_mut().unwrap();
        for field in ["text_vocab", "decoder", "text_head", "text_bos"] {
            model.remove(field);
        }
        json["lm"]["init"] = checkpoint.path().to_string_lossy().into_owned().into();
        json["lm"]["pretrained_learning_rate_scale"] = 0.0.into();
        let config = RunConfig::parse(&json.to_string()).unwrap();
        assert_eq!(config.lm.model.decoder.d_model, 32);
        assert_eq!(config.lm.model.text_bos, Some(1));

        let dir = tempfile::tempdir().unwrap();
        let events = train(&config, dir.path(), None).unwrap();
        assert!(events.iter().any(|e| matches!(
            e,
            PipelineEvent::Lm(crate::LmEvent::Pretrained { parameters, .. }) if *parameters > 0
        )));
        let device = Default::default();
        let run = TrainedRun::<TestBackend>::load(dir.path(), &device).unwrap();
        let theirs = TextTokenizer::load(&checkpoint.path().join("tokenizer.json")).unwrap();
        assert_eq!(
            run.text.encode("a red circle").unwrap(),
            theirs.encode("a red circle").unwrap()
        );
        // Frozen (scale 0): the decoder is the checkpoint's to the bit; what is new has trained.
        let hf = token_shuffle_lm::HfConfig::read(checkpoint.path()).unwrap();
        let stage = config.lm.stage_lm(0, config.tokenizer.model.downsample_factor());
        let loaded = token_shuffle_lm::load_hf::<TestBackend>(&hf, &stage, &device).unwrap();
        assert_eq!(
            parameters_under(&run.lm, "decoder."),
            parameters_under(&loaded, "decoder.")
        );
        assert_ne!(
            parameters_under(&run.lm, "image_head."),
            parameters_under(&loaded, "image_head.")
        );

        // A contradicting field is named with both values, before anything is written.
        let mut wider = config.clone();
        wider.lm.model.decoder.mlp_hidden = 64;
        let err = train(&wider, tempfile::tempdir().unwrap().path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lm.model.decoder.mlp_hidden = 64") && err.contains("gives 48"),
            "{err}"
        );
        // A changed checkpoint is a changed config for the LM step.
        let tokenizer = checkpoint.path().join("tokenizer.json");
        let mut text = std::fs::read_to_string(&tokenizer).unwrap();
        text.push('\n');
        std::fs::write(&tokenizer, text).unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("its lm step is from another config") && err.contains("pretrained"),
            "{err}"
        );
    }

    #[test]
    fn generation_refuses_a_run_json_edited_after_training() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        train(&tiny_run(), dir.path(), None).unwrap();
        let device = Default::default();
        let run_json = dir.path().join("run.json");
        let original = std::fs::read_to_string(&run_json).unwrap();
        let edit = |path: &[&str], value: serde_json::Value| {
            let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
            let mut at = &mut json;
            for key in path {
                at = &mut at[*key];
            }
            *at = value;
            std::fs::write(&run_json, json.to_string()).unwrap();
        };
        for (path, value) in [
            (&["lm", "model", "decoder", "rope_theta"][..], serde_json::json!(5000.0)),
            (&["lm", "model", "decoder", "d_model"][..], serde_json::json!(64)),
        ] {
            edit(path, value);
            let err = TrainedRun::<TestBackend>::load(dir.path(), &device)
                .err()
                .unwrap()
                .to_string();
            let field = path.join(".");
            assert!(
                err.contains("run.json was edited after training") && err.contains(&field),
                "{err}"
            );
        }
        // A logging-only field may change.
        edit(&["lm", "log_every"], serde_json::json!(1));
        assert!(TrainedRun::<TestBackend>::load(dir.path(), &device).is_ok());
    }

    #[test]
    fn a_folder_image_without_a_caption_is_named_before_any_step_runs() {
        let _turn = crate::tests::one_at_a_time();
        let data = tempfile::tempdir().unwrap();
        let square = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]));
        for i in 0..100 {
            square.save(data.path().join(format!("{i:02}.png"))).unwrap();
            if i != 17 {
                std::fs::write(data.path().join(format!("{i:02}.txt")), "a red square").unwrap();
            }
        }
        let mut config = tiny_run();
        config.data = crate::DataSource::Folder(data.path().to_path_buf());
        let dir = tempfile::tempdir().unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("17.png has no caption") && err.contains("allow_uncaptioned"),
            "{err}"
        );
        assert!(
            !dir.path().join("tokenizer").exists(),
            "refused before the tokenizer trained"
        );

        // A caption file that is not UTF-8 is named as such.
        std::fs::write(data.path().join("17.txt"), [0x61, 0xff, 0x62]).unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("17.txt") && err.contains("not UTF-8"), "{err}");

        // Allowed, the run goes through, and a skipped (undecodable) image is named in the log and the record.
        std::fs::remove_file(data.path().join("17.txt")).unwrap();
        std::fs::write(data.path().join("03.png"), b"not a png").unwrap();
        config.allow_uncaptioned = true;
        let events = train(&config, dir.path(), None).unwrap();
        let reports: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                PipelineEvent::Data { summary, .. } => Some(summary.clone()),
                _ => None,
            })
            .collect();
        assert!(
            !reports.is_empty() && reports.iter().all(|r| r.contains("03.png")),
            "{reports:?}"
        );
        let record = StageRecord::read(&dir.path().join("codes")).unwrap().unwrap();
        assert!(
            record.data.iter().any(|d| d.contains("skipped 1 unreadable")),
            "{record:?}"
        );
    }
}
