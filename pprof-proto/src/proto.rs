//! Hand-written prost messages for google/pprof's `profile.proto` (package
//! `perftools.profiles`).
//!
//! Field names, types and tag numbers follow the upstream schema; they were
//! checked against the encoder the Go toolchain vendors
//! (`src/cmd/vendor/github.com/google/pprof/profile/encode.go`, Go 1.24+ for
//! `doc_url = 15`). The messages are written out by hand with
//! `#[derive(prost::Message)]` so that building the crate needs no `protoc`.
//!
//! All `int64` fields that index into [`Profile::string_table`] are string
//! table indices; index 0 is always the empty string. All `uint64` `*_id`
//! fields refer to the `id` of another message; id 0 means "none".
//! Repeated scalar fields use packed encoding (proto3 default), which is what
//! the Go runtime writes and what every pprof reader accepts.

/// A whole profile: samples plus the tables they refer to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each entry of [`Sample::value`] measures, in the same order.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The measurements.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Binaries/memory regions that locations belong to. Ids must be non-zero and unique.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Program locations referenced by [`Sample::location_id`]. Ids must be non-zero and unique.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions referenced by [`Line::function_id`]. Ids must be non-zero and unique.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// All strings of the profile; `string_table[0]` must be `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// String index of a regexp: frames matching it (and their callees) are dropped.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// String index of a regexp: frames matching it are kept even if `drop_frames` matches.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Time of collection, nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Duration of the profile, in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// Kind of events between sampled occurrences (e.g. `space`/`bytes` for heap profiles).
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Number of events (in units of `period_type`) between sampled occurrences.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// String indices of free-form comments.
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// String index of the sample type pprof shows by default.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
    /// String index of a URL documenting this profile type (newer schema; older readers ignore it).
    #[prost(int64, tag = "15")]
    pub doc_url: i64,
}

/// A (type, unit) pair such as (`inuse_space`, `bytes`); both are string indices.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct ValueType {
    /// String index of the type name.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// String index of the unit.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One measurement: a call stack plus one value per [`Profile::sample_type`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Location ids, leaf (innermost caller) first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per entry of [`Profile::sample_type`].
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Extra key/value context of the sample.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample label: `key` with either a string value `str` or a numeric value `num`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    /// String index of the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String index of the string value (0 when the label is numeric).
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// Numeric value (meaningful when `str` is 0).
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String index of the unit of `num` (0 when unspecified).
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A mapped memory region (usually a binary or shared object).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Mapping {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the region in the process (inclusive).
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End address of the region in the process (exclusive).
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// Offset in the file that `memory_start` maps.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String index of the file name of the mapped object.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String index of the build id of the mapped object.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Locations of this mapping carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Locations of this mapping carry file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Locations of this mapping carry line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Locations of this mapping carry inlined frames.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A program location: an address and the source lines (frames) it stands for.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Location {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Id of the [`Mapping`] containing `address`, or 0.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// Instruction address (a return address minus one for callers, as the Go runtime writes it).
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Frames at this address; with inlining the innermost (callee) frame comes first
    /// and the last entry is the function the address physically belongs to.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several symbols were folded into this location by the linker.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// One source frame of a [`Location`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Line {
    /// Id of the [`Function`].
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line number (1-based; 0 when unknown).
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Source column number (1-based; 0 when unknown).
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function; all names are string indices.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Function {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String index of the human-readable name (e.g. `main.main`).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String index of the name as the system knows it (e.g. a mangled C++ name).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String index of the source file name.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// Line number where the function starts in `filename`.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
