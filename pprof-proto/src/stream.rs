//! Writing a profile's protobuf encoding as it is produced, never holding the whole encoding:
//! [`Profile::write_plain`] writes an in-memory profile one message at a time, and
//! [`ProfileWriter`] writes each sample the moment it is added, so a profile with many samples
//! never exists as `Sample` structs either.
//!
//! Both produce exactly the bytes of prost's `encode_to_vec` (so [`Profile::encode_plain`] and
//! these agree byte for byte): a message's fields are emitted in tag order, and `Profile`'s tags
//! put the sample types (1) and samples (2) before every table (mappings 3, locations 4,
//! functions 5, strings 6) and scalar (7–15). The samples can therefore be written while the
//! tables they refer to are still growing; the tables and scalars follow at
//! [`ProfileWriter::finish`].

use std::io::Write;
use std::ops::{Deref, DerefMut};

use prost::encoding;
use prost::Message;

use crate::builder::{LocationId, ProfileBuilder, SampleLabel};
use crate::error::{BuildError, WriteError};
use crate::proto::{Label, Profile, Sample};

/// Encoded messages are collected up to this many bytes before each write to the output.
const CHUNK: usize = 32 * 1024;

/// Messages encoded into a reused buffer and written out in chunks of about [`CHUNK`] bytes.
struct Chunked<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> Chunked<W> {
    fn new(out: W) -> Self {
        Chunked {
            out,
            buf: Vec::with_capacity(CHUNK + 1024),
        }
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn message<M: Message>(&mut self, tag: u32, m: &M) -> std::io::Result<()> {
        encoding::message::encode(tag, m, &mut self.buf);
        self.spill()
    }

    /// Field 1 of `p`: the sample types.
    fn header(&mut self, p: &Profile) -> std::io::Result<()> {
        for vt in &p.sample_type {
            self.message(1, vt)?;
        }
        Ok(())
    }

    /// Field 2 of `p`: its samples.
    fn samples(&mut self, samples: &[Sample]) -> std::io::Result<()> {
        for s in samples {
            encode_sample_field(s, &mut self.buf);
            self.spill()?;
        }
        Ok(())
    }

    /// Fields 3 to 15 of `p`: the tables, then the scalars.
    fn tail(&mut self, p: &Profile) -> std::io::Result<()> {
        for m in &p.mapping {
            self.message(3, m)?;
        }
        for l in &p.location {
            self.message(4, l)?;
        }
        for f in &p.function {
            self.message(5, f)?;
        }
        for s in &p.string_table {
            encoding::string::encode(6, s, &mut self.buf);
            self.spill()?;
        }
        // Fields 7..=15: a profile holding only them encodes to exactly their bytes.
        let scalars = Profile {
            drop_frames: p.drop_frames,
            keep_frames: p.keep_frames,
            time_nanos: p.time_nanos,
            duration_nanos: p.duration_nanos,
            period_type: p.period_type,
            period: p.period,
            comment: p.comment.clone(),
            default_sample_type: p.default_sample_type,
            doc_url: p.doc_url,
            ..Profile::default()
        };
        scalars.encode_raw(&mut self.buf);
        self.flush_buf()
    }
}

impl Profile {
    /// Writes the plain (uncompressed) protobuf encoding to `out`, a few tens of KiB at a time;
    /// the bytes are those of [`Profile::encode_plain`].
    pub fn write_plain<W: Write>(&self, out: W) -> std::io::Result<()> {
        let mut c = Chunked::new(out);
        c.header(self)?;
        c.samples(&self.sample)?;
        c.tail(self)?;
        c.out.flush()
    }
}

/// A [`ProfileBuilder`] whose samples are encoded into `out` as they are added (see the module
/// docs); everything else is interned as usual and written by [`ProfileWriter::finish`].
///
/// It dereferences to its builder for the tables and scalars (functions, locations, mappings,
/// strings, period, …). Samples added through the builder itself are written out, in order,
/// before the next sample added through the writer. Sample types are written when the writer is
/// created: declaring one afterwards makes the next [`ProfileWriter::add_sample`] and
/// [`ProfileWriter::finish`] fail with [`BuildError::SampleTypeAfterSamples`].
///
/// Sample ids are checked as [`ProfileBuilder::add_sample`] checks them: a location must be
/// added before a sample refers to it.
pub struct ProfileWriter<W: Write> {
    builder: ProfileBuilder,
    out: Chunked<W>,
    /// Sample types written in the header.
    sample_types: usize,
    /// Reused for every sample.
    scratch: Sample,
    written: usize,
}

impl ProfileBuilder {
    /// Starts writing the profile to `out` (plain protobuf; wrap `out` in a gzip encoder for a
    /// `.pb.gz`): writes the sample types and any samples added so far. Declare every sample type
    /// first.
    pub fn into_writer<W: Write>(mut self, out: W) -> Result<ProfileWriter<W>, WriteError> {
        let mut out = Chunked::new(out);
        out.header(self.profile())?;
        let kept = self.take_samples();
        out.samples(&kept)?;
        Ok(ProfileWriter {
            sample_types: self.profile().sample_type.len(),
            builder: self,
            out,
            scratch: Sample::default(),
            written: kept.len(),
        })
    }
}

impl<W: Write> ProfileWriter<W> {
    fn check_sample_types(&self) -> Result<(), BuildError> {
        let declared = self.builder.profile().sample_type.len();
        if declared != self.sample_types {
            return Err(BuildError::SampleTypeAfterSamples {
                declared,
                written: self.sample_types,
            });
        }
        Ok(())
    }

