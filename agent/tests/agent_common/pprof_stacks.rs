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

/// Per stack the summed values of a received Pyroscope series' samples (the JSON of
/// fixtures/pyroscope's receiver and of `goheap-otelcol pyroscope-ingest`).
pub fn received_stacks(u: &serde_json::Value) -> BTreeMap<Vec<String>, Vec<i64>> {
    let mut got: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
    for s in u["samples"].as_array().unwrap() {
        let stack: Vec<String> = s["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        let e = got.entry(stack).or_insert_with(|| vec![0, 0]);
        for k in 0..2 {
            e[k] += s["values"][k].as_i64().unwrap();
        }
    }
    got
}

/// Asserts two per-stack value maps have the same stacks and values within ±1.
pub fn assert_stacks_close(
    want: &BTreeMap<Vec<String>, Vec<i64>>,
    got: &BTreeMap<Vec<String>, Vec<i64>>,
    what: &str,
) {
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (stack, v) in want {
        for k in 0..2 {
            assert!(
                (v[k] - got[stack][k]).abs() <= 1,
                "{what}: {stack:?}: expected {v:?}, received {:?}",
                got[stack]
            );
        }
    }
}
