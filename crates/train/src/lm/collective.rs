//! A step's gradients and losses summed over the ranks of a multi-node job, and the check that the ranks start
//! alike. The gradients travel as one flattened host buffer in module order: burn's `ParamId`s are random per
//! process, so sorting them (as `GradientsParams::all_reduce` does) would add up different parameters.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use token_shuffle_distributed::Cluster;
use token_shuffle_lm::TokenShuffleLm;

use super::gradients::Losses;

/// Collects a module's gradients in visiting order: each parameter's values (zeros where it has none) and
/// whether it has one.
struct Flatten<'a> {
    grads: &'a GradientsParams,
    values: Vec<f32>,
    present: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(grad) => {
                let data = grad.into_data().convert::<f32>();
                self.values
                    .extend_from_slice(data.as_slice::<f32>().expect("converted to f32"));
                self.present.push(1.0);
            }
            None => {
                let len = param.val().shape().num_elements();
                self.values.resize(self.values.len() + len, 0.0);
                self.present.push(0.0);
            }
        }
    }
}

/// Registers the summed gradients in visiting order, for the parameters some rank had a gradient of.
struct Unflatten<'a, I: Backend> {
    sum: &'a [f32],
    present: &'a [f32],
    offset: usize,
    index: usize,
    grads: GradientsParams,
    device: I::Device,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let shape = param.val().shape();
        let len = shape.num_elements();
        if self.present[self.index] > 0.0 {
            let values = self.sum[self.offset..self.offset + len].to_vec();
            let grad = Tensor::<B::InnerBackend, D>::from_data(TensorData::new(values, shape), &self.device);
            self.grads.register::<B::InnerBackend, D>(param.id, grad);
        }
        self.offset += len;
        self.index += 1;
    }
}

/// The four losses as the buffer carries them.
fn loss_values(losses: &Losses) -> [f32; 4] {
    [
        losses.image_ce,
        losses.z_loss,
        losses.text_ce.unwrap_or(0.0),
        losses.total,
    ]
}

/// This rank's share of a step — its micro-batches' gradients (each already divided by the step's micro-batch
/// count) and losses — summed with every other rank's: the step's gradients and mean losses. With one
/// micro-batch per rank and two ranks, every element is `a + b`, what one process accumulating both computes.
pub(super) fn sum_over_ranks<B: AutodiffBackend>(
    cluster: &Cluster,
    lm: &TokenShuffleLm<B>,
    grads: &GradientsParams,
    losses: Losses,
    device: &B::Device,
) -> Result<(GradientsParams, Losses), token_shuffle_distributed::ClusterError> {
    let mut flat = Flatten {
        grads,
        values: Vec::new(),
        present: Vec::new(),
    };
    lm.visit(&mut flat);
    let (values, params) = (flat.values.len(), flat.present.len());
    let mut buffer = flat.values;
    buffer.extend(flat.present);
    buffer.extend(loss_values(&losses));
    let sum = cluster.all_reduce_sum(buffer, "the sum of a step's gradients")?;
    let (sum, rest) = sum.split_at(values);
    let (present, total) = rest.split_at(params);
    let mut unflatten = Unflatten::<B::InnerBackend> {
        sum,
        present,
        offset: 0,
        index: 0,
        grads: GradientsParams::new(),
        device: device.clone(),
    };
    lm.visit(&mut unflatten);
    let summed = Losses {
        image_ce: total[0],
        z_loss: total[1],
        text_ce: losses.text_ce.map(|_| total[2]),
        total: total[3],
    };
    Ok((unflatten.grads, summed))
}

/// FNV-1a over every float parameter's values in visiting order, as hex: equal on two ranks exactly when their
/// weights are.
struct WeightsHash(u64);

