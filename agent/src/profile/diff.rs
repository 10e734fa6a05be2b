//! Diff profiles (`goheap diff`): NEW with BASE's values negated merged in, as
//! `go tool pprof -diff_base BASE NEW` builds it internally — BASE's samples get the label
//! `pprof::base=true` (so pprof takes percentages of BASE's total) and are scaled by −1, then both
//! profiles are merged like `profile.Merge`: mappings matched by build ID (else file), size and
//! offset, BASE's addresses moved into NEW's mappings, locations, functions and samples
//! deduplicated by content, values of identical samples summed, all-zero samples dropped.

use std::collections::HashMap;

use pprof_proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// Why two profiles cannot be diffed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("incompatible profiles: {0}")]
    Incompatible(String),
    #[error("reading a profile: {0}")]
    Profile(#[from] pprof_proto::ProfileError),
}

/// The label pprof puts on the samples of a `-diff_base` profile.
pub const BASE_LABEL: &str = "pprof::base";

/// The diff profile of `new` against `base` (`go tool pprof -diff_base base new`).
pub fn diff(base: &Profile, new: &Profile) -> Result<Profile, DiffError> {
    compatible(new, base)?;
    let mut m = Merger::default();
    m.header(&[new, base])?;
    m.add(new, 1, false)?;
    m.add(base, -1, true)?;
    Ok(m.finish())
}

/// (type, unit) pairs.
type ValueTypes = Vec<(String, String)>;

fn value_types(p: &Profile) -> Result<(Option<(String, String)>, ValueTypes), DiffError> {
    Ok((p.period_type_strings()?, p.sample_types()?))
}

/// pprof's `compatible`: the same period type and sample types.
fn compatible(a: &Profile, b: &Profile) -> Result<(), DiffError> {
    let (pa, sa) = value_types(a)?;
    let (pb, sb) = value_types(b)?;
    if pa != pb {
        return Err(DiffError::Incompatible(format!(
            "period types {pa:?} and {pb:?}"
        )));
    }
    if sa != sb {
        return Err(DiffError::Incompatible(format!(
            "sample types {sa:?} and {sb:?}"
        )));
    }
    Ok(())
}

#[derive(Hash, PartialEq, Eq)]
struct MappingKey {
    size: u64,
    offset: u64,
    build_id_or_file: String,
}

#[derive(Hash, PartialEq, Eq)]
struct LocationKey {
    addr: u64,
    mapping: u64,
    lines: Vec<(u64, i64, i64)>,
    folded: bool,
}

#[derive(Hash, PartialEq, Eq)]
struct FunctionKey {
    start_line: i64,
    name: String,
    system_name: String,
    filename: String,
}

/// A sample's identity: its (merged) locations and its labels, sorted.
#[derive(Hash, PartialEq, Eq)]
struct SampleKey {
    locations: Vec<u64>,
    labels: Vec<(String, String, i64, String)>,
}

#[derive(Default)]
struct Merger {
    out: Profile,
    strings: HashMap<String, i64>,
    mappings: HashMap<MappingKey, usize>,
    locations: HashMap<LocationKey, u64>,
    functions: HashMap<FunctionKey, u64>,
    samples: HashMap<SampleKey, usize>,
}

