use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::{ResidualMlp, ResidualMlpConfig};

/// How the s² tokens of a window become one Transformer token (and back): the paper's ablation axis.
///
/// The unshuffle side always splits and expands; the variant changes only what mixes the channels of the
/// merged token.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Fusion {
    /// The paper's design: compress each token d → d/s², concatenate the window, then residual MLP blocks
    /// (and on the way out, residual MLP blocks before splitting).
    ResidualMlp,
    /// Purely linear fusion, an ablation that lost to the MLP: one d × d linear layer in place of the MLP
    /// blocks on each side, so the whole shuffle and unshuffle are affine maps.
    Linear,
    /// Keep only the last token (row-major: bottom-right) of each window at full width d and drop the others,
    /// then apply the residual MLP blocks; an ablation that lost to fusing. The unshuffle side is the same as
    /// [`Fusion::ResidualMlp`]'s, since every one of the s² codes must still be predicted.
    LastToken,
}

impl Fusion {
    /// Every variant, in the order ablations list them.
    pub const ALL: [Fusion; 3] = [Fusion::ResidualMlp, Fusion::Linear, Fusion::LastToken];

    /// The name the command line and the ablation directories use: `mlp`, `linear`, `last-token`.
    pub fn name(self) -> &'static str {
        match self {
            Fusion::ResidualMlp => "mlp",
            Fusion::Linear => "linear",
            Fusion::LastToken => "last-token",
        }
    }

    /// Whether each token of a window is compressed d → d/s² before the window is concatenated (the last-token
    /// ablation keeps one token at full width instead).
    pub fn compresses(self) -> bool {
        self != Fusion::LastToken
    }

    /// Whether the shuffle side mixes with `mlp_blocks` residual MLP blocks (else one d × d linear layer).
    pub fn uses_mlp_blocks(self) -> bool {
        self != Fusion::Linear
    }

    /// The variant of the unshuffle side: the same, except that the last-token ablation changes only the input
    /// side (every code of the window is still predicted) and so splits like [`Fusion::ResidualMlp`].
    pub fn unshuffle_side(self) -> Fusion {
        match self {
            Fusion::LastToken => Fusion::ResidualMlp,
            other => other,
        }
    }
}

impl std::str::FromStr for Fusion {
    type Err = String;

    /// Parses a [`Fusion::name`].
    fn from_str(name: &str) -> Result<Self, String> {
        Fusion::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Fusion::ALL.iter().map(|f| f.name()).collect();
            let (last, others) = names.split_last().expect("there are variants");
            format!("unknown fusion {name:?}: use {} or {last}", others.join(", "))
        })
    }
}

/// The channel mixing of a merged token: residual MLP blocks, or one linear layer.
// Built once per model, so the size of the enum does not matter; burn's `Module` derive has no boxed variant.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum WindowFusion<B: Backend> {
    /// A stack of residual MLP blocks (possibly empty: then the fusion is the identity).
    ResidualMlp(Vec<ResidualMlp<B>>),
    /// One d × d linear layer.
    Linear(Linear<B>),
}

impl<B: Backend> WindowFusion<B> {
    /// Builds the mixing stage of a [`Fusion`] variant for tokens of width `d_model`.
    ///
    /// `mlp_blocks` and `mlp_hidden` apply to the MLP variants; [`Fusion::Linear`] is always one layer.
    pub fn new(
        fusion: Fusion,
        d_model: usize,
        mlp_blocks: usize,
        mlp_hidden: Option<usize>,
        device: &B::Device,
    ) -> Self {
        if fusion.uses_mlp_blocks() {
            let block = ResidualMlpConfig::new(d_model).with_d_hidden(mlp_hidden);
            Self::ResidualMlp((0..mlp_blocks).map(|_| block.init(device)).collect())
        } else {
            Self::Linear(LinearConfig::new(d_model, d_model).init(device))
        }
    }

    /// Mixes the channels of every token.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]`
    /// - output: `[..., d_model]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::ResidualMlp(blocks) => blocks.iter().fold(x, |x, block| block.forward(x)),
            Self::Linear(linear) => crate::on_rows(x, |x| linear.forward(x)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_parses_back_from_its_name_and_an_unknown_name_lists_them() {
        for fusion in Fusion::ALL {
            assert_eq!(fusion.name().parse::<Fusion>(), Ok(fusion));
        }
        let names: std::collections::BTreeSet<_> = Fusion::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Fusion::ALL.len(), "names are distinct");
        let error = "MLP".parse::<Fusion>().unwrap_err();
        assert!(
            error.contains("\"MLP\"") && error.contains("mlp, linear or last-token"),
            "{error}"
        );
    }
}
