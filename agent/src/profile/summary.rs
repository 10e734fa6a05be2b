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

/// Sums the four values and ranks leaf functions by alloc_space (pprof's `-top -sample_index=alloc_space`).
pub fn summarize(p: &Profile, top: usize) -> ProfileSummary {
    let mut s = ProfileSummary::default();
    let mut flat: HashMap<String, i64> = HashMap::new();
    let Ok(samples) = p.flat_samples() else {
        return s;
    };
    for smp in samples {
        if smp.values.len() < 4 {
            continue;
        }
        s.alloc_objects = s.alloc_objects.saturating_add(smp.values[0]);
        s.alloc_bytes = s.alloc_bytes.saturating_add(smp.values[1]);
        s.inuse_objects = s.inuse_objects.saturating_add(smp.values[2]);
        s.inuse_bytes = s.inuse_bytes.saturating_add(smp.values[3]);
        if let Some(leaf) = smp.stack.first() {
            let e = flat.entry(leaf.0.clone()).or_default();
            *e = e.saturating_add(smp.values[1]);
        }
    }
    let mut v: Vec<(String, i64)> = flat.into_iter().filter(|(_, b)| *b > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(top);
    s.top_alloc = v;
    s
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
    /// The human summary printed by `goheap profile`.
    pub fn summary_text(&self) -> String {
        let s = &self.summary;
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
