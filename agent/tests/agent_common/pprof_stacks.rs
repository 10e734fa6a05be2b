//! Reading pprof profiles back in the push tests: a gzipped file, and per-stack totals to compare
//! what a receiver got with goheap's own profile.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use pprof_proto::Profile;

/// Per stack (function names, leaf first) the values of the sample types named, from a pprof profile.
pub fn pprof_stacks(p: &Profile, types: &[&str]) -> BTreeMap<Vec<String>, Vec<i64>> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let cols: Vec<usize> = types
        .iter()
        .map(|t| {
            p.sample_type
                .iter()
                .position(|st| s(st.r#type) == *t)
                .unwrap_or_else(|| panic!("no sample type {t}"))
        })
        .collect();
    let funcs: BTreeMap<u64, String> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: BTreeMap<u64, Vec<String>> = p
        .location
        .iter()
        .map(|l| {
            (
                l.id,
                l.line
                    .iter()
                    .map(|ln| funcs.get(&ln.function_id).cloned().unwrap_or_default())
                    .collect(),
            )
        })
        .collect();
    let mut out: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
    for smp in &p.sample {
        let stack: Vec<String> = smp
            .location_id
            .iter()
            .flat_map(|id| locs.get(id).cloned().unwrap_or_default())
            .collect();
        let e = out.entry(stack).or_insert_with(|| vec![0; cols.len()]);
        for (k, &c) in cols.iter().enumerate() {
            e[k] += smp.value[c];
        }
    }
    out.retain(|_, v| v.iter().any(|&x| x != 0));
    out
}

pub fn read_pprof(path: &Path) -> Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    <Profile as prost::Message>::decode(raw.as_slice()).unwrap()
}
