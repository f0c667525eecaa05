//! # data — datasets, the synthetic scene corpus, the text tokenizer and code caches (to be built)
//!
//! This crate will hold image folders with captions, the seeded synthetic scene generator (the embedded default
//! corpus), the Twemoji corpus, the BPE text tokenizer, and the cache of VQ codes and caption ids that LM
//! training reads.
//!
//! It is empty today: the workspace foundation issue created it so that the layout of `DESIGN.md` holds from the
//! start.
