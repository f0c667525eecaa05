//! Renders the first scenes of a split into one grid image and prints their captions.
//!
//! `cargo run -p data --example scene_grid -- [train|valid|held-out] [resolution] [out.png]`

use data::scenes::{SceneCorpus, Split};
use image::{GenericImage, RgbImage};

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
    let (columns, rows) = (6u32, 4u32);
    let corpus = SceneCorpus::new(0, split, (columns * rows) as usize);
    let mut grid = RgbImage::new(columns * resolution, rows * resolution);
    for scene in corpus.scenes() {
        let i = scene.index as u32;
        grid.copy_from(&scene.render(resolution)?, (i % columns) * resolution, (i / columns) * resolution)?;
        println!("{:>2} [{}] {}", i, scene.spec.category().name(), scene.caption);
    }
    grid.save(&out)?;
    println!("wrote {out}");
    Ok(())
}
