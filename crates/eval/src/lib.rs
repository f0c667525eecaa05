//! # eval — metrics and benchmarks (to be built)
//!
//! This crate will hold the compositional benchmark over synthetic scenes (GenEval's categories) with its
//! model-independent detector, reconstruction metrics (PSNR, SSIM, codebook usage), the s = 1 / 2 / 4 speed bench,
//! and the ablation runner.
//!
//! It is empty today: the workspace foundation issue created it so that the layout of `DESIGN.md` holds from the
//! start.
