//! Loading LlamaGen's published VQ tokenizer checkpoints (`vq_ds16_c2i.pt`, `vq_ds16_t2i.pt`).
//!
//! [`VqModel`] keeps LlamaGen's parameter names, so almost every key of its state dict is already the path of a
//! parameter here. The differences, handled by [`load_llamagen`]:
//!
//! | LlamaGen key | here | why |
//! |---|---|---|
//! | `encoder.mid.0.*`, `decoder.mid.0.*` | `*.mid.block_1.*` | LlamaGen's mid block is a list; here it is a struct |
//! | `encoder.mid.1.*`, `decoder.mid.1.*` | `*.mid.attn_1.*` | 〃 |
//! | `encoder.mid.2.*`, `decoder.mid.2.*` | `*.mid.block_2.*` | 〃 |
//! | `…norm….weight`, `…norm….bias` (GroupNorm) | `….gamma`, `….beta` | burn's GroupNorm names (burn-store's PyTorch adapter) |
//! | `quantize.codebook_used` | — | a training-time usage buffer, not a weight: ignored |
//!
//! The layout is LlamaGen's `VQ_16` with `configs/llamagen-vq16.json` (`channels` 128, multipliers 1,1,2,2,4,
//! 2 residual blocks, `z_channels` 256, code dim 8, K = 16384, 32 GroupNorm groups). PyTorch checkpoints are read
//! with burn-store's reader (no Python needed); LlamaGen stores the state dict under the top-level key `model`.
//! A safetensors file with the same key names loads too.
//!
//! ```no_run
//! use std::path::Path;
//! use burn::backend::Flex;
//! use burn::config::Config;
//! use token_shuffle_vqgan::{VqModelConfig, llamagen::load_llamagen};
//!
//! let config = VqModelConfig::load("configs/llamagen-vq16.json").unwrap();
//! let model = load_llamagen::<Flex>(&config, Path::new("vq_ds16_c2i.pt"), &Default::default()).unwrap();
//! assert_eq!(model.downsample_factor(), 16);
//! ```

use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use crate::model::check_applied;
use crate::{VqError, VqModel, VqModelConfig};

/// LlamaGen key → parameter path rewrites (regular expression, replacement), applied to every key of the file.
pub const KEY_REMAPPING: [(&str, &str); 3] = [
    (r"^(encoder|decoder)\.mid\.0\.", "$1.mid.block_1."),
    (r"^(encoder|decoder)\.mid\.1\.", "$1.mid.attn_1."),
    (r"^(encoder|decoder)\.mid\.2\.", "$1.mid.block_2."),
];

/// The state-dict key LlamaGen uses for a parameter path of [`VqModel`] (the inverse of [`KEY_REMAPPING`] and of
/// the GroupNorm renaming), for error messages that name what is missing from the file.
pub fn llamagen_key(path: &str) -> String {
    let key = path
        .replace(".mid.block_1.", ".mid.0.")
        .replace(".mid.attn_1.", ".mid.1.")
        .replace(".mid.block_2.", ".mid.2.");
    let is_norm = key.rsplit('.').nth(1).is_some_and(|module| module.starts_with("norm"));
    match key.rsplit_once('.') {
        Some((module, "gamma")) if is_norm => format!("{module}.weight"),
        Some((module, "beta")) if is_norm => format!("{module}.bias"),
        _ => key,
    }
}

/// Builds a model from `config` and loads a LlamaGen checkpoint into it: a PyTorch file (`.pt`, `.pth`; state dict
/// under `model`) or a safetensors file with LlamaGen's key names. A key the model needs but the file lacks is
/// an error naming it (by its LlamaGen name); so is a tensor of the wrong shape (another config).
pub fn load_llamagen<B: Backend>(
    config: &VqModelConfig,
    path: &Path,
    device: &B::Device,
) -> Result<VqModel<B>, VqError> {
    let mut model = config.init::<B>(device)?;
    let remapper = KeyRemapper::from_patterns(KEY_REMAPPING.to_vec()).expect("the remapping patterns are valid");
    let read_error = |message: String| VqError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let result = if path.extension().is_some_and(|e| e == "safetensors") {
        let mut store = SafetensorsStore::from_file(path)
            .remap(remapper)
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true)
            .validate(false);
        model.load_from(&mut store).map_err(|e| read_error(e.to_string()))?
    } else {
        let mut store = PytorchStore::from_file(path)
            .with_top_level_key("model")
            .remap(remapper)
            .allow_partial(true)
            .validate(false);
        model.load_from(&mut store).map_err(|e| read_error(e.to_string()))?
    };
    check_applied(&result, path, llamagen_key)?;
    // A key left over means a LlamaGen tensor found no parameter: the layout is not the one this loader knows.
    // (burn-store lists GroupNorm `weight`/`bias` as unused even when the adapter applied them as `gamma`/`beta`,
    // so compare LlamaGen names on both sides.)
    let applied: std::collections::HashSet<String> = result.applied.iter().map(|p| llamagen_key(p)).collect();
    let unused: Vec<String> = result
        .unused
        .iter()
        .map(|key| llamagen_key(key))
        .filter(|key| !applied.contains(key) && !IGNORED_KEYS.contains(&key.as_str()))
        .collect();
    if !unused.is_empty() {
        return Err(read_error(format!(
            "{} tensor(s) of the file have no place in this model (first: {}); is the config the checkpoint's?",
            unused.len(),
            unused[0]
        )));
    }
    Ok(model)
}

