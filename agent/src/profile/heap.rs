//! Building the pprof heap profile exactly like `runtime/pprof.writeHeapProto` of the target's Go
//! version: same sample types and period, the `scaleHeapSample` unsampling, the `bytes` label, the
//! leading-runtime-frame hiding and `appendLocsForStack` location building (in [`crate::symbolize::locations`]).
//!
//! Units: record counters are *sampled* objects and bytes; profile values are *scaled* estimates of
//! all objects and bytes (`count × 1/(1 − e^(−avg/rate))`), exactly as the runtime writes them.

use std::io::Write;
use std::ops::{Deref, DerefMut};

use pprof_proto::{
    FrameLine, FunctionId, LocationId, MappingId, MappingInfo, Profile, ProfileBuilder,
    ProfileWriter, SampleLabel, WriteError,
};

use crate::binary::BinaryInfo;
use crate::profile::summary::SummaryBuilder;
use crate::runtime::layout::RuntimeLayout;
use crate::runtime::walk::MemProfileRecord;
use crate::symbolize::locations::{LocationBuilder, LOOKUP_TRIED};
use crate::symbolize::symbolizer::Symbolizer;
use crate::target::maps::{split_dev, MemoryMap};

/// Errors assembling the profile (only on internal inconsistencies).
#[derive(Debug, thiserror::Error)]
pub enum HeapProfileError {
    #[error("building the profile: {0}")]
    Build(#[from] pprof_proto::BuildError),
    /// Writing the profile out failed.
    #[error("writing the profile: {0}")]
    Io(#[from] std::io::Error),
}

impl From<WriteError> for HeapProfileError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Build(b) => HeapProfileError::Build(b),
            WriteError::Io(io) => HeapProfileError::Io(io),
        }
    }
}

/// A mapping of the target, as pprof writes it.
#[derive(Debug, Clone)]
pub struct ProfileMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file: String,
    pub build_id: String,
    /// Whether this is the Go executable (its locations are symbolized).
    pub is_main: bool,
}

/// What the profile needs besides the records.
#[derive(Debug, Clone)]
pub struct HeapProfileOptions {
    pub layout: RuntimeLayout,
    /// PIE load bias: runtime address = ELF address + bias.
    pub bias: u64,
    /// Executable mappings of the process (runtime/pprof lists every `r-xp` mapping).
    pub mappings: Vec<ProfileMapping>,
    /// `time_nanos` of the profile (wall clock, ns since the epoch).
    pub time_nanos: i64,
}

impl HeapProfileOptions {
    /// Options for a process running `info`'s binary with load bias `bias` and maps `map`.
    pub fn for_binary(info: &BinaryInfo, bias: u64, map: &MemoryMap) -> HeapProfileOptions {
        let dev = split_dev(info.binary.identity.dev);
        let ino = info.binary.identity.ino;
        let build_id = info
            .binary
            .gnu_build_id
            .clone()
            .or_else(|| info.binary.go_build_id.clone())
            .unwrap_or_default();
        let mappings = map
            .mappings
            .iter()
            .filter(|m| m.executable && !m.path.is_empty())
            .map(|m| {
                let is_main = m.inode == ino && m.dev == dev;
                ProfileMapping {
                    start: m.start,
                    end: m.end,
                    offset: m.offset,
                    file: m.path.clone(),
                    // Shared libraries too, as the runtime's own profile has them.
                    build_id: if is_main {
                        build_id.clone()
                    } else {
                        map.gnu_build_id_of(m).unwrap_or_default()
                    },
                    is_main,
                }
            })
            .collect();
        let time_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        HeapProfileOptions {
            layout: info.layout,
            bias,
            mappings,
            time_nanos,
        }
    }
}

/// `scaleHeapSample` of runtime/pprof (≤ 1.26 form: `count`, total `size` bytes).
pub fn scale_heap_sample(count: i64, size: i64, rate: i64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, size);
    }
    let avg_size = size as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-avg_size / rate as f64).exp());
    ((count as f64 * scale) as i64, (size as f64 * scale) as i64)
}

/// `scaleHeapSample` of Go 1.27+: by object size.
pub fn scale_heap_sample_by_object(count: i64, avg_size: i64, rate: i64) -> (i64, i64) {
    if count == 0 || avg_size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, count.wrapping_mul(avg_size));
    }
    let scale = 1.0 / (1.0 - (-(avg_size as f64) / rate as f64).exp());
    (
        (count as f64 * scale) as i64,
        (count.wrapping_mul(avg_size) as f64 * scale) as i64,
    )
}

