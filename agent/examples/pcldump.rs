fn main() {
    let p = std::env::args().nth(1).unwrap();
    let d = std::fs::read(p).unwrap();
    let t = goheap::pclntab::Pclntab::parse(&d).unwrap();
    println!(
        "ver {:?} text {:#x} md {:#x} gofunc {:#x} n {} owned {}",
        t.go_version(),
        t.text_start(),
        t.moduledata_addr(),
        t.gofunc_addr(),
        t.num_funcs(),
        t.owned_bytes()
    );
    for f in t.funcs().take(5) {
        println!("{:?}", f);
    }
}
