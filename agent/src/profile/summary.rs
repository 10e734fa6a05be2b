//! Summaries of a heap profile for people: totals and the top allocating functions.

use std::collections::HashMap;

use pprof_proto::Profile;

use crate::profile::oneshot::ProfileOutcome;

/// Totals and top functions of a heap profile, for the CLI summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileSummary {
    pub alloc_objects: i64,
    pub alloc_bytes: i64,
    pub inuse_objects: i64,
    pub inuse_bytes: i64,
    /// (function, flat alloc_space bytes), largest first.
    pub top_alloc: Vec<(String, i64)>,
}

/// Totals and flat alloc_space per leaf location, accumulated sample by sample from ids alone
/// (location ids of the built profile); names are looked up only for the top functions, in
/// [`SummaryBuilder::finish`].
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    totals: [i64; 4],
    /// Leaf location id -> flat alloc_space bytes.
    flat: HashMap<u64, i64>,
}

impl SummaryBuilder {
    /// Adds one sample: its values (alloc_objects, alloc_space, inuse_objects, inuse_space; a
    /// sample with fewer is ignored) and the id of its leaf location, if it has one.
    pub fn add(&mut self, values: &[i64], leaf: Option<u64>) {
        let Some(v) = values.get(..4) else {
            return;
        };
        for (t, x) in self.totals.iter_mut().zip(v) {
            *t = t.saturating_add(*x);
        }
        if let Some(leaf) = leaf {
            let e = self.flat.entry(leaf).or_default();
            *e = e.saturating_add(v[1]);
        }
    }

    /// The summary, with the `top` leaf functions by alloc_space resolved through `tables` (the
    /// profile the leaf ids belong to; only its functions, locations and strings are read). A leaf
    /// is its location's first (innermost) line's function, or the address as `0x…` for a
    /// location without lines, as pprof shows it; leaves whose ids do not resolve are left out of
    /// the top list.
    pub fn finish(self, tables: &Profile, top: usize) -> ProfileSummary {
        let [alloc_objects, alloc_bytes, inuse_objects, inuse_bytes] = self.totals;
        let mut s = ProfileSummary {
            alloc_objects,
            alloc_bytes,
            inuse_objects,
            inuse_bytes,
            top_alloc: Vec::new(),
        };
        if self.flat.is_empty() {
            return s;
        }
        let location = by_id(&tables.location, |l| l.id);
        let function = by_id(&tables.function, |f| f.id);
        let mut by_name: HashMap<std::borrow::Cow<'_, str>, i64> = HashMap::new();
        for (leaf, bytes) in self.flat {
            let Some(l) = location(leaf) else {
                continue;
            };
            let name = match l.line.first() {
                None => format!("{:#x}", l.address).into(),
                Some(line) => match function(line.function_id).map(|f| tables.string(f.name)) {
                    Some(Ok(name)) => name.into(),
                    _ => continue,
                },
            };
            let e = by_name.entry(name).or_default();
            *e = e.saturating_add(bytes);
        }
        let mut v: Vec<(std::borrow::Cow<'_, str>, i64)> =
            by_name.into_iter().filter(|(_, b)| *b > 0).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(top);
        s.top_alloc = v.into_iter().map(|(n, b)| (n.into_owned(), b)).collect();
        s
    }
}

/// Lookup of a table entry by id: direct when the ids are `1..=n` in order (as every builder
/// writes them), else through an index of the table (the first entry wins on duplicates).
fn by_id<'a, T>(table: &'a [T], id_of: impl Fn(&T) -> u64) -> impl Fn(u64) -> Option<&'a T> {
    let dense = table
        .iter()
        .enumerate()
        .all(|(i, e)| id_of(e) == i as u64 + 1);
    let mut index: HashMap<u64, &T> = HashMap::new();
    if !dense {
        for e in table {
            index.entry(id_of(e)).or_insert(e);
        }
    }
    move |id| {
        if dense {
            table.get(usize::try_from(id.checked_sub(1)?).ok()?)
        } else {
            index.get(&id).copied()
        }
    }
}

