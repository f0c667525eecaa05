//! # train — the burn-train learners (to be built)
//!
//! This crate will hold the training loops for the VQ tokenizer and the LM, generic over the autodiff backend:
//! optimiser and schedule, checkpoints with exact resume, staged training (the paper's resolution curriculum),
//! and run configs.
//!
//! It is empty today: the workspace foundation issue created it so that the layout of `DESIGN.md` holds from the
//! start.