/// The four values and the `bytes` label of one record, as the target's `writeHeapProto` computes them.
pub fn record_values(
    r: &MemProfileRecord,
    rate: i64,
    layout: &RuntimeLayout,
) -> ([i64; 4], Option<i64>) {
    if layout.object_size_records {
        let size = r.object_size as i64;
        let (ao, ab) = scale_heap_sample_by_object(r.alloc_objects, size, rate);
        let (io, ib) =
            scale_heap_sample_by_object(r.alloc_objects.wrapping_sub(r.free_objects), size, rate);
        ([ao, ab, io, ib], Some(size))
    } else {
        let (ao, ab) = scale_heap_sample(r.alloc_objects, r.alloc_bytes, rate);
        let (io, ib) = scale_heap_sample(
            r.alloc_objects.wrapping_sub(r.free_objects),
            r.alloc_bytes.wrapping_sub(r.free_bytes),
            rate,
        );
        let block = if r.alloc_objects > 0 {
            r.alloc_bytes / r.alloc_objects
        } else {
            0
        };
        ([ao, ab, io, ib], (block != 0).then_some(block))
    }
}

/// Builds the heap profile from records (in `mbuckets` order), samples kept in memory (the agent's
/// delta profiles and tests; `goheap profile` streams with [`write`]).
pub fn build(
    records: &[MemProfileRecord],
    rate: u64,
    symbolizer: &Symbolizer,
    opts: &HeapProfileOptions,
) -> Result<Profile, HeapProfileError> {
    let (b, mapping_ids) = header(rate, opts);
    let mut sink = Kept(b);
    add_records(
        &mut sink,
        &mapping_ids,
        records,
        rate,
        symbolizer,
        opts,
        None,
    )?;
    Ok(sink.0.build())
}

/// Writes the heap profile of `records` to `out` as plain protobuf (wrap `out` in
/// [`pprof_proto::gzip_encoder`] for the `.pb.gz` the runtime writes), each sample encoded as it
/// is built: no sample is kept, so memory does not grow with the number of records beyond the
/// locations and functions. The bytes are those of [`build`]'s profile, encoded. Feeds `summary`
/// (the totals and leaf locations, by id) if given. Returns `out` and the profile's tables
/// (functions, locations, strings: what `summary` resolves its ids against).
pub fn write<W: Write>(
    records: &[MemProfileRecord],
    rate: u64,
    symbolizer: &Symbolizer,
    opts: &HeapProfileOptions,
    out: W,
    summary: Option<&mut SummaryBuilder>,
) -> Result<(W, Profile), HeapProfileError> {
    let (b, mapping_ids) = header(rate, opts);
    let mut w = b.into_writer(out)?;
    add_records(
        &mut w,
        &mapping_ids,
        records,
        rate,
        symbolizer,
        opts,
        summary,
    )?;
    Ok(w.finish()?)
}

