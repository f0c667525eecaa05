//! `bench decode`: decoding the embedded Twemoji PNGs on one thread against rayon's pool.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::timing::{at_least_one, interleaved, median, ms};
use crate::EvalError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct DecodeBench {
    /// Output side in pixels.
    pub resolution: u32,
    /// Timed rounds of both variants (interleaved, after one warm-up round that pages the PNGs in).
    pub repeats: usize,
}

/// Both variants, measured.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeReport {
    /// Images decoded per load.
    pub images: usize,
    /// rayon's threads.
    pub threads: usize,
    /// Median load on one thread, ms.
    pub serial_ms: f64,
    /// Median load on rayon's pool, ms.
    pub parallel_ms: f64,
}

impl DecodeBench {
    /// Loads the corpus on rayon's pool and on a pool of one thread, in turn.
    ///
    /// # Errors
    /// A corpus that does not load whole; [`EvalError::Config`] when nothing would be timed.
    pub fn run(&self) -> Result<DecodeReport, EvalError> {
        at_least_one("repeats", self.repeats)?;
        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| EvalError::Config(format!("a one-thread pool: {e}")))?;
        let mut images = 0;
        let mut load = || -> Result<Duration, EvalError> {
            let start = Instant::now();
            let (train, valid, report) = token_shuffle_data::twemoji::load_twemoji(self.resolution, 0.05)?;
            if !report.skipped.is_empty() {
                return Err(EvalError::Config(report.summary()));
            }
            images = train.len() + valid.len();
            Ok(start.elapsed())
        };
        let times = interleaved(2, 1, self.repeats, |case| match case {
            0 => load(),
            _ => single.install(&mut load),
        })?;
        Ok(DecodeReport {
            images,
            threads: rayon::current_num_threads(),
            parallel_ms: ms(median(&times[0])),
            serial_ms: ms(median(&times[1])),
        })
    }
}

impl DecodeReport {
    /// The table as `bench decode` prints it, with the speed-up.
    pub fn table(&self) -> String {
        let mut out = format!("{:<24} {:>10} {:>10}\n", "variant", "median ms", "images/s");
        for (name, t) in [
            ("1 thread".to_string(), self.serial_ms),
            (format!("rayon, {} threads", self.threads), self.parallel_ms),
        ] {
            out += &format!("{name:<24} {t:>10.1} {:>10.0}\n", self.images as f64 / (t / 1e3));
        }
        out + &format!("speed-up: {:.2}×\n", self.serial_ms / self.parallel_ms)
    }
}
