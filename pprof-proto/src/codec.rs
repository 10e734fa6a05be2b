//! Encoding a [`Profile`] as gzipped protobuf (the format pprof files and
//! `/debug/pprof/heap` use) and decoding plain or gzipped bytes.

use std::io::{Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::error::ProfileError;
use crate::proto::Profile;

/// First two bytes of every gzip stream.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Default bound, in bytes, on the inflated size of a gzipped profile accepted by
/// [`Profile::decode`]; protects against decompression bombs.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// The gzip encoder every `.pb.gz` of this crate is written with; wrap the output of a
/// [`crate::ProfileWriter`] in one to write a `.pb.gz`, and call [`GzEncoder::finish`] at the end.
///
/// Fastest compression, as `runtime/pprof` writes its profiles (`gzip.BestSpeed`): the default
/// level takes about six times as long for half the size, and a profile is written once.
pub fn gzip_encoder<W: Write>(w: W) -> GzEncoder<W> {
    GzEncoder::new(w, Compression::fast())
}

impl Profile {
    /// The profile as plain (uncompressed) protobuf bytes.
    pub fn encode_plain(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// The profile as gzipped protobuf, ready to be served or written to a `.pb.gz` file.
    pub fn encode_gzip(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail, and deflate of an in-memory buffer has no
        // failure mode; fall back to an empty Vec rather than panicking regardless.
        if self.write_gzip(&mut out).is_err() {
            out.clear();
        }
        out
    }

    /// Writes the profile as gzipped protobuf to `w`, encoding it a chunk at a time (the plain
    /// encoding is never held whole).
    pub fn write_gzip<W: Write>(&self, w: W) -> std::io::Result<()> {
        let mut encoder = gzip_encoder(w);
        self.write_plain(&mut encoder)?;
        encoder.finish()?.flush()
    }

    /// Decodes a profile from gzipped (detected by [`GZIP_MAGIC`]) or plain protobuf
    /// bytes. Inflated size is bounded by [`DEFAULT_MAX_DECOMPRESSED_BYTES`].
    /// Never panics on malformed input; returns an error instead.
    pub fn decode(bytes: &[u8]) -> Result<Profile, ProfileError> {
        Self::decode_with_limit(bytes, DEFAULT_MAX_DECOMPRESSED_BYTES)
    }

    /// Like [`Profile::decode`] with an explicit bound on the inflated size in bytes.
    pub fn decode_with_limit(bytes: &[u8], max_decompressed: u64) -> Result<Profile, ProfileError> {
        if bytes.starts_with(&GZIP_MAGIC) {
            let mut inflated = Vec::new();
            MultiGzDecoder::new(bytes)
                .take(max_decompressed.saturating_add(1))
                .read_to_end(&mut inflated)
                .map_err(ProfileError::Gzip)?;
            if u64::try_from(inflated.len()).unwrap_or(u64::MAX) > max_decompressed {
                return Err(ProfileError::TooLarge {
                    limit: max_decompressed,
                });
            }
            Ok(<Profile as Message>::decode(inflated.as_slice())?)
        } else {
            Ok(<Profile as Message>::decode(bytes)?)
        }
    }
}
