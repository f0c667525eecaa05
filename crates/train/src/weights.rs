//! Checks on weights read from disk, before they are used or recorded as a finished step: every parameter has the
//! shape the config builds (burn's recorders load a tensor of any shape, which then fails deep inside a forward
//! pass), and every value is finite.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use token_shuffle_data::cache::fingerprint;
use token_shuffle_lm::TokenShuffleLm;
use token_shuffle_vqgan::VqModel;

use crate::error::io;
use crate::{RunConfig, TrainError};

/// The shape of every float parameter, in the module's visiting order (without initialising lazy parameters).
fn shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.lazy_shape().dims::<D>().to_vec());
        }
    }
    let mut visitor = Shapes(Vec::new());
    module.visit(&mut visitor);
    visitor.0
}

/// How many float parameters hold a NaN or an infinity.
fn non_finite_parameters<B: Backend, M: Module<B>>(module: &M) -> usize {
    struct Count(usize);
    impl<B: Backend> ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data();
            let finite = data.iter::<f32>().all(f32::is_finite);
            self.0 += usize::from(!finite);
        }
    }
    let mut visitor = Count(0);
    module.visit(&mut visitor);
    visitor.0
}

/// Builds with `build`, records the shapes its config gives, loads with `load`, and checks that the loaded weights
/// have those shapes and are finite.
///
/// # Errors
/// What `build` or `load` returns, or a message (through `refuse`) naming the first parameter of another shape or
/// the number of parameters that are not finite.
pub(crate) fn load_checked<B: Backend, M: Module<B>, E>(
    build: impl FnOnce() -> Result<M, E>,
    load: impl FnOnce(M) -> Result<M, E>,
    refuse: impl FnOnce(String) -> E,
) -> Result<M, E> {
    let built = build()?;
    let expected = shapes(&built);
    let loaded = load(built)?;
    let found = shapes(&loaded);
    if let Some((index, (want, got))) = expected.iter().zip(&found).enumerate().find(|(_, (w, g))| w != g) {
        return Err(refuse(format!(
            "parameter {index} has shape {got:?} where the config builds {want:?}: these weights were trained with \
             another config"
        )));
    }
    if expected.len() != found.len() {
        return Err(refuse(format!(
            "{} parameters where the config builds {}: these weights were trained with another config",
            found.len(),
            expected.len()
        )));
    }
    let bad = non_finite_parameters(&loaded);
    if bad > 0 {
        return Err(refuse(format!(
            "{bad} parameter tensor(s) hold NaN or infinite values: the weights are corrupt or diverged"
        )));
    }
    Ok(loaded)
}

/// A recorder's error without burn's hint about its 0.14 format change, which misleads for a file that is simply
/// damaged.
pub(crate) fn recorder_message(error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    let cut = text
        .find("\nThe internal data format has changed")
        .unwrap_or(text.len());
    text[..cut].trim_end().to_string()
}

/// The run's VQ tokenizer (finished), and the fingerprint of its weights (what its code caches are keyed by).
pub(crate) fn load_vq<B: Backend>(
    config: &RunConfig,
    tokenizer_dir: &Path,
    device: &B::Device,
) -> Result<(VqModel<B>, String), TrainError> {
    let vq_path = tokenizer_dir.join("model.safetensors");
    let vq_bytes = std::fs::read(&vq_path).map_err(io(&vq_path))?;
    let vq = config.tokenizer.model.init::<B>(device)?.load_safetensors(&vq_path)?;
    Ok((vq, fingerprint(&vq_bytes)))
}

pub(crate) type Recorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Writes the final LM weights to `dir/model.mpk` (through a temporary file).
pub(crate) fn save_lm<B: Backend>(lm: &TokenShuffleLm<B>, dir: &Path) -> Result<(), TrainError> {
    token_shuffle_data::replace_atomically(&dir.join("model.mpk"), |partial| {
        // The partial name keeps the `.mpk` extension that the recorder's reader expects.
        crate::checkpoint::write_record::<B, _>(lm.clone().into_record(), partial, "final LM weights").map_err(
            |message| TrainError::Weights {
                path: partial.to_path_buf(),
                message,
            },
        )
    })
}

/// The VQ tokenizer of a run of `config` from `path`, checked to have the config's shapes and finite weights.
pub(crate) fn load_vq_checked<B: Backend>(
    config: &RunConfig,
    path: &Path,
    device: &B::Device,
) -> Result<VqModel<B>, TrainError> {
    load_checked(
        || config.tokenizer.model.init::<B>(device).map_err(TrainError::from),
        |vq| vq.load_safetensors(path).map_err(TrainError::from),
        |why| TrainError::Corrupt {
            path: path.to_path_buf(),
            why: format!("{why}; make it again with `--restart-from tokenizer`"),
        },
    )
}

/// The LM of stage `stage` of a run of `config` from the recorder file `weights` (without its `.mpk`), checked
/// to have the config's shapes and finite weights.
pub(crate) fn load_lm_checked<B: Backend>(
    config: &RunConfig,
    stage: usize,
    weights: &Path,
    device: &B::Device,
) -> Result<TokenShuffleLm<B>, TrainError> {
    let file = weights.with_extension("mpk");
    let refuse = |why: String| TrainError::Weights {
        path: file.clone(),
        message: format!("{why}; run `cargo xtask train` on the run again to rewrite it"),
    };
    let lm_config = config.lm.stage_lm(stage, config.tokenizer.model.downsample_factor());
    load_checked(
        || lm_config.init::<B>(device).map_err(TrainError::from),
        |lm| {
            lm.load_file(weights, &Recorder::new(), device).map_err(|e| {
                refuse(format!(
                    "unreadable, damaged or not LM weights ({})",
                    recorder_message(e)
                ))
            })
        },
        refuse,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use token_shuffle_test_support::TestBackend as B;

    #[test]
    fn weights_of_another_shape_or_not_finite_are_refused() {
        let device = Default::default();
        // A fresh default device per call: a GPU device is not `Copy`.
        let build =
            |d_out: usize| move || Ok::<Linear<B>, String>(LinearConfig::new(4, d_out).init(&Default::default()));
        let same = |m: Linear<B>| Ok(m);
        assert!(load_checked(build(3), same, |e| e).is_ok());

        let other = LinearConfig::new(4, 5).init::<B>(&device);
        let err = load_checked(build(3), |_| Ok(other.clone()), |e| e).unwrap_err();
        assert!(err.contains("[4, 5]") && err.contains("[4, 3]"), "{err}");

        if !token_shuffle_test_support::BACKEND_SEES_NON_FINITE {
            return;
        }
        let nan = |m: Linear<B>| {
            let weight = m.weight.val().mul_scalar(f32::NAN);
            Ok(Linear {
                weight: Param::from_tensor(weight),
                ..m
            })
        };
        let err = load_checked(build(3), nan, |e| e).unwrap_err();
        assert!(err.contains("1 parameter tensor(s) hold NaN"), "{err}");
    }
}