    /// Writes samples that were added through the builder since the last call.
    fn drain_builder_samples(&mut self) -> Result<(), WriteError> {
        if self.builder.sample_count() > 0 {
            let kept = self.builder.take_samples();
            self.out.samples(&kept)?;
            self.written += kept.len();
        }
        Ok(())
    }

    /// Encodes a sample with stack `locations` (leaf first), one value per sample type, and
    /// `labels`, checked as [`ProfileBuilder::add_sample`] checks it, and writes it out.
    pub fn add_sample(
        &mut self,
        locations: &[LocationId],
        values: &[i64],
        labels: &[SampleLabel<'_>],
    ) -> Result<(), WriteError> {
        self.check_sample_types()?;
        self.drain_builder_samples()?;
        self.builder
            .fill_sample(locations, values, labels, &mut self.scratch)?;
        encode_sample_field(&self.scratch, &mut self.out.buf);
        self.out.spill()?;
        self.written += 1;
        Ok(())
    }

    /// Number of samples written so far.
    pub fn samples_written(&self) -> usize {
        self.written + self.builder.sample_count()
    }

    /// Writes the rest of the profile (remaining samples, tables, scalars), flushes `out` and
    /// returns it with the profile's tables (everything but the samples, which were written).
    pub fn finish(mut self) -> Result<(W, Profile), WriteError> {
        self.check_sample_types()?;
        self.drain_builder_samples()?;
        let tables = self.builder.build();
        self.out.tail(&tables)?;
        self.out.out.flush()?;
        Ok((self.out.out, tables))
    }
}

/// Bytes of `v` as a protobuf varint.
fn varint_len(v: u64) -> usize {
    1 + (63 - (v | 1).leading_zeros() as usize) / 7
}

fn put_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Length of a packed repeated varint field's payload.
fn packed_len(vs: impl Iterator<Item = u64>) -> usize {
    vs.map(varint_len).sum()
}

/// `Label` fields (all int64) as (field number, value).
fn label_fields(l: &Label) -> [(u8, u64); 4] {
    [
        (1, l.key as u64),
        (2, l.str as u64),
        (3, l.num as u64),
        (4, l.num_unit as u64),
    ]
}

fn label_len(l: &Label) -> usize {
    label_fields(l)
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(_, v)| 1 + varint_len(*v))
        .sum()
}

/// Appends `s` as field 2 of a `Profile`, exactly as prost encodes it (its most frequent message,
/// written here without prost's per-byte `BufMut` calls and repeated length computations).
fn encode_sample_field(s: &Sample, buf: &mut Vec<u8>) {
    let locs_len = packed_len(s.location_id.iter().copied());
    let values_len = packed_len(s.value.iter().map(|&v| v as u64));
    let mut len = 0;
    if !s.location_id.is_empty() {
        len += 1 + varint_len(locs_len as u64) + locs_len;
    }
    if !s.value.is_empty() {
        len += 1 + varint_len(values_len as u64) + values_len;
    }
    for l in &s.label {
        let n = label_len(l);
        len += 1 + varint_len(n as u64) + n;
    }
    buf.reserve(1 + varint_len(len as u64) + len);
    buf.push(2 << 3 | 2);
    put_varint(len as u64, buf);
    if !s.location_id.is_empty() {
        buf.push(1 << 3 | 2);
        put_varint(locs_len as u64, buf);
        for &id in &s.location_id {
            put_varint(id, buf);
        }
    }
    if !s.value.is_empty() {
        buf.push(2 << 3 | 2);
        put_varint(values_len as u64, buf);
        for &v in &s.value {
            put_varint(v as u64, buf);
        }
    }
    for l in &s.label {
        buf.push(3 << 3 | 2);
        put_varint(label_len(l) as u64, buf);
        for (field, v) in label_fields(l) {
            if v != 0 {
                buf.push(field << 3);
                put_varint(v, buf);
            }
        }
    }
}

impl<W: Write> Deref for ProfileWriter<W> {
    type Target = ProfileBuilder;
    fn deref(&self) -> &ProfileBuilder {
        &self.builder
    }
}

impl<W: Write> DerefMut for ProfileWriter<W> {
    fn deref_mut(&mut self) -> &mut ProfileBuilder {
        &mut self.builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_encoding_is_prosts() {
        let edge: [i64; 9] = [0, 1, 127, 128, 16_383, 16_384, i64::MAX, -1, i64::MIN];
        let mut samples = vec![Sample::default()];
        for (i, &v) in edge.iter().enumerate() {
            samples.push(Sample {
                location_id: edge[..i].iter().map(|&x| x as u64).collect(),
                value: edge[i..].to_vec(),
                label: vec![
                    Label {
                        key: v,
                        str: 0,
                        num: v.wrapping_neg(),
                        num_unit: i as i64,
                    },
                    Label::default(),
                ],
            });
        }
        // Long enough for multi-byte lengths.
        samples.push(Sample {
            location_id: (0..300).map(|i| i * 1_000_003).collect(),
            value: vec![1 << 40; 50],
            label: vec![],
        });
        for s in &samples {
            let mut ours = Vec::new();
            encode_sample_field(s, &mut ours);
            let mut theirs = Vec::new();
            encoding::message::encode(2, s, &mut theirs);
            assert_eq!(ours, theirs, "{s:?}");
        }
        for v in [0u64, 1, 127, 128, u64::MAX] {
            assert_eq!(varint_len(v), encoding::encoded_len_varint(v));
        }
    }
}
