//! A step's gradients: each micro-batch's forward and backward pass, on one device or shared among several.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use token_shuffle_lm::TokenShuffleLm;

use super::batches::HostBatch;
use crate::TrainError;

/// The losses of one micro-batch, or a step's mean over its micro-batches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Losses {
    /// Image-code cross-entropy (nats per code).
    pub(super) image_ce: f32,
    /// z-loss (unweighted).
    pub(super) z_loss: f32,
    /// Text cross-entropy, when the LM trains its text.
    pub(super) text_ce: Option<f32>,
    /// The weighted sum that is differentiated.
    pub(super) total: f32,
}

impl Losses {
    /// The first loss that is NaN or infinite, named as [`TrainError::NonFiniteLoss`] names it.
    pub(super) fn non_finite(&self) -> Option<(&'static str, f32)> {
        [
            ("image cross-entropy", self.image_ce),
            ("z-loss", self.z_loss),
            ("text cross-entropy", self.text_ce.unwrap_or(0.0)),
            ("total", self.total),
        ]
        .into_iter()
        .find(|(_, value)| !value.is_finite())
    }

    /// Adds `micro`'s losses divided by `micro_batches` (a step's mean, one micro-batch at a time).
    pub(super) fn add_share(&mut self, micro: &Losses, micro_batches: usize) {
        let n = micro_batches as f32;
        self.image_ce += micro.image_ce / n;
        self.z_loss += micro.z_loss / n;
        self.text_ce = micro.text_ce.map(|text| self.text_ce.unwrap_or(0.0) + text / n);
        self.total += micro.total / n;
    }
}

/// What one micro-batch contributes to a step: its gradients (on the main device, already divided by the number
/// of micro-batches) and its losses.
pub(super) struct MicroGradients {
    pub(super) grads: GradientsParams,
    pub(super) losses: Losses,
}

/// burn-autodiff 0.21 keeps the graphs of every thread in one process-wide locator, and each backward pass ends by
/// freeing, in *all* graphs, the nodes it judges orphaned (`GraphCleaner::cleanup_orphaned_entries`): a node of
/// another thread's graph that is being built at that moment can be among them, and that thread's backward then
/// misses its gradient terms. The replicas test failed so (weights off by 1e-3) with backward passes alone taking
/// turns, so each replica's whole forward + backward takes its turn (docs/BUILDING.md).
static AUTODIFF_GRAPHS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The gradients of `lm`'s loss on `batch`, computed on `device` and moved to `main`.
fn micro_gradients<B: AutodiffBackend>(
    lm: &TokenShuffleLm<B>,
    batch: &HostBatch,
    micro_batches: usize,
    device: &B::Device,
    main: &B::Device,
) -> Result<MicroGradients, TrainError> {
    let turn = AUTODIFF_GRAPHS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let codes = Tensor::from_data(TensorData::new(batch.codes.clone(), batch.shape), device);
    let loss = lm.loss(lm.prompt_ids(&batch.texts, device), codes)?;
    let read = |t: &Tensor<B, 1>| -> f32 { t.clone().into_scalar().elem() };
    let losses = Losses {
        image_ce: read(&loss.image_ce),
        z_loss: read(&loss.z_loss),
        text_ce: loss.text_ce.as_ref().map(read),
        total: read(&loss.total),
    };
    let grads = GradientsParams::from_grads((loss.total / micro_batches as f32).backward(), lm);
    drop(turn);
    Ok(MicroGradients {
        grads: grads.to_device(main, lm),
        losses,
    })
}

/// The gradients of `batches` (this process's micro-batches of a step of `micro_batches`, each gradient divided by
/// that), in micro-batch order. With one device they are computed in turn
/// on it; with several, micro-batch `i` goes to device `i mod devices.len()`, each device in its own thread on a
/// replica of `lm` forked to it, and the gradients come back to `devices[0]` (burn-train's `MultiDevice` strategy,
/// done by hand so that the sum the caller makes stays in micro-batch order: the step is then the same as
/// gradient accumulation on one device, whatever the number of devices).
pub(super) fn step_gradients<B: AutodiffBackend>(
    lm: &TokenShuffleLm<B>,
    batches: &[HostBatch],
    micro_batches: usize,
    devices: &[B::Device],
) -> Vec<Result<MicroGradients, TrainError>> {
    let main = &devices[0];
    if devices.len() == 1 {
        return batches
            .iter()
            .map(|batch| micro_gradients(lm, batch, micro_batches, main, main))
            .collect();
    }
    let mut results: Vec<(usize, Result<MicroGradients, TrainError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(d, device)| {
                let replica = lm.clone().fork(device);
                scope.spawn(move || {
                    (d..batches.len())
                        .step_by(devices.len())
                        .map(|i| (i, micro_gradients(&replica, &batches[i], micro_batches, device, main)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
