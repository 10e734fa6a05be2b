//! [`ProfileBuilder`]: assembles a [`Profile`] while interning strings,
//! functions, mappings and locations.

use std::collections::HashMap;

use crate::error::BuildError;
use crate::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// Id of a [`Function`] issued by a [`ProfileBuilder`] (dense, starting at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionId(pub u64);

/// Id of a [`Location`] issued by a [`ProfileBuilder`] (dense, starting at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationId(pub u64);

/// Id of a [`Mapping`] issued by a [`ProfileBuilder`] (dense, starting at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MappingId(pub u64);

/// One frame of a location being added: a function and a position in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameLine {
    /// The function, from [`ProfileBuilder::function`].
    pub function: FunctionId,
    /// Source line (1-based; 0 when unknown).
    pub line: i64,
    /// Source column (1-based; 0 when unknown).
    pub column: i64,
}

/// Description of a mapped memory region, for [`ProfileBuilder::mapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MappingInfo<'a> {
    /// First address of the region (inclusive).
    pub memory_start: u64,
    /// End address of the region (exclusive).
    pub memory_limit: u64,
    /// File offset mapped at `memory_start`.
    pub file_offset: u64,
    /// Path of the mapped file ("" if anonymous).
    pub filename: &'a str,
    /// Build id of the mapped file ("" if unknown).
    pub build_id: &'a str,
    /// Locations in this mapping carry function names.
    pub has_functions: bool,
    /// Locations in this mapping carry file names.
    pub has_filenames: bool,
    /// Locations in this mapping carry line numbers.
    pub has_line_numbers: bool,
    /// Locations in this mapping carry inlined frames.
    pub has_inline_frames: bool,
}

/// A label attached to a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleLabel<'a> {
    /// `key` = string `value`.
    Str {
        /// Label key.
        key: &'a str,
        /// Label value.
        value: &'a str,
    },
    /// `key` = numeric `value` measured in `unit` (`""` for none), e.g. `bytes` = 1024 `bytes`.
    Num {
        /// Label key.
        key: &'a str,
        /// Label value.
        value: i64,
        /// Unit of `value` (`""` if unspecified).
        unit: &'a str,
    },
}

/// Builds a [`Profile`], interning as it goes.
///
/// Invariants of the result of [`ProfileBuilder::build`]:
/// - `string_table[0] == ""`, and every string occurs once;
/// - function, location and mapping ids are `1..=n` in table order;
/// - functions are unique by (name, system_name, filename, start_line),
///   mappings by all their fields, locations by the caller's key;
/// - every sample has one value per sample type (checked by [`ProfileBuilder::add_sample`]).
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    profile: Profile,
    string_index: HashMap<String, i64>,
    /// Function with `id == 0` -> assigned id.
    function_index: HashMap<Function, u64>,
    /// Mapping with `id == 0` -> assigned id.
    mapping_index: HashMap<Mapping, u64>,
    /// Caller-chosen location key -> assigned id.
    location_index: HashMap<u64, u64>,
}

impl Default for ProfileBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProfileBuilder {
    /// An empty builder whose string table holds only `""`.
    pub fn new() -> Self {
        let mut string_index = HashMap::new();
        string_index.insert(String::new(), 0);
        ProfileBuilder {
            profile: Profile {
                string_table: vec![String::new()],
                ..Profile::default()
            },
            string_index,
            function_index: HashMap::new(),
            mapping_index: HashMap::new(),
            location_index: HashMap::new(),
        }
    }

    /// Index of `s` in the string table, adding it if new. `""` is always 0.
    pub fn intern(&mut self, s: &str) -> i64 {
        if let Some(&index) = self.string_index.get(s) {
            return index;
        }
        // The table can never reach i64::MAX entries in memory; saturate rather than wrap.
        let index = i64::try_from(self.profile.string_table.len()).unwrap_or(i64::MAX);
        self.profile.string_table.push(s.to_owned());
        self.string_index.insert(s.to_owned(), index);
        index
    }

