//! Errors of decoding and of resolving ids/indices in a profile.

/// Why a byte string could not be turned into a [`crate::Profile`], or why a
/// decoded profile's references do not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The input started with the gzip magic but did not inflate.
    #[error("gzip stream is corrupt: {0}")]
    Gzip(#[source] std::io::Error),
    /// The inflated profile is larger than the allowed maximum.
    #[error("decompressed profile exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes that was exceeded.
        limit: u64,
    },
    /// The (inflated) bytes are not a valid `Profile` message.
    #[error("invalid profile protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A string index is negative or past the end of `string_table`.
    #[error("string index {index} out of range (string table has {len} entries)")]
    StringIndex {
        /// The offending index.
        index: i64,
        /// Length of the string table.
        len: usize,
    },
    /// A sample refers to a location id that is not in `location`.
    #[error("sample refers to unknown location id {0}")]
    UnknownLocation(u64),
    /// A location line refers to a function id that is not in `function`.
    #[error("location {location} refers to unknown function id {function}")]
    UnknownFunction {
        /// Id of the location holding the line.
        location: u64,
        /// The missing function id.
        function: u64,
    },
    /// Expanding the samples' stacks would produce more frames than allowed.
    #[error("samples expand to more than {limit} frames")]
    TooManyFrames {
        /// The frame limit that was exceeded.
        limit: usize,
    },
    /// Two entries of one table share an id (or use the reserved id 0).
    #[error("{table} table has a duplicate or zero id {id}")]
    BadId {
        /// `"location"` or `"function"`.
        table: &'static str,
        /// The offending id.
        id: u64,
    },
}

/// Why [`crate::ProfileBuilder::add_sample`] refused a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The sample's value count differs from the number of declared sample types.
    #[error("sample has {got} values but {expected} sample types are declared")]
    ValueCount {
        /// Number of values given.
        got: usize,
        /// Number of sample types declared so far.
        expected: usize,
    },
    /// The id was not issued by this builder.
    #[error("{kind} id {id} was not issued by this builder")]
    ForeignId {
        /// `"location"`, `"function"` or `"mapping"`.
        kind: &'static str,
        /// The raw id.
        id: u64,
    },
    /// A sample type was declared after a [`crate::ProfileWriter`] had written the sample types.
    #[error("{declared} sample types declared, but only the first {written} were written before the samples")]
    SampleTypeAfterSamples {
        /// Sample types declared now.
        declared: usize,
        /// Sample types written in the header.
        written: usize,
    },
}

/// Why a [`crate::ProfileWriter`] could not write a profile.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The profile being built is inconsistent.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Writing to the output failed.
    #[error("writing the profile: {0}")]
    Io(#[from] std::io::Error),
}