impl Merger {
    fn intern(&mut self, s: &str) -> i64 {
        if self.out.string_table.is_empty() {
            self.out.string_table.push(String::new());
            self.strings.insert(String::new(), 0);
        }
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.out.string_table.len() as i64;
        self.out.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    /// pprof's `combineHeaders` (sources in order NEW, BASE).
    fn header(&mut self, srcs: &[&Profile]) -> Result<(), DiffError> {
        self.intern("");
        let first = srcs[0];
        for vt in &first.sample_type {
            let (t, u) = (first.string(vt.r#type)?, first.string(vt.unit)?);
            let vt = ValueType {
                r#type: self.intern(t),
                unit: self.intern(u),
            };
            self.out.sample_type.push(vt);
        }
        if let Some(pt) = &first.period_type {
            let (t, u) = (first.string(pt.r#type)?, first.string(pt.unit)?);
            self.out.period_type = Some(ValueType {
                r#type: self.intern(t),
                unit: self.intern(u),
            });
        }
        let drop = first.string(first.drop_frames)?.to_string();
        let keep = first.string(first.keep_frames)?.to_string();
        self.out.drop_frames = self.intern(&drop);
        self.out.keep_frames = self.intern(&keep);
        let mut seen_comments = std::collections::HashSet::new();
        let mut default_sample_type = String::new();
        for s in srcs {
            if self.out.time_nanos == 0 || s.time_nanos < self.out.time_nanos {
                self.out.time_nanos = s.time_nanos;
            }
            self.out.duration_nanos = self.out.duration_nanos.wrapping_add(s.duration_nanos);
            if self.out.period == 0 || self.out.period < s.period {
                self.out.period = s.period;
            }
            for c in &s.comment {
                let c = s.string(*c)?.to_string();
                if seen_comments.insert(c.clone()) {
                    let i = self.intern(&c);
                    self.out.comment.push(i);
                }
            }
            if default_sample_type.is_empty() {
                default_sample_type = s.string(s.default_sample_type)?.to_string();
            }
        }
        self.out.default_sample_type = self.intern(&default_sample_type);
        Ok(())
    }

    /// Merges `src`'s samples with values multiplied by `scale`, labelled as the diff base when
    /// `is_base`.
    fn add(&mut self, src: &Profile, scale: i64, is_base: bool) -> Result<(), DiffError> {
        // Source mapping id -> (merged mapping id, address offset into it, its start).
        let mut mapping_of: HashMap<u64, (u64, i64, u64)> = HashMap::new();
        // The first mapping of a profile is its main binary: merged first.
        for m in &src.mapping {
            let mi = self.mapping(src, m)?;
            mapping_of.insert(m.id, mi);
        }
        let mut function_of: HashMap<u64, u64> = HashMap::new();
        for f in &src.function {
            let id = self.function(src, f)?;
            function_of.insert(f.id, id);
        }
        let mut location_of: HashMap<u64, u64> = HashMap::new();
        for l in &src.location {
            let (mapping, offset, start) =
                mapping_of.get(&l.mapping_id).copied().unwrap_or((0, 0, 0));
            let lines: Vec<Line> = l
                .line
                .iter()
                .map(|ln| Line {
                    function_id: function_of.get(&ln.function_id).copied().unwrap_or(0),
                    line: ln.line,
                    column: ln.column,
                })
                .collect();
            let address = (l.address as i64).wrapping_add(offset) as u64;
            let key = LocationKey {
                addr: if mapping != 0 {
                    address.wrapping_sub(start)
                } else {
                    address
                },
                mapping,
                lines: lines
                    .iter()
                    .map(|ln| (ln.function_id, ln.line, ln.column))
                    .collect(),
                folded: l.is_folded,
            };
            let id = match self.locations.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.out.location.len() as u64 + 1;
                    self.out.location.push(Location {
                        id,
                        mapping_id: mapping,
                        address,
                        line: lines,
                        is_folded: l.is_folded,
                    });
                    self.locations.insert(key, id);
                    id
                }
            };
            location_of.insert(l.id, id);
        }
        let base_key = self.intern(BASE_LABEL);
        let base_true = self.intern("true");
        for s in &src.sample {
            let values: Vec<i64> = s.value.iter().map(|v| v.wrapping_mul(scale)).collect();
            if values.iter().all(|v| *v == 0) {
                continue;
            }
            let locations: Vec<u64> = s
                .location_id
                .iter()
                .filter_map(|id| location_of.get(id).copied())
                .collect();
            let mut labels: Vec<Label> = Vec::with_capacity(s.label.len() + 1);
            for l in &s.label {
                labels.push(Label {
                    key: self.intern(src.string(l.key)?),
                    str: self.intern(src.string(l.str)?),
                    num: l.num,
                    num_unit: self.intern(src.string(l.num_unit)?),
                });
            }
            if is_base {
                labels.retain(|l| l.key != base_key);
                labels.push(Label {
                    key: base_key,
                    str: base_true,
                    num: 0,
                    num_unit: 0,
                });
            }
            let mut key_labels: Vec<(String, String, i64, String)> = labels
                .iter()
                .map(|l| {
                    let st = &self.out.string_table;
                    (
                        st[l.key as usize].clone(),
                        st[l.str as usize].clone(),
                        l.num,
                        st[l.num_unit as usize].clone(),
                    )
                })
                .collect();
            key_labels.sort();
            let key = SampleKey {
                locations: locations.clone(),
                labels: key_labels,
            };
            match self.samples.get(&key) {
                Some(&i) => {
                    let dst = &mut self.out.sample[i].value;
                    for (d, v) in dst.iter_mut().zip(&values) {
                        *d = d.wrapping_add(*v);
                    }
                }
                None => {
                    self.samples.insert(key, self.out.sample.len());
                    self.out.sample.push(Sample {
                        location_id: locations,
                        value: values,
                        label: labels,
                    });
                }
            }
        }
        Ok(())
    }

    /// The merged mapping of `m`, the address offset from `m` to it and its start.
    fn mapping(&mut self, src: &Profile, m: &Mapping) -> Result<(u64, i64, u64), DiffError> {
        const ROUND: u64 = 0x1000;
        let size = m.memory_limit.wrapping_sub(m.memory_start);
        let size = size.wrapping_add(ROUND - 1);
        let size = size - size % ROUND;
        let build_id = src.string(m.build_id)?.to_string();
        let file = src.string(m.filename)?.to_string();
        let key = MappingKey {
            size,
            offset: m.file_offset,
            build_id_or_file: if !build_id.is_empty() {
                build_id.clone()
            } else {
                file.clone()
            },
        };
        if let Some(&i) = self.mappings.get(&key) {
            let mm = &self.out.mapping[i];
            return Ok((
                mm.id,
                (mm.memory_start as i64).wrapping_sub(m.memory_start as i64),
                mm.memory_start,
            ));
        }
        let id = self.out.mapping.len() as u64 + 1;
        let out = Mapping {
            id,
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename: self.intern(&file),
            build_id: self.intern(&build_id),
            has_functions: m.has_functions,
            has_filenames: m.has_filenames,
            has_line_numbers: m.has_line_numbers,
            has_inline_frames: m.has_inline_frames,
        };
        self.mappings.insert(key, self.out.mapping.len());
        self.out.mapping.push(out);
        Ok((id, 0, m.memory_start))
    }

    fn function(&mut self, src: &Profile, f: &Function) -> Result<u64, DiffError> {
        let key = FunctionKey {
            start_line: f.start_line,
            name: src.string(f.name)?.to_string(),
            system_name: src.string(f.system_name)?.to_string(),
            filename: src.string(f.filename)?.to_string(),
        };
        if let Some(&id) = self.functions.get(&key) {
            return Ok(id);
        }
        let id = self.out.function.len() as u64 + 1;
        let (name, system_name, filename) = (
            self.intern(&key.name),
            self.intern(&key.system_name),
            self.intern(&key.filename),
        );
        self.out.function.push(Function {
            id,
            name,
            system_name,
            filename,
            start_line: f.start_line,
        });
        self.functions.insert(key, id);
        Ok(id)
    }

    /// The merged profile, samples whose values summed to zero dropped (pprof re-merges them away).
    fn finish(mut self) -> Profile {
        self.out.sample.retain(|s| s.value.iter().any(|v| *v != 0));
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pprof_proto::{FrameLine, MappingInfo, ProfileBuilder};

    /// A heap-like profile of one binary loaded at `start`, with `(function, value)` samples.
    fn profile(start: u64, samples: &[(&str, i64)]) -> Profile {
        let mut b = ProfileBuilder::new();
        b.add_sample_type("alloc_space", "bytes")
            .add_sample_type("inuse_space", "bytes");
        b.set_period_type("space", "bytes").set_period(524288);
        let m = b.mapping(&MappingInfo {
            memory_start: start,
            memory_limit: start + 0x10000,
            file_offset: 0,
            filename: "/bin/app",
            build_id: "abc",
            has_functions: true,
            has_filenames: false,
            has_line_numbers: false,
            has_inline_frames: false,
        });
        for (i, (name, v)) in samples.iter().enumerate() {
            let f = b.function(name, name, "a.go", 1);
            let addr = start + 0x100 * (i as u64 + 1);
            let l = b
                .location(
                    addr,
                    Some(m),
                    addr,
                    &[FrameLine {
                        function: f,
                        line: 3,
                        column: 0,
                    }],
                )
                .unwrap();
            b.add_sample(&[l], &[*v, *v / 2], &[]).unwrap();
        }
        b.build()
    }

    fn by_function(p: &Profile) -> Vec<(String, Vec<i64>, bool)> {
        let mut v: Vec<(String, Vec<i64>, bool)> = p
            .flat_samples()
            .unwrap()
            .into_iter()
            .map(|s| {
                let base = s.labels.iter().any(|(k, _)| k == BASE_LABEL);
                (s.stack[0].0.clone(), s.values, base)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_plus_negated_base_with_the_base_label() {
        // Same binary at another load address: BASE's locations land in NEW's mapping.
        let base = profile(0x7000_0000, &[("a", 100), ("b", 40)]);
        let new = profile(0x5000_0000, &[("a", 150), ("c", 8)]);
        let d = diff(&base, &new).unwrap();
        assert_eq!(
            by_function(&d),
            vec![
                ("a".into(), vec![-100, -50], true),
                ("a".into(), vec![150, 75], false),
                ("b".into(), vec![-40, -20], true),
                ("c".into(), vec![8, 4], false),
            ]
        );
        assert_eq!(d.mapping.len(), 1, "one mapping for one binary");
        assert_eq!(d.mapping[0].memory_start, 0x5000_0000);
        // a's location is shared: BASE's address moved by the load-address difference.
        assert_eq!(d.location.len(), 3);
        assert_eq!(d.period, 524288);
    }

    #[test]
    fn identical_samples_merge_and_zero_samples_go() {
        let base = profile(0x1000_0000, &[("a", 10)]);
        // Diffing a diff against its own base again: BASE samples carry the label already, so they
        // merge with the new negated ones; NEW − BASE − BASE.
        let d = diff(&base, &base).unwrap();
        assert_eq!(by_function(&d).len(), 2);
        let dd = diff(&base, &d).unwrap();
        assert_eq!(
            by_function(&dd),
            vec![
                ("a".into(), vec![-20, -10], true),
                ("a".into(), vec![10, 5], false)
            ]
        );
        // Sample types must agree.
        let mut other = profile(0x1000_0000, &[("a", 10)]);
        other.sample_type.pop();
        for s in &mut other.sample {
            s.value.pop();
        }
        assert!(matches!(
            diff(&base, &other),
            Err(DiffError::Incompatible(_))
        ));
    }
}
