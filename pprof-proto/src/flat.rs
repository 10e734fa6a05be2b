//! Read-side helpers: resolve string indices and ids so that two profiles can
//! be compared by content regardless of how their tables are numbered.

use std::collections::HashMap;

use crate::error::ProfileError;
use crate::proto::{Function, Location, Profile, ValueType};

/// Default bound on the total number of frames [`Profile::flat_samples`] expands,
/// so a hostile profile (many samples over locations with many lines) cannot
/// make it allocate without limit.
pub const DEFAULT_MAX_FLAT_FRAMES: usize = 1 << 24;

/// One resolved frame: (function name, file name, line number).
pub type FlatFrame = (String, String, i64);

/// The value of a resolved sample label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlatLabelValue {
    /// A string label.
    Str(String),
    /// A numeric label with its unit (`""` if none was given).
    Num {
        /// The number.
        value: i64,
        /// Its unit.
        unit: String,
    },
}

/// A sample with every reference resolved to content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlatSample {
    /// Frames, leaf first. Each location contributes its lines in stored order
    /// (innermost inlined frame first); a location without lines contributes
    /// one frame `("0x<address in hex>", "", 0)`.
    pub stack: Vec<FlatFrame>,
    /// One value per sample type.
    pub values: Vec<i64>,
    /// Labels as (key, value), sorted, since pprof treats labels as an unordered multimap.
    /// Labels with neither a string nor a non-zero number/unit are omitted, as pprof does.
    pub labels: Vec<(String, FlatLabelValue)>,
}

impl Profile {
    /// The string at `index` of the string table.
    pub fn string(&self, index: i64) -> Result<&str, ProfileError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.string_table.get(i))
            .map(String::as_str)
            .ok_or(ProfileError::StringIndex {
                index,
                len: self.string_table.len(),
            })
    }

    fn value_type_strings(&self, vt: &ValueType) -> Result<(String, String), ProfileError> {
        Ok((
            self.string(vt.r#type)?.to_owned(),
            self.string(vt.unit)?.to_owned(),
        ))
    }

    /// Sample types as (type, unit), e.g. `("inuse_space", "bytes")`.
    pub fn sample_types(&self) -> Result<Vec<(String, String)>, ProfileError> {
        self.sample_type
            .iter()
            .map(|vt| self.value_type_strings(vt))
            .collect()
    }

    /// Sample type names in order, e.g. `["alloc_objects", "alloc_space", ...]`.
    pub fn sample_type_names(&self) -> Result<Vec<String>, ProfileError> {
        self.sample_type
            .iter()
            .map(|vt| self.string(vt.r#type).map(str::to_owned))
            .collect()
    }

    /// Period type as (type, unit), e.g. `("space", "bytes")`, if set.
    pub fn period_type_strings(&self) -> Result<Option<(String, String)>, ProfileError> {
        self.period_type
            .as_ref()
            .map(|vt| self.value_type_strings(vt))
            .transpose()
    }

    /// Every sample with its stack, values and labels resolved to content,
    /// bounded by [`DEFAULT_MAX_FLAT_FRAMES`].
    pub fn flat_samples(&self) -> Result<Vec<FlatSample>, ProfileError> {
        self.flat_samples_with_limit(DEFAULT_MAX_FLAT_FRAMES)
    }

    /// Like [`Profile::flat_samples`], failing with [`ProfileError::TooManyFrames`]
    /// once more than `max_frames` frames in total would be produced.
    pub fn flat_samples_with_limit(
        &self,
        max_frames: usize,
    ) -> Result<Vec<FlatSample>, ProfileError> {
        let functions = index_by_id("function", &self.function, |f: &Function| f.id)?;
        let locations = index_by_id("location", &self.location, |l: &Location| l.id)?;
        let mut frames_left = max_frames;
        let mut out = Vec::with_capacity(self.sample.len());
        for sample in &self.sample {
            let mut stack = Vec::new();
            for &location_id in &sample.location_id {
                let location = locations
                    .get(&location_id)
                    .ok_or(ProfileError::UnknownLocation(location_id))?;
                let frames = location.line.len().max(1);
                frames_left = frames_left
                    .checked_sub(frames)
                    .ok_or(ProfileError::TooManyFrames { limit: max_frames })?;
                if location.line.is_empty() {
                    stack.push((format!("{:#x}", location.address), String::new(), 0));
                }
                for line in &location.line {
                    let function =
                        functions
                            .get(&line.function_id)
                            .ok_or(ProfileError::UnknownFunction {
                                location: location_id,
                                function: line.function_id,
                            })?;
                    stack.push((
                        self.string(function.name)?.to_owned(),
                        self.string(function.filename)?.to_owned(),
                        line.line,
                    ));
                }
            }
            let mut labels = Vec::with_capacity(sample.label.len());
            for label in &sample.label {
                let key = self.string(label.key)?.to_owned();
                let value = if label.str != 0 {
                    FlatLabelValue::Str(self.string(label.str)?.to_owned())
                } else if label.num == 0 && label.num_unit == 0 {
                    // pprof readers (e.g. Go's profile package) drop such empty labels.
                    continue;
                } else {
                    FlatLabelValue::Num {
                        value: label.num,
                        unit: self.string(label.num_unit)?.to_owned(),
                    }
                };
                labels.push((key, value));
            }
            labels.sort();
            out.push(FlatSample {
                stack,
                values: sample.value.clone(),
                labels,
            });
        }
        Ok(out)
    }
}

/// Map id -> entry, rejecting id 0 and duplicates.
fn index_by_id<'a, T>(
    table: &'static str,
    entries: &'a [T],
    id_of: impl Fn(&T) -> u64,
) -> Result<HashMap<u64, &'a T>, ProfileError> {
    let mut map = HashMap::with_capacity(entries.len());
    for entry in entries {
        let id = id_of(entry);
        if id == 0 || map.insert(id, entry).is_some() {
            return Err(ProfileError::BadId { table, id });
        }
    }
    Ok(map)
}