/// Sums the four values and ranks leaf functions by alloc_space (pprof's `-top -sample_index=alloc_space`).
pub fn summarize(p: &Profile, top: usize) -> ProfileSummary {
    let mut s = SummaryBuilder::default();
    for smp in &p.sample {
        s.add(&smp.value, smp.location_id.first().copied());
    }
    s.finish(p, top)
}

/// Formats a byte count with a binary unit.
pub fn human_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v.abs() >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

impl ProfileOutcome {
    /// The human summary printed by `goheap profile`, with `s` the profile's summary.
    pub fn summary_text(&self, s: &ProfileSummary) -> String {
        let mut out = format!(
            "pid {} ({}), {}, symbols via {}\nbuckets read: {}   in use: {} in {} objects   allocated: {} in {} objects (scaled estimates)\ntop allocating functions (alloc_space, flat):",
            self.pid,
            self.binary_path,
            self.go_version,
            self.method,
            self.buckets,
            human_bytes(s.inuse_bytes),
            s.inuse_objects,
            human_bytes(s.alloc_bytes),
            s.alloc_objects
        );
        if s.top_alloc.is_empty() {
            out.push_str("\n  (no samples yet: the process has not allocated enough, or no GC has completed)");
        }
        for (name, bytes) in &s.top_alloc {
            let pct = if s.alloc_bytes > 0 {
                100.0 * *bytes as f64 / s.alloc_bytes as f64
            } else {
                0.0
            };
            out.push_str(&format!(
                "\n  {:>10} {:5.1}%  {}",
                human_bytes(*bytes),
                pct,
                name
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pprof_proto::{FrameLine, ProfileBuilder};

    #[test]
    fn top_functions_by_leaf_name_from_ids() {
        let mut b = ProfileBuilder::new();
        for t in ["ao", "as", "io", "is"] {
            b.add_sample_type(t, "x");
        }
        let f = b.function("main.f", "main.f", "f.go", 1);
        let g = b.function("main.g", "main.g", "g.go", 1);
        let line = |function| FrameLine {
            function,
            line: 2,
            column: 0,
        };
        // Two locations in main.f (one with main.g inlined into it: g is the leaf there).
        let lf1 = b.location(1, None, 0x10, &[line(f)]).unwrap();
        let lf2 = b.location(2, None, 0x20, &[line(f)]).unwrap();
        let lg = b.location(3, None, 0x30, &[line(g), line(f)]).unwrap();
        let bare = b.location(4, None, 0x4000, &[]).unwrap();
        b.add_sample(&[lf1, lg], &[1, 100, 1, 10], &[]).unwrap();
        b.add_sample(&[lf2], &[1, 50, 0, 0], &[]).unwrap();
        b.add_sample(&[lg, lf1], &[2, 150, 0, 0], &[]).unwrap();
        b.add_sample(&[bare], &[1, 150, 1, 150], &[]).unwrap();
        b.add_sample(&[], &[1, 7, 0, 0], &[]).unwrap();
        let p = b.build();
        let s = summarize(&p, 5);
        assert_eq!(
            (
                s.alloc_objects,
                s.alloc_bytes,
                s.inuse_objects,
                s.inuse_bytes
            ),
            (6, 457, 2, 160)
        );
        // main.f and main.g tie at 150 with 0x4000: by name.
        assert_eq!(
            s.top_alloc,
            [
                ("0x4000".to_string(), 150),
                ("main.f".to_string(), 150),
                ("main.g".to_string(), 150)
            ]
        );
        assert_eq!(summarize(&p, 1).top_alloc.len(), 1);

        // Ids that do not resolve count in the totals only; short samples not at all.
        let mut sb = SummaryBuilder::default();
        sb.add(&[1, 5, 1, 5], Some(99));
        sb.add(&[1, 5], Some(1));
        sb.add(&[1, 8, 0, 0], Some(1));
        let s = sb.finish(&p, 5);
        assert_eq!((s.alloc_objects, s.alloc_bytes), (2, 13));
        assert_eq!(s.top_alloc, [("main.f".to_string(), 8)]);
    }
}