/// Where [`add_records`] puts samples: kept in the profile, or written out at once.
trait Samples: DerefMut<Target = ProfileBuilder> {
    fn add(
        &mut self,
        stack: &[LocationId],
        values: &[i64],
        labels: &[SampleLabel<'_>],
    ) -> Result<(), HeapProfileError>;
}

/// A builder that keeps its samples.
struct Kept(ProfileBuilder);

impl Deref for Kept {
    type Target = ProfileBuilder;
    fn deref(&self) -> &ProfileBuilder {
        &self.0
    }
}

impl DerefMut for Kept {
    fn deref_mut(&mut self) -> &mut ProfileBuilder {
        &mut self.0
    }
}

impl Samples for Kept {
    fn add(
        &mut self,
        stack: &[LocationId],
        values: &[i64],
        labels: &[SampleLabel<'_>],
    ) -> Result<(), HeapProfileError> {
        Ok(self.0.add_sample(stack, values, labels)?)
    }
}

impl<W: Write> Samples for ProfileWriter<W> {
    fn add(
        &mut self,
        stack: &[LocationId],
        values: &[i64],
        labels: &[SampleLabel<'_>],
    ) -> Result<(), HeapProfileError> {
        Ok(self.add_sample(stack, values, labels)?)
    }
}

/// The builder with what precedes the samples: period and sample types, time, and the mappings
/// (in maps order, their ids returned; their `has_functions` is set once all locations are known).
fn header(rate: u64, opts: &HeapProfileOptions) -> (ProfileBuilder, Vec<MappingId>) {
    let mut b = ProfileBuilder::new();
    b.set_period_type("space", "bytes");
    b.set_period(rate as i64);
    for (t, u) in [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ] {
        b.add_sample_type(t, u);
    }
    b.set_time_nanos(opts.time_nanos);
    let ids = opts
        .mappings
        .iter()
        .map(|m| {
            b.mapping(&MappingInfo {
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.offset,
                filename: &m.file,
                build_id: &m.build_id,
                has_functions: false,
                has_filenames: false,
                has_line_numbers: false,
                has_inline_frames: false,
            })
        })
        .collect();
    (b, ids)
}

/// Adds one sample per record, and the functions and locations each one creates right after
/// [`LocationBuilder`] creates them (so ids and the string table come out in the order of the
/// runtime's `profileBuilder`), then sets the mappings' `has_functions`.
fn add_records<S: Samples>(
    b: &mut S,
    mapping_ids: &[MappingId],
    records: &[MemProfileRecord],
    rate: u64,
    symbolizer: &Symbolizer,
    opts: &HeapProfileOptions,
    mut summary: Option<&mut SummaryBuilder>,
) -> Result<(), HeapProfileError> {
    let rate = rate as i64;
    let bias = opts.bias;
    let mapping_of = |addr: u64| {
        opts.mappings
            .iter()
            .position(|m| m.start <= addr && addr < m.end)
    };
    // Builder ids of the LocationBuilder's functions and locations (index = its id - 1).
    let mut function_ids: Vec<FunctionId> = Vec::new();
    let mut location_ids: Vec<LocationId> = Vec::new();
    let mut mapping_flags: Vec<u8> = vec![0; opts.mappings.len()];
    let mut locs = LocationBuilder::new(symbolizer.pclntab());
    let mut pcs: Vec<u64> = Vec::new();
    let mut stack: Vec<LocationId> = Vec::new();
    let mut lines: Vec<FrameLine> = Vec::new();
    for r in records {
        // PCs from the target are runtime addresses; the symbolizer wants ELF addresses.
        pcs.clear();
        pcs.extend(r.stack.iter().map(|pc| pc.wrapping_sub(bias)));
        let ids = locs.append_heap_sample(&pcs);
        for f in &locs.functions()[function_ids.len()..] {
            function_ids.push(b.function(&f.name, &f.system_name, &f.filename, f.start_line));
        }
        for l in &locs.locations()[location_ids.len()..] {
            let addr = l.address.wrapping_add(bias);
            lines.clear();
            lines.extend(l.lines.iter().filter_map(|ln| {
                let i = usize::try_from(ln.function_id.checked_sub(1)?).ok()?;
                function_ids.get(i).map(|&function| FrameLine {
                    function,
                    line: ln.line,
                    column: 0,
                })
            }));
            let mapping = mapping_of(addr).map(|i| {
                mapping_flags[i] |= l.symbolize_result;
                mapping_ids[i]
            });
            location_ids.push(b.location(l.id, mapping, addr, &lines)?);
        }
        stack.clear();
        stack.extend(ids.iter().filter_map(|&id| {
            let i = usize::try_from(id.checked_sub(1)?).ok()?;
            location_ids.get(i).copied()
        }));
        let (values, label) = record_values(r, rate, &opts.layout);
        if let Some(s) = summary.as_deref_mut() {
            s.add(&values, stack.first().map(|l| l.0));
        }
        let num;
        let labels: &[SampleLabel<'_>] = match label {
            Some(v) => {
                num = [SampleLabel::Num {
                    key: "bytes",
                    value: v,
                    unit: "",
                }];
                &num
            }
            None => &[],
        };
        b.add(&stack, &values, labels)?;
    }
    // has_functions as runtime/pprof decides it: every location in the mapping was symbolized and
    // none failed.
    for (&id, &flags) in mapping_ids.iter().zip(&mapping_flags) {
        if flags == LOOKUP_TRIED {
            b.set_mapping_flags(id, true, false, false, false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_matches_runtime_formula() {
        // One sampled 512 KiB object at the default rate: scale = 1/(1-e^-1).
        let (c, b) = scale_heap_sample(1, 524288, 524288);
        assert_eq!(c, (1.0f64 / (1.0 - (-1.0f64).exp())) as i64);
        assert_eq!(b, (524288.0f64 / (1.0 - (-1.0f64).exp())) as i64);
        assert_eq!(scale_heap_sample(0, 10, 524288), (0, 0));
        assert_eq!(scale_heap_sample(3, 30, 1), (3, 30));
        assert_eq!(scale_heap_sample_by_object(3, 10, 1), (3, 30));
        // The two forms agree when bytes = count × size.
        for (n, sz) in [(1i64, 16i64), (1000, 32), (7, 1 << 20)] {
            let a = scale_heap_sample(n, n * sz, 524288);
            let b = scale_heap_sample_by_object(n, sz, 524288);
            assert!(
                (a.0 - b.0).abs() <= 1 && (a.1 - b.1).abs() <= 1,
                "{a:?} {b:?}"
            );
        }
    }
}
