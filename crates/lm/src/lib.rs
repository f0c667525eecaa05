//! # lm — the multimodal LLM with Token-Shuffle (to be built)
//!
//! This crate will hold the Llama-style decoder over one vocabulary of text tokens and image codes, with the
//! `token-shuffle` crate's `TokenShuffle` / `TokenUnshuffle` wired around it so that each image position predicts the
//! s² codes of the next window; KV-cache generation, classifier-free guidance and its schedules, and sampling.
//!
//! It is empty today: the workspace foundation issue created it so that the layout of `DESIGN.md` holds from the
//! start.
