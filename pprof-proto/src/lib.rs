//! google/pprof `profile.proto` messages, a [`ProfileBuilder`] that interns
//! strings, functions, mappings and locations, a [`ProfileWriter`] that encodes
//! each sample into the output as it is added (prost's bytes, never the whole
//! profile in memory), gzip encoding/decoding, and read-side helpers
//! ([`Profile::flat_samples`]) for comparing profiles by content.
//!
//! ```
//! use pprof_proto::{FrameLine, Profile, ProfileBuilder, SampleLabel};
//!
//! let mut b = ProfileBuilder::new();
//! b.add_sample_type("inuse_space", "bytes").set_period_type("space", "bytes").set_period(512 * 1024);
//! let f = b.function("main.alloc", "main.alloc", "/src/main.go", 10);
//! let loc = b.location(0x401000, None, 0x401000, &[FrameLine { function: f, line: 12, column: 0 }]).unwrap();
//! b.add_sample(&[loc], &[4096], &[SampleLabel::Num { key: "bytes", value: 4096, unit: "bytes" }]).unwrap();
//! let bytes = b.build().encode_gzip();
//!
//! let p = Profile::decode(&bytes).unwrap();
//! assert_eq!(p.sample_type_names().unwrap(), ["inuse_space"]);
//! assert_eq!(p.flat_samples().unwrap()[0].stack[0].0, "main.alloc");
//! ```

#![warn(missing_docs)]

mod builder;
mod codec;
mod error;
mod flat;
pub mod proto;
mod stream;

pub use builder::{
    FrameLine, FunctionId, LocationId, MappingId, MappingInfo, ProfileBuilder, SampleLabel,
};
pub use codec::{gzip_encoder, DEFAULT_MAX_DECOMPRESSED_BYTES, GZIP_MAGIC};
pub use error::{BuildError, ProfileError, WriteError};
pub use flat::{FlatFrame, FlatLabelValue, FlatSample, DEFAULT_MAX_FLAT_FRAMES};
pub use proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
pub use stream::ProfileWriter;
