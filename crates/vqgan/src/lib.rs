//! # vqgan — the VQ image tokenizer (to be built)
//!
//! This crate will hold the VQGAN image tokenizer in the taming / LlamaGen design: a convolutional encoder of
//! ResNet blocks with downsampling stages (factor 8 or 16), a quantizer over an l2-normalised codebook with
//! straight-through gradients, the mirrored decoder, and its losses; `encode(images [B,3,H,W]) -> codes
//! [B, H/f, W/f]` and `decode(codes) -> images`, and a loader for LlamaGen's published VQ-16 checkpoint.
//!
//! It is empty today: the workspace foundation issue created it so that the layout of `DESIGN.md` holds from the
//! start. The LM only ever sees codes from this crate.
