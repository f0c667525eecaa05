//! `--tui`: burn-train's live dashboard (its terminal renderer) fed by our own training loops' events.
//!
//! burn-train's `Learner` is not used (it checkpoints per epoch and cannot resume bit for bit); its renderer is a
//! plain consumer of metric states, so the pipeline's events are translated into those: each metric is registered
//! before its first value (the renderer looks every value's definition up), training losses go to the train
//! split, validation to the valid split, and the latest event line is a text metric. The renderer's thread polls
//! without sleeping and so keeps a core busy: the dashboard is opt-in.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Result, bail};
use burn::data::dataloader::Progress;
use burn_train::Interrupter;
use burn_train::metric::{
    MetricAttributes, MetricDefinition, MetricEntry, MetricId, NumericAttributes, NumericEntry, SerializedEntry,
};
use burn_train::renderer::tui::TuiMetricsRendererWrapper;
use burn_train::renderer::{MetricState, MetricsRenderer, TrainingProgress};
use token_shuffle_train::{LmEvent, PipelineEvent, RunConfig, TokenizerEvent};

/// Which split a value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    Train,
    Valid,
}

/// The dashboard of one pipeline run, over any burn-train renderer (the TUI in use, a recording one in tests).
pub struct Dashboard<R: MetricsRenderer> {
    renderer: R,
    interrupter: Interrupter,
    registered: HashSet<String>,
    tokenizer_steps: usize,
    lm_steps: usize,
    /// The phase in progress: its name and steps.
    phase: (&'static str, usize),
}

impl Dashboard<TuiMetricsRendererWrapper> {
    /// Opens burn-train's TUI over the whole terminal.
    ///
    /// # Errors
    /// When standard output is not a terminal (the TUI draws on it).
    pub fn open(config: &RunConfig) -> Result<Self> {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            bail!(
                "--tui draws burn-train's dashboard on the terminal, but standard output is not one: run it in a \
                 terminal, or leave --tui out (progress is then printed as lines)"
            );
        }
        let interrupter = Interrupter::new();
        Ok(Self::new(
            TuiMetricsRendererWrapper::new(interrupter.clone(), None),
            interrupter,
            config,
        ))
    }
}

impl<R: MetricsRenderer> Dashboard<R> {
    fn new(renderer: R, interrupter: Interrupter, config: &RunConfig) -> Self {
        Self {
            renderer,
            interrupter,
            registered: HashSet::new(),
            tokenizer_steps: config.tokenizer.steps,
            lm_steps: config.lm.total_steps(),
            phase: ("", 0),
        }
    }

    /// Whether the user asked the dashboard to stop the training (`q`, then `s`).
    pub fn stop_requested(&self) -> bool {
        self.interrupter.should_stop()
    }

    /// Shows one pipeline event; `line` is the event as the plain log would print it (the status text).
    pub fn show(&mut self, event: &PipelineEvent, line: &str) {
        match event {
            PipelineEvent::Phase {
                name, skipped: false, ..
            } => {
                self.phase = match *name {
                    "tokenizer" => ("tokenizer", self.tokenizer_steps),
                    "lm" => ("lm", self.lm_steps),
                    other => (other, 0),
                };
            }
            PipelineEvent::Tokenizer(TokenizerEvent::Step(s)) => {
                self.numeric(
                    Split::Train,
                    "tokenizer pixel loss",
                    None,
                    false,
                    s.reconstruction as f64,
                );
                self.numeric(Split::Train, "tokenizer codebook loss", None, false, s.codebook as f64);
                self.numeric(
                    Split::Train,
                    "tokenizer images/s",
                    Some("img/s"),
                    true,
                    s.images_per_second as f64,
                );
                self.progress(Split::Train, s.step);
            }
            PipelineEvent::Tokenizer(TokenizerEvent::Validation(r)) => {
                self.numeric(Split::Valid, "tokenizer PSNR", Some("dB"), true, r.psnr as f64);
                self.progress(Split::Valid, r.step);
            }
            PipelineEvent::Lm(LmEvent::Step(s)) => {
                self.numeric(
                    Split::Train,
                    "lm image cross-entropy",
                    Some("nats"),
                    false,
                    s.image_ce as f64,
                );
                self.numeric(Split::Train, "lm learning rate", None, false, s.learning_rate);
                self.numeric(
                    Split::Train,
                    "lm images/s",
                    Some("img/s"),
                    true,
                    s.images_per_second as f64,
                );
                self.progress(Split::Train, s.step);
            }
            PipelineEvent::Lm(LmEvent::Validation(v)) => {
                self.numeric(
                    Split::Valid,
                    "lm image cross-entropy",
                    Some("nats"),
                    false,
                    v.image_ce as f64,
                );
                self.progress(Split::Valid, v.step);
            }
            PipelineEvent::Progress { done, total, .. } => {
                self.phase.1 = *total;
                self.progress(Split::Train, *done);
            }
            _ => {}
        }
        self.text("status", line);
    }

    fn register(&mut self, name: &str, attributes: MetricAttributes) -> MetricId {
        let id = MetricId::new(Arc::new(name.to_string()));
        if self.registered.insert(name.to_string()) {
            self.renderer.register_metric(MetricDefinition {
                metric_id: id.clone(),
                name: name.to_string(),
                description: None,
                attributes,
            });
        }
        id
    }

