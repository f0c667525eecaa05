//! The LM's optimizers: one AdamW for every parameter, or, when a pretrained LM's parameters learn at their own
//! rate ([`LmTrainingConfig::pretrained_learning_rate_scale`]), a second AdamW for them (none when frozen).

use std::collections::HashSet;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burn_store::ModuleSnapshot;
use token_shuffle_lm::TokenShuffleLm;

use super::LmTrainingConfig;
use crate::checkpoint::write_record;

type LmOptimizer<B> = OptimizerAdaptor<AdamW, TokenShuffleLm<B>, B>;

/// The checkpoint files of the optimizer states (without `.mpk`).
const OPTIMIZER: &str = "optimizer";
pub(super) const PRETRAINED_OPTIMIZER: &str = "optimizer-pretrained";

/// Whether a parameter (by its path in the LM) came from the pretrained checkpoint and follows
/// [`LmTrainingConfig::pretrained_learning_rate_scale`]: the decoder and an untied text head. The embedding table
/// holds the new image rows too, so it trains at the stage's rate.
fn is_pretrained(path: &str) -> bool {
    path.starts_with("decoder.") || path.starts_with("text_head.")
}

/// The pretrained parameters learning at their own rate.
struct PretrainedPart<B: AutodiffBackend> {
    /// Their ids in the current LM ([`is_pretrained`]); they stay the same through optimizer steps, so they are
    /// found once per LM built.
    ids: HashSet<ParamId>,
    /// Their optimizer; `None` freezes them (scale 0).
    optimizer: Option<LmOptimizer<B>>,
}

/// The optimizer state of an LM training run.
pub(super) struct Optimizers<B: AutodiffBackend> {
    config: AdamWConfig,
    main: LmOptimizer<B>,
    scale: f64,
    pretrained: Option<PretrainedPart<B>>,
}

impl<B: AutodiffBackend> Optimizers<B> {
    /// Fresh optimizers for `lm` as `config` says.
    pub(super) fn new(config: &LmTrainingConfig, lm: &TokenShuffleLm<B>) -> Self {
        let adamw = AdamWConfig::new()
            .with_weight_decay(config.weight_decay)
            .with_grad_clipping(config.gradient_clip_norm.map(GradientClippingConfig::Norm));
        let scale = config.pretrained_learning_rate_scale;
        let mut optimizers = Self {
            main: adamw.init(),
            config: adamw,
            scale,
            pretrained: None,
        };
        if config.init.is_some() && scale != 1.0 {
            optimizers.pretrained = Some(optimizers.pretrained_part(lm));
        }
        optimizers
    }

    fn pretrained_part(&self, lm: &TokenShuffleLm<B>) -> PretrainedPart<B> {
        let ids = lm
            .collect(None, None, false)
            .into_iter()
            .filter(|snapshot| is_pretrained(&snapshot.full_path()))
            .filter_map(|snapshot| snapshot.tensor_id)
            .collect();
        PretrainedPart {
            ids,
            optimizer: (self.scale > 0.0).then(|| self.config.init()),
        }
    }

    /// Fresh state for a new stage's LM `lm`.
    pub(super) fn restart(&mut self, lm: &TokenShuffleLm<B>) {
        self.main = self.config.init();
        if self.pretrained.is_some() {
            self.pretrained = Some(self.pretrained_part(lm));
        }
    }

    /// One update of `lm` with `grads` at `learning_rate` (the pretrained part at its scaled rate).
    pub(super) fn step(
        &mut self,
        learning_rate: f64,
        lm: TokenShuffleLm<B>,
        mut grads: GradientsParams,
    ) -> TokenShuffleLm<B> {
        let Some(pretrained) = &mut self.pretrained else {
            return self.main.step(learning_rate, lm, grads);
        };
        let pretrained_grads = take_gradients(&lm, &pretrained.ids, &mut grads);
        let lm = self.main.step(learning_rate, lm, grads);
        match &mut pretrained.optimizer {
            Some(optimizer) => optimizer.step(learning_rate * self.scale, lm, pretrained_grads),
            None => lm,
        }
    }

    /// Reads the state a checkpoint directory holds; on failure, what could not be read and why.
    pub(super) fn load(&mut self, dir: &Path, device: &B::Device) -> Result<(), (&'static str, RecorderError)> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let record = recorder
            .load(dir.join(OPTIMIZER), device)
            .map_err(|e| ("optimizer state", e))?;
        self.main = self.config.init().load_record(record);
        if let Some(optimizer) = self.pretrained.as_mut().and_then(|part| part.optimizer.as_mut()) {
            let record = recorder
                .load(dir.join(PRETRAINED_OPTIMIZER), device)
                .map_err(|e| ("pretrained parameters' optimizer state", e))?;
            *optimizer = self.config.init().load_record(record);
        }
        Ok(())
    }

    /// Writes the state into a checkpoint directory.
    pub(super) fn save(&self, dir: &Path) -> Result<(), String> {
        write_record::<B, _>(self.main.to_record(), &dir.join(OPTIMIZER), "optimizer state")?;
        if let Some(optimizer) = self.pretrained.as_ref().and_then(|part| part.optimizer.as_ref()) {
            write_record::<B, _>(
                optimizer.to_record(),
                &dir.join(PRETRAINED_OPTIMIZER),
                "optimizer state",
            )?;
        }
        Ok(())
    }
}

/// Moves the gradients of the parameters `ids` of `lm` out of `grads`.
fn take_gradients<B: AutodiffBackend>(
    lm: &TokenShuffleLm<B>,
    ids: &HashSet<ParamId>,
    grads: &mut GradientsParams,
) -> GradientsParams {
    struct Take<'a> {
        ids: &'a HashSet<ParamId>,
        from: &'a mut GradientsParams,
        to: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.ids.contains(&param.id)
                && let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id)
            {
                self.to.register::<B::InnerBackend, D>(param.id, grad);
            }
        }
    }
    let mut take = Take {
        ids,
        from: grads,
        to: GradientsParams::new(),
    };
    lm.visit(&mut take);
    take.to
}
