//! What the run pipeline and the shard encoders report as they go.

use std::path::PathBuf;

use crate::stage::StageName;
use crate::{LmEvent, TokenizerEvent, TrainingImages};

/// What the pipeline reports as it goes.
#[derive(Debug, Clone)]
pub enum PipelineEvent {
    /// A step begins, or is skipped because its output is up to date.
    Phase {
        /// The step: tokenizer, text tokenizer, code cache, lm.
        name: &'static str,
        /// Whether it is skipped (up to date).
        skipped: bool,
        /// What it does, in a few words.
        detail: String,
    },
    /// Progress of a long step that is not training (encoding codes).
    Progress {
        /// What is in progress.
        what: String,
        /// Items done.
        done: usize,
        /// Items in all.
        total: usize,
    },
    /// Tokenizer training.
    Tokenizer(TokenizerEvent),
    /// LM training.
    Lm(LmEvent),
    /// What loading a corpus found (loaded corpora only: Twemoji, folders), with the skipped files named.
    Data {
        /// The step that loaded it.
        step: &'static str,
        /// One line: images loaded of found, and the first skipped files with their reasons.
        summary: String,
    },
    /// `--restart-from` deleted these step directories before the run.
    Restarted {
        /// The first step deleted.
        from: StageName,
        /// The directories deleted (only those that existed).
        deleted: Vec<PathBuf>,
    },
}

/// Reports what loading a corpus found (nothing for scenes, which are rendered).
/// Returns the summary, for the step's record.
pub(crate) fn report_data(
    images: &TrainingImages,
    step: &'static str,
    on_event: &mut dyn FnMut(&PipelineEvent),
) -> Option<String> {
    let mut summary = images.report.as_ref()?.summary();
    if let Some(total) = images.sampled_from {
        summary += &format!("; a seeded sample of the shards' {total} samples (the step sees no more)");
    }
    on_event(&PipelineEvent::Data {
        step,
        summary: summary.clone(),
    });
    Some(summary)
}
