//! Writes the seed corpus of every target under `corpus/<target>/` (run from `agent/fuzz`).
fn main() {
    let out = std::path::Path::new("corpus");
    for (target, seeds) in goheap_fuzz::seeds::all() {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s).expect("write seed");
        }
        println!("{target}: {} seeds", seeds.len());
    }
}
