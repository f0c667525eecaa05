//! A finished run loaded for generation.

use std::path::Path;

use burn::tensor::backend::Backend;
use token_shuffle_data::imaging::tile;
use token_shuffle_data::text::TextTokenizer;
use token_shuffle_lm::{GenerateOptions, TokenShuffleLm};
use token_shuffle_vqgan::VqModel;

use crate::images::tensor_to_images;
use crate::stage::{self, StageName};
use crate::weights::{load_lm_checked, load_vq_checked};
use crate::{RunConfig, TrainError};

/// A finished run, loaded for generation.
pub struct TrainedRun<B: Backend> {
    /// The run's config.
    pub config: RunConfig,
    /// The VQ tokenizer.
    pub vq: VqModel<B>,
    /// The text tokenizer.
    pub text: TextTokenizer,
    /// The LM of the last stage.
    pub lm: TokenShuffleLm<B>,
}

impl<B: Backend> TrainedRun<B> {
    /// Loads the run in `dir` (made by [`run_pipeline`](crate::run_pipeline)) with its final LM.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        Self::load_at(dir, None, device)
    }

    /// Loads the run in `dir` with the LM of its checkpoint after `step` steps (`None`: the final LM), so that a
    /// run's score can be followed over training, or read before it finishes.
    pub fn load_at(dir: &Path, step: Option<usize>, device: &B::Device) -> Result<Self, TrainError> {
        let run_path = dir.join("run.json");
        let config = RunConfig::load_file(&run_path).map_err(|e| TrainError::NotARun {
            dir: dir.to_path_buf(),
            why: format!("not a run directory made by `cargo xtask train` ({e})"),
        })?;
        let checkpoints = crate::Checkpoints::new(dir.join("lm/checkpoints"), 1);
        let (weights, stage) = match step {
            None => {
                if !dir.join("lm/model.mpk").exists() {
                    return Err(TrainError::NotARun {
                        dir: dir.to_path_buf(),
                        why: "the run has not finished training (no lm/model.mpk); run `cargo xtask train` on it \
                              again to finish, or name one of its checkpoints"
                            .into(),
                    });
                }
                (dir.join("lm/model"), config.lm.stages.len() - 1)
            }
            Some(step) => {
                let path = checkpoints.path(step);
                if !path.exists() {
                    let steps: Vec<String> = checkpoints.list().iter().map(|(s, _)| s.to_string()).collect();
                    return Err(TrainError::NotARun {
                        dir: dir.to_path_buf(),
                        why: format!(
                            "has no LM checkpoint after {step} steps; it has: {}",
                            if steps.is_empty() {
                                "none".into()
                            } else {
                                steps.join(", ")
                            }
                        ),
                    });
                }
                let lm_json = serde_json::to_value(&config.lm).expect("the config serialises");
                let state = checkpoints.state(&path, &lm_json)?;
                state.verify(&path).map_err(|why| TrainError::Corrupt {
                    path: path.clone(),
                    why,
                })?;
                (path.join("model"), state.stage)
            }
        };
        // run.json builds the model: it must still say what each step was made from (an edited width would fail
        // deep inside a forward pass, an edited rope_theta would silently make other images).
        stage::check_describes(dir, &config)?;
        // Every file loaded is checked against the checksum its step recorded (runs made before step records
        // existed have none to check).
        let mut loaded = vec![StageName::Tokenizer, StageName::Text];
        if step.is_none() {
            loaded.push(StageName::Lm);
        }
        for stage in loaded {
            let stage_dir = dir.join(stage.name());
            if let Some(record) = stage::StageRecord::read(&stage_dir)? {
                record.verify(&stage_dir, stage)?;
            }
        }
        let vq = load_vq_checked(&config, &dir.join("tokenizer/model.safetensors"), device)?;
        let text = TextTokenizer::load(&dir.join("text/tokenizer.json"))?;
        let lm = load_lm_checked(&config, stage, &weights, device)?;
        Ok(Self { config, vq, text, lm })
    }

    /// Generates one image per prompt.
    pub fn generate_images(
        &self,
        prompts: &[String],
        options: &GenerateOptions,
        device: &B::Device,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<image::RgbImage>, TrainError> {
        let texts: Vec<Vec<u32>> = prompts.iter().map(|p| self.text.encode(p)).collect::<Result<_, _>>()?;
        let max_text = self.config.lm.model.max_text_len;
        if let Some((prompt, ids)) = prompts.iter().zip(&texts).find(|(_, ids)| ids.len() > max_text) {
            // Quote the start only: a prompt pasted by mistake may be thousands of words long.
            let words: Vec<&str> = prompt.split_whitespace().collect();
            let quoted = if words.len() > 12 {
                format!("\"{} …\" ({} words)", words[..12].join(" "), words.len())
            } else {
                format!("{prompt:?}")
            };
            return Err(TrainError::Config(format!(
                "the prompt {quoted} is {} text ids long; this LM takes at most {max_text}: shorten it",
                ids.len()
            )));
        }
        let codes = self
            .lm
            .generate(&texts, options, device, &mut |step| on_step(step.done, step.total))?;
        Ok(tensor_to_images(self.vq.decode(codes)))
    }

    /// Generates one image per prompt and lays them out in a grid of `columns`.
    pub fn generate(
        &self,
        prompts: &[String],
        options: &GenerateOptions,
        columns: usize,
        device: &B::Device,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<image::RgbImage, TrainError> {
        Ok(tile(
            &self.generate_images(prompts, options, device, on_step)?,
            columns.max(1) as u32,
        ))
    }
}