    fn value_type(&mut self, type_name: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.intern(type_name),
            unit: self.intern(unit),
        }
    }

    /// Appends a sample type, e.g. (`inuse_space`, `bytes`). Declare all sample types
    /// before adding samples.
    pub fn add_sample_type(&mut self, type_name: &str, unit: &str) -> &mut Self {
        let vt = self.value_type(type_name, unit);
        self.profile.sample_type.push(vt);
        self
    }

    /// Sets the period type, e.g. (`space`, `bytes`) for heap profiles.
    pub fn set_period_type(&mut self, type_name: &str, unit: &str) -> &mut Self {
        self.profile.period_type = Some(self.value_type(type_name, unit));
        self
    }

    /// Sets the sampling period, in units of the period type (bytes for heap profiles).
    pub fn set_period(&mut self, period: i64) -> &mut Self {
        self.profile.period = period;
        self
    }

    /// Sets the collection time, nanoseconds since the Unix epoch.
    pub fn set_time_nanos(&mut self, time_nanos: i64) -> &mut Self {
        self.profile.time_nanos = time_nanos;
        self
    }

    /// Sets the profile duration in nanoseconds.
    pub fn set_duration_nanos(&mut self, duration_nanos: i64) -> &mut Self {
        self.profile.duration_nanos = duration_nanos;
        self
    }

    /// Names the sample type pprof should show by default (e.g. `inuse_space`).
    pub fn set_default_sample_type(&mut self, type_name: &str) -> &mut Self {
        self.profile.default_sample_type = self.intern(type_name);
        self
    }

    /// Appends a free-form comment.
    pub fn add_comment(&mut self, comment: &str) -> &mut Self {
        let index = self.intern(comment);
        self.profile.comment.push(index);
        self
    }

    /// Sets the `drop_frames` regexp.
    pub fn set_drop_frames(&mut self, regexp: &str) -> &mut Self {
        self.profile.drop_frames = self.intern(regexp);
        self
    }

    /// Sets the `keep_frames` regexp.
    pub fn set_keep_frames(&mut self, regexp: &str) -> &mut Self {
        self.profile.keep_frames = self.intern(regexp);
        self
    }

    /// Sets the documentation URL of the profile type.
    pub fn set_doc_url(&mut self, url: &str) -> &mut Self {
        self.profile.doc_url = self.intern(url);
        self
    }

    /// Id of the function (name, system_name, filename, start_line), adding it if new.
    pub fn function(
        &mut self,
        name: &str,
        system_name: &str,
        filename: &str,
        start_line: i64,
    ) -> FunctionId {
        let key = Function {
            id: 0,
            name: self.intern(name),
            system_name: self.intern(system_name),
            filename: self.intern(filename),
            start_line,
        };
        if let Some(&id) = self.function_index.get(&key) {
            return FunctionId(id);
        }
        let id = next_id(self.profile.function.len());
        self.profile.function.push(Function { id, ..key });
        self.function_index.insert(key, id);
        FunctionId(id)
    }

    /// Id of the mapping described by `info`, adding it if no identical mapping exists.
    pub fn mapping(&mut self, info: &MappingInfo<'_>) -> MappingId {
        let key = Mapping {
            id: 0,
            memory_start: info.memory_start,
            memory_limit: info.memory_limit,
            file_offset: info.file_offset,
            filename: self.intern(info.filename),
            build_id: self.intern(info.build_id),
            has_functions: info.has_functions,
            has_filenames: info.has_filenames,
            has_line_numbers: info.has_line_numbers,
            has_inline_frames: info.has_inline_frames,
        };
        if let Some(&id) = self.mapping_index.get(&key) {
            return MappingId(id);
        }
        let id = next_id(self.profile.mapping.len());
        self.profile.mapping.push(Mapping { id, ..key.clone() });
        self.mapping_index.insert(key, id);
        MappingId(id)
    }

    /// Sets the `has_*` flags of mapping `id` (e.g. once every location in it is known: the Go
    /// runtime sets `has_functions` only if all of them were symbolized).
    pub fn set_mapping_flags(
        &mut self,
        id: MappingId,
        has_functions: bool,
        has_filenames: bool,
        has_line_numbers: bool,
        has_inline_frames: bool,
    ) -> Result<(), BuildError> {
        check_issued("mapping", id.0, self.profile.mapping.len())?;
        // Ids are 1..=len in table order.
        let m = &mut self.profile.mapping[(id.0 - 1) as usize];
        let old_key = Mapping { id: 0, ..m.clone() };
        m.has_functions = has_functions;
        m.has_filenames = has_filenames;
        m.has_line_numbers = has_line_numbers;
        m.has_inline_frames = has_inline_frames;
        let new_key = Mapping { id: 0, ..m.clone() };
        if self.mapping_index.get(&old_key) == Some(&id.0) {
            self.mapping_index.remove(&old_key);
        }
        self.mapping_index.entry(new_key).or_insert(id.0);
        Ok(())
    }

    /// The location previously added under `key`, if any. Lets callers skip
    /// expensive symbolization for locations they have already added.
    pub fn location_by_key(&self, key: u64) -> Option<LocationId> {
        self.location_index.get(&key).copied().map(LocationId)
    }

    /// Id of the location known by the caller-chosen `key` (e.g. its address),
    /// adding it with `mapping`, `address` and `lines` if the key is new. If the
    /// key exists, the existing location is returned unchanged.
    ///
    /// `lines` must be ordered as pprof requires: with inlining, the innermost
    /// (inlined callee) frame first and the physical function last.
    pub fn location(
        &mut self,
        key: u64,
        mapping: Option<MappingId>,
        address: u64,
        lines: &[FrameLine],
    ) -> Result<LocationId, BuildError> {
        if let Some(id) = self.location_by_key(key) {
            return Ok(id);
        }
        let mapping_id = match mapping {
            Some(MappingId(id)) => {
                check_issued("mapping", id, self.profile.mapping.len())?;
                id
            }
            None => 0,
        };
        let mut line = Vec::with_capacity(lines.len());
        for frame in lines {
            check_issued("function", frame.function.0, self.profile.function.len())?;
            line.push(Line {
                function_id: frame.function.0,
                line: frame.line,
                column: frame.column,
            });
        }
        let id = next_id(self.profile.location.len());
        self.profile.location.push(Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.location_index.insert(key, id);
        Ok(LocationId(id))
    }

    /// Appends a sample with stack `locations` (leaf first), one value per declared
    /// sample type, and `labels`.
    pub fn add_sample(
        &mut self,
        locations: &[LocationId],
        values: &[i64],
        labels: &[SampleLabel<'_>],
    ) -> Result<(), BuildError> {
        let mut sample = Sample::default();
        self.fill_sample(locations, values, labels, &mut sample)?;
        self.profile.sample.push(sample);
        Ok(())
    }

    /// Checks a sample as [`ProfileBuilder::add_sample`] does and stores it in `into`, reusing its
    /// vectors (interning the label strings).
    pub(crate) fn fill_sample(
        &mut self,
        locations: &[LocationId],
        values: &[i64],
        labels: &[SampleLabel<'_>],
        into: &mut Sample,
    ) -> Result<(), BuildError> {
        let expected = self.profile.sample_type.len();
        if values.len() != expected {
            return Err(BuildError::ValueCount {
                got: values.len(),
                expected,
            });
        }
        for &LocationId(id) in locations {
            check_issued("location", id, self.profile.location.len())?;
        }
        into.location_id.clear();
        into.location_id.extend(locations.iter().map(|l| l.0));
        into.value.clear();
        into.value.extend_from_slice(values);
        into.label.clear();
        for l in labels {
            let label = match *l {
                SampleLabel::Str { key, value } => Label {
                    key: self.intern(key),
                    str: self.intern(value),
                    num: 0,
                    num_unit: 0,
                },
                SampleLabel::Num { key, value, unit } => Label {
                    key: self.intern(key),
                    str: 0,
                    num: value,
                    num_unit: self.intern(unit),
                },
            };
            into.label.push(label);
        }
        Ok(())
    }

    /// Removes and returns the samples added so far.
    pub(crate) fn take_samples(&mut self) -> Vec<Sample> {
        std::mem::take(&mut self.profile.sample)
    }

    /// Number of samples added so far.
    pub fn sample_count(&self) -> usize {
        self.profile.sample.len()
    }

    /// The profile built so far (its tables resolve ids and string indices).
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The finished profile.
    pub fn build(self) -> Profile {
        self.profile
    }
}

/// The id for the next entry of a table that currently has `len` entries.
fn next_id(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX).saturating_add(1)
}

/// Ids issued by the builder are exactly `1..=len`.
fn check_issued(kind: &'static str, id: u64, len: usize) -> Result<(), BuildError> {
    if id == 0 || id > u64::try_from(len).unwrap_or(u64::MAX) {
        return Err(BuildError::ForeignId { kind, id });
    }
    Ok(())
}