    fn numeric(&mut self, split: Split, name: &str, unit: Option<&str>, higher_is_better: bool, value: f64) {
        let attributes = NumericAttributes {
            unit: unit.map(str::to_string),
            higher_is_better,
        };
        let id = self.register(name, attributes.into());
        let formatted = match unit {
            Some(unit) => format!("{value:.4} {unit}"),
            None => format!("{value:.4e}"),
        };
        let entry = MetricEntry::new(
            id,
            SerializedEntry {
                formatted,
                serialized: value.to_string(),
            },
        );
        let state = MetricState::Numeric(entry, NumericEntry::Value(value));
        match split {
            Split::Train => self.renderer.update_train(state),
            Split::Valid => self.renderer.update_valid(state),
        }
    }

    fn text(&mut self, name: &str, value: &str) {
        let id = self.register(name, MetricAttributes::None);
        let entry = MetricEntry::new(
            id,
            SerializedEntry {
                formatted: value.to_string(),
                serialized: value.to_string(),
            },
        );
        self.renderer.update_train(MetricState::Generic(entry));
    }

    fn progress(&mut self, split: Split, done: usize) {
        let progress = Progress {
            items_processed: done,
            items_total: self.phase.1.max(done),
        };
        let item = TrainingProgress {
            progress: Some(progress.clone()),
            global_progress: progress,
            iteration: Some(done),
        };
        match split {
            Split::Train => self.renderer.render_train(item, Vec::new()),
            Split::Valid => self.renderer.render_valid(item, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_train::renderer::{
        EvaluationName, EvaluationProgress, MetricsRendererEvaluation, MetricsRendererTraining, ProgressType,
    };
    use token_shuffle_train::{LmStep, LmValidation};

    /// Records what a renderer is told, and checks what burn-train's TUI relies on: every value's metric was
    /// registered before it (the TUI looks its definition up and panics otherwise).
    #[derive(Default)]
    struct Recording {
        registered: Vec<String>,
        values: Vec<(&'static str, String, String)>,
        progress: Vec<(&'static str, usize, usize)>,
    }

    impl Recording {
        fn value(&mut self, split: &'static str, state: MetricState) {
            let (MetricState::Generic(entry) | MetricState::Numeric(entry, _)) = state;
            let name = self
                .registered
                .iter()
                .find(|n| MetricId::new(Arc::new(n.to_string())) == entry.metric_id)
                .unwrap_or_else(|| panic!("{:?} updated before it was registered", entry.metric_id))
                .clone();
            self.values.push((split, name, entry.serialized_entry.formatted));
        }
    }

    impl MetricsRendererTraining for Recording {
        fn update_train(&mut self, state: MetricState) {
            self.value("train", state);
        }
        fn update_valid(&mut self, state: MetricState) {
            self.value("valid", state);
        }
        fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
            self.progress.push((
                "train",
                item.global_progress.items_processed,
                item.global_progress.items_total,
            ));
        }
        fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
            self.progress.push((
                "valid",
                item.global_progress.items_processed,
                item.global_progress.items_total,
            ));
        }
    }

    impl MetricsRendererEvaluation for Recording {
        fn update_test(&mut self, _: EvaluationName, state: MetricState) {
            self.value("test", state);
        }
        fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
    }

    impl MetricsRenderer for Recording {
        fn manual_close(&mut self) {}
        fn register_metric(&mut self, definition: MetricDefinition) {
            assert!(
                !self.registered.contains(&definition.name),
                "{} registered twice",
                definition.name
            );
            self.registered.push(definition.name);
        }
    }

    #[test]
    fn pipeline_events_become_registered_metrics_with_progress() {
        let config = RunConfig::demo();
        let mut dashboard = Dashboard::new(Recording::default(), Interrupter::new(), &config);
        let lm_steps = config.lm.total_steps();
        let step = |step: usize, image_ce: f32| LmStep {
            step,
            stage: 0,
            image_ce,
            z_loss: 0.0,
            text_ce: None,
            learning_rate: 1e-3,
            tokens_per_second: 100.0,
            images_per_second: 10.0,
        };
        let events = [
            PipelineEvent::Phase {
                name: "lm",
                skipped: false,
                detail: String::new(),
            },
            PipelineEvent::Lm(LmEvent::Step(step(10, 5.5))),
            PipelineEvent::Lm(LmEvent::Step(step(20, 5.0))),
            PipelineEvent::Lm(LmEvent::Validation(LmValidation {
                step: 20,
                image_ce: 5.25,
                perplexity: 5.25f32.exp(),
            })),
        ];
        for (i, event) in events.iter().enumerate() {
            dashboard.show(event, &format!("line {i}"));
        }
        assert!(!dashboard.stop_requested());
        let recorded = &dashboard.renderer;
        let ce: Vec<_> = recorded
            .values
            .iter()
            .filter(|(_, name, _)| name == "lm image cross-entropy")
            .map(|(split, _, value)| (*split, value.as_str()))
            .collect();
        assert_eq!(
            ce,
            [
                ("train", "5.5000 nats"),
                ("train", "5.0000 nats"),
                ("valid", "5.2500 nats")
            ]
        );
        assert_eq!(
            recorded.progress,
            [
                ("train", 10, lm_steps),
                ("train", 20, lm_steps),
                ("valid", 20, lm_steps)
            ]
        );
        let status: Vec<_> = recorded.values.iter().filter(|(_, n, _)| n == "status").collect();
        assert_eq!(status.len(), 4, "every event updates the status line");
        assert_eq!(status[3].2, "line 3");
        // The user's "stop" reaches the training loop.
        dashboard.interrupter.stop(None);
        assert!(dashboard.stop_requested());
    }
}