/// Keys of LlamaGen checkpoints that are not weights.
pub const IGNORED_KEYS: [&str; 1] = ["quantize.codebook_used"];

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    use safetensors::tensor::{Dtype, TensorView};
    use std::collections::HashMap;
    use token_shuffle_test_support::TestBackend;

    /// The keys and PyTorch shapes of LlamaGen's `VQModel.state_dict()` for `config`, written out from its Python
    /// constructors (`Encoder`, `Decoder`, `ResnetBlock`, `AttnBlock`, `VectorQuantizer`), independently of the
    /// burn modules.
    fn llamagen_state_dict(c: &VqModelConfig) -> Vec<(String, Vec<usize>)> {
        let mut keys = Vec::new();
        fn conv(keys: &mut Vec<(String, Vec<usize>)>, name: &str, cin: usize, cout: usize, k: usize) {
            keys.push((format!("{name}.weight"), vec![cout, cin, k, k]));
            keys.push((format!("{name}.bias"), vec![cout]));
        }
        fn norm(keys: &mut Vec<(String, Vec<usize>)>, name: &str, ch: usize) {
            keys.push((format!("{name}.weight"), vec![ch]));
            keys.push((format!("{name}.bias"), vec![ch]));
        }
        fn resnet(keys: &mut Vec<(String, Vec<usize>)>, name: &str, cin: usize, cout: usize) {
            norm(keys, &format!("{name}.norm1"), cin);
            conv(keys, &format!("{name}.conv1"), cin, cout, 3);
            norm(keys, &format!("{name}.norm2"), cout);
            conv(keys, &format!("{name}.conv2"), cout, cout, 3);
            if cin != cout {
                conv(keys, &format!("{name}.nin_shortcut"), cin, cout, 1);
            }
        }
        fn attn(keys: &mut Vec<(String, Vec<usize>)>, name: &str, ch: usize) {
            norm(keys, &format!("{name}.norm"), ch);
            for part in ["q", "k", "v", "proj_out"] {
                conv(keys, &format!("{name}.{part}"), ch, ch, 1);
            }
        }
        fn mid(keys: &mut Vec<(String, Vec<usize>)>, name: &str, ch: usize) {
            resnet(keys, &format!("{name}.mid.0"), ch, ch);
            attn(keys, &format!("{name}.mid.1"), ch);
            resnet(keys, &format!("{name}.mid.2"), ch, ch);
        }
        let (ch, mult, n) = (c.channels, &c.channel_multipliers, c.channel_multipliers.len());

        conv(&mut keys, "encoder.conv_in", 3, ch, 3);
        let in_ch_mult: Vec<usize> = [1].iter().chain(mult).copied().collect();
        let mut block_in = 0;
        for i_level in 0..n {
            block_in = ch * in_ch_mult[i_level];
            let block_out = ch * mult[i_level];
            for j in 0..c.res_blocks {
                resnet(
                    &mut keys,
                    &format!("encoder.conv_blocks.{i_level}.res.{j}"),
                    block_in,
                    block_out,
                );
                block_in = block_out;
                if i_level == n - 1 {
                    attn(&mut keys, &format!("encoder.conv_blocks.{i_level}.attn.{j}"), block_in);
                }
            }
            if i_level != n - 1 {
                conv(
                    &mut keys,
                    &format!("encoder.conv_blocks.{i_level}.downsample.conv"),
                    block_in,
                    block_in,
                    3,
                );
            }
        }
        mid(&mut keys, "encoder", block_in);
        norm(&mut keys, "encoder.norm_out", block_in);
        conv(&mut keys, "encoder.conv_out", block_in, c.z_channels, 3);

        let mut block_in = ch * mult[n - 1];
        conv(&mut keys, "decoder.conv_in", c.z_channels, block_in, 3);
        mid(&mut keys, "decoder", block_in);
        for (index, i_level) in (0..n).rev().enumerate() {
            let block_out = ch * mult[i_level];
            for j in 0..=c.res_blocks {
                resnet(
                    &mut keys,
                    &format!("decoder.conv_blocks.{index}.res.{j}"),
                    block_in,
                    block_out,
                );
                block_in = block_out;
                if i_level == n - 1 {
                    attn(&mut keys, &format!("decoder.conv_blocks.{index}.attn.{j}"), block_in);
                }
            }
            if i_level != 0 {
                conv(
                    &mut keys,
                    &format!("decoder.conv_blocks.{index}.upsample.conv"),
                    block_in,
                    block_in,
                    3,
                );
            }
        }
        norm(&mut keys, "decoder.norm_out", block_in);
        conv(&mut keys, "decoder.conv_out", block_in, 3, 3);

        keys.push(("quantize.embedding.weight".into(), vec![c.codebook_size, c.code_dim]));
        keys.push(("quantize.codebook_used".into(), vec![65536]));
        conv(&mut keys, "quant_conv", c.z_channels, c.code_dim, 1);
        conv(&mut keys, "post_quant_conv", c.code_dim, c.z_channels, 1);
        keys
    }

    fn small_config() -> VqModelConfig {
        VqModelConfig::new(16)
            .with_code_dim(4)
            .with_channels(8)
            .with_channel_multipliers(vec![1, 2, 4])
            .with_z_channels(8)
            .with_norm_groups(4)
    }

    /// Writes the state dict with every value of the i-th tensor equal to i, leaving out `skip`.
    fn write_checkpoint(path: &Path, keys: &[(String, Vec<usize>)], skip: &[&str]) {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = keys
            .iter()
            .enumerate()
            .filter(|(_, (key, _))| !skip.contains(&key.as_str()))
            .map(|(i, (key, shape))| {
                let values = vec![i as f32; shape.iter().product()];
                (
                    key.clone(),
                    shape.clone(),
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(key, shape, data)| (key.clone(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()));
        safetensors::serialize_to_file(views, None::<HashMap<String, String>>, path).unwrap();
    }

    #[test]
    fn every_llamagen_key_lands_on_its_parameter() {
        let config = small_config();
        let keys = llamagen_state_dict(&config);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vq.safetensors");
        write_checkpoint(&path, &keys, &[]);
        let model = load_llamagen::<TestBackend>(&config, &path, &Default::default()).unwrap();

        // Every parameter holds the constant of the LlamaGen tensor it was mapped from.
        struct Check<'a> {
            index: HashMap<&'a str, usize>,
            path: Vec<String>,
            seen: usize,
        }
        impl ModuleVisitor<TestBackend> for Check<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<TestBackend, D>>) {
                let key = llamagen_key(&self.path.join("."));
                let expected = self.index[key.as_str()] as f32;
                let values: Vec<f32> = param.val().into_data().to_vec().unwrap();
                assert!(values.iter().all(|&v| v == expected), "{key}: expected all {expected}");
                self.seen += 1;
            }
        }
        let index = keys.iter().enumerate().map(|(i, (key, _))| (key.as_str(), i)).collect();
        let mut check = Check {
            index,
            path: Vec::new(),
            seen: 0,
        };
        model.visit(&mut check);
        assert_eq!(
            check.seen,
            keys.len() - IGNORED_KEYS.len(),
            "every weight of the state dict is a parameter"
        );
    }

    #[test]
    fn a_missing_key_is_named_as_llamagen_names_it() {
        let config = small_config();
        let keys = llamagen_state_dict(&config);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vq.safetensors");
        write_checkpoint(&path, &keys, &["decoder.mid.1.q.weight", "encoder.norm_out.weight"]);
        let message = load_llamagen::<TestBackend>(&config, &path, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("decoder.mid.1.q.weight") && message.contains("encoder.norm_out.weight"),
            "{message}"
        );
        assert!(message.contains("2 missing"), "{message}");
    }

    #[test]
    fn a_checkpoint_of_another_config_is_refused() {
        let keys = llamagen_state_dict(&small_config().with_res_blocks(3));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vq.safetensors");
        write_checkpoint(&path, &keys, &[]);
        let message = load_llamagen::<TestBackend>(&small_config(), &path, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(message.contains("have no place in this model"), "{message}");
    }
}
