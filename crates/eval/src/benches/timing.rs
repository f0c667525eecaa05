//! The timing helpers every bench shares.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;

use crate::EvalError;

/// The median of `times` (the upper one of an even count).
///
/// # Panics
/// When `times` is empty.
pub fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Runs `case(i)` for every case `i` in turn, `warmup + repeats` rounds (so that a noisy machine slows all cases
/// alike), and returns each case's timed durations (the warm-up rounds dropped). `case` returns the time it
/// measured, so that setup can stay out of it.
///
/// # Errors
/// The first error of a case.
pub fn interleaved<E>(
    cases: usize,
    warmup: usize,
    repeats: usize,
    mut case: impl FnMut(usize) -> Result<Duration, E>,
) -> Result<Vec<Vec<Duration>>, E> {
    let mut times = vec![Vec::with_capacity(repeats); cases];
    for round in 0..warmup + repeats {
        for (i, timed) in times.iter_mut().enumerate() {
            let elapsed = case(i)?;
            if round >= warmup {
                timed.push(elapsed);
            }
        }
    }
    Ok(times)
}

/// The time `work` takes until the backend has finished it (its output is dropped after the clock stops).
///
/// # Errors
/// [`EvalError::Backend`] when the backend fails to synchronise.
pub fn synced<B: Backend, T>(device: &B::Device, work: impl FnOnce() -> T) -> Result<Duration, EvalError> {
    let start = Instant::now();
    let output = work();
    sync::<B>(device)?;
    let elapsed = start.elapsed();
    drop(output);
    Ok(elapsed)
}

/// Waits for the backend's queued work.
///
/// # Errors
/// [`EvalError::Backend`] when it fails.
pub fn sync<B: Backend>(device: &B::Device) -> Result<(), EvalError> {
    B::sync(device).map_err(|e| EvalError::Backend(format!("sync failed: {e:?}")))
}

/// Milliseconds of a duration.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Checks that a bench has something to time.
///
/// # Errors
/// [`EvalError::Config`] naming the field.
pub fn at_least_one(field: &str, value: usize) -> Result<(), EvalError> {
    if value == 0 {
        return Err(EvalError::Config(format!("{field} must be at least 1")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_take_turns_and_warm_up_rounds_are_dropped() {
        let mut order = Vec::new();
        let times = interleaved::<()>(2, 1, 3, |i| {
            order.push(i);
            Ok(Duration::from_millis(order.len() as u64))
        })
        .unwrap();
        assert_eq!(order, [0, 1, 0, 1, 0, 1, 0, 1]);
        let ms = |v: &[Duration]| v.iter().map(|d| d.as_millis()).collect::<Vec<_>>();
        assert_eq!(ms(&times[0]), [3, 5, 7]);
        assert_eq!(ms(&times[1]), [4, 6, 8]);
        assert_eq!(median(&[3, 1, 2].map(Duration::from_millis)), Duration::from_millis(2));
        assert!(
            at_least_one("repeats", 0)
                .unwrap_err()
                .to_string()
                .contains("repeats must be at least 1")
        );
    }
}
