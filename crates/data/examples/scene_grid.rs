//! Renders the first scenes of a split into one grid image and prints their captions.
//!
//! `cargo run -p token-shuffle-data --example scene_grid -- [train|valid|held-out] [resolution] [out.png]`

use token_shuffle_data::imaging::tile;
use token_shuffle_data::scenes::{SceneCorpus, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = match args.first().map(String::as_str).unwrap_or("train") {
        "train" => Split::Train,
        "valid" => Split::Valid,
        "held-out" => Split::HeldOut,
        other => return Err(format!("unknown split {other:?}: use train, valid or held-out").into()),
    };
    let resolution: u32 = args.get(1).map(|r| r.parse()).transpose()?.unwrap_or(128);
    let out = args.get(2).cloned().unwrap_or_else(|| "scenes.png".into());
    let corpus = SceneCorpus::new(0, split, 24);
    let mut images = Vec::new();
    for scene in corpus.scenes() {
        images.push(scene.render(resolution)?);
        println!(
            "{:>2} [{}] {}",
            scene.index,
            scene.spec.category().name(),
            scene.caption
        );
    }
    tile(&images, 6).save(&out)?;
    println!("wrote {out}");
    Ok(())
}