impl<B: Backend> ModuleVisitor<B> for WeightsHash {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let data = param.val().into_data().convert::<f32>();
        for value in data.as_slice::<f32>().expect("converted to f32") {
            for byte in value.to_le_bytes() {
                self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}

/// The hash of `lm`'s weights (see [`WeightsHash`]).
pub(super) fn weights_hash<B: Backend>(lm: &TokenShuffleLm<B>) -> String {
    let mut hash = WeightsHash(0xcbf2_9ce4_8422_2325);
    lm.visit(&mut hash);
    format!("{:016x}", hash.0)
}

/// A JSON value's leaves as `(path, value)` pairs: `lm.stages[0].steps`, `"100"`.
pub(super) fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                leaves(&format!("{prefix}.{key}"), field, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(&format!("{prefix}[{i}]"), item, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use burn::module::ParamId;
    use token_shuffle_lm::LmArchitecture;
    use token_shuffle_test_support::TestBackend;

    use super::*;

    /// Each float parameter's id and shape, in visiting order.
    struct Ids(Vec<(ParamId, Vec<usize>)>);

    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push((param.id, param.val().dims().to_vec()));
        }
    }

    fn ids(lm: &TokenShuffleLm<TestBackend>) -> Vec<(ParamId, Vec<usize>)> {
        let mut ids = Ids(Vec::new());
        lm.visit(&mut ids);
        ids.0
    }

    #[test]
    fn two_processes_building_one_model_agree_in_module_order_but_not_in_param_id_order() {
        let _turn = crate::tests::one_at_a_time();
        let device = Default::default();
        let build = || {
            TestBackend::seed(&device, 7);
            let lm = LmArchitecture::tiny()
                .into_config([8, 8], 2)
                .init::<TestBackend>(&device)
                .unwrap();
            // Drawn now (burn draws a parameter when first read), as the trainer's `build` does.
            weights_hash(&lm);
            lm
        };
        // What two ranks hold: the same weights, each with ParamIds drawn at random by its own process.
        let (a, b) = (build(), build());
        assert_eq!(weights_hash(&a), weights_hash(&b), "same seed, same weights");
        let shapes = |ids: &[(ParamId, Vec<usize>)]| ids.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>();
        let by_id = |mut ids: Vec<(ParamId, Vec<usize>)>| {
            ids.sort_by_key(|(id, _)| id.val());
            shapes(&ids)
        };
        let (ids_a, ids_b) = (ids(&a), ids(&b));
        assert_eq!(shapes(&ids_a), shapes(&ids_b), "module order is the same on every rank");
        assert_ne!(
            by_id(ids_a),
            by_id(ids_b),
            "sorted by ParamId (GradientsParams::all_reduce's order) the ranks would add different parameters"
        );
    }

    #[test]
    fn a_rank_whose_weights_differ_in_one_value_or_in_order_is_caught_by_the_hash() {
        let _turn = crate::tests::one_at_a_time();
        let device = Default::default();
        TestBackend::seed(&device, 7);
        let lm = LmArchitecture::tiny()
            .into_config([8, 8], 2)
            .init::<TestBackend>(&device)
            .unwrap();
        let mut bytes = WeightsHash(0xcbf2_9ce4_8422_2325);
        lm.visit(&mut bytes);
        assert_eq!(format!("{:016x}", bytes.0), weights_hash(&lm));
        // The same parameters visited in reverse order (a rank that flattened another way) hash differently.
        let mut params = Vec::new();
        struct Values<'a>(&'a mut Vec<Vec<f32>>);
        impl<B: Backend> ModuleVisitor<B> for Values<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.push(param.val().into_data().to_vec().unwrap());
            }
        }
        lm.visit(&mut Values(&mut params));
        let hash = |order: &mut dyn Iterator<Item = &Vec<f32>>| {
            let mut h = 0xcbf2_9ce4_8422_2325_u64;
            for value in order.flatten() {
                for byte in value.to_le_bytes() {
                    h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            format!("{h:016x}")
        };
        assert_eq!(hash(&mut params.iter()), weights_hash(&lm));
        assert_ne!(hash(&mut params.iter().rev()), weights_hash(&lm));
        let mut changed = params.clone();
        changed[0][0] += 1.0;
        assert_ne!(hash(&mut changed.iter()), weights_hash(&lm));
    }

    #[test]
    fn leaves_name_each_field_by_its_path() {
        let mut out = Vec::new();
        leaves(
            "lm",
            &serde_json::json!({"a": {"b": [1, {"c": "x"}]}, "d": null}),
            &mut out,
        );
        let expected = [("lm.a.b[0]", "1"), ("lm.a.b[1].c", "\"x\""), ("lm.d", "null")];
        let expected: Vec<_> = expected.iter().map(|(p, v)| (p.to_string(), v.to_string())).collect();
        assert_eq!(out, expected);
    }
}
