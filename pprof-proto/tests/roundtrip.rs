//! Encoding/decoding, interning and content-resolution tests that need no Go toolchain.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use pprof_proto::{
    BuildError, FlatLabelValue, FrameLine, FunctionId, LocationId, Profile, ProfileBuilder,
    ProfileError, GZIP_MAGIC,
};
use prost::Message;

use common::{rich_profile, RICH_COMMENT, RICH_DOC_URL, RICH_DROP_FRAMES, RICH_KEEP_FRAMES};

fn rich_profile_folded() -> Profile {
    let mut p = rich_profile();
    p.location[2].is_folded = true;
    p
}

#[test]
fn gzip_round_trip_preserves_every_field() {
    let p = rich_profile_folded();
    let bytes = p.encode_gzip();
    assert!(
        bytes.starts_with(&GZIP_MAGIC),
        "not gzip: {:02x?}",
        &bytes[..2]
    );
    let decoded = Profile::decode(&bytes).expect("decode gzip");
    assert_eq!(decoded, p);
    assert_eq!(decoded.string(decoded.doc_url).unwrap(), RICH_DOC_URL);
    assert_eq!(
        decoded.string(decoded.drop_frames).unwrap(),
        RICH_DROP_FRAMES
    );
    assert_eq!(
        decoded.string(decoded.keep_frames).unwrap(),
        RICH_KEEP_FRAMES
    );
    assert_eq!(decoded.string(decoded.comment[0]).unwrap(), RICH_COMMENT);
    assert!(decoded.location[2].is_folded);
}

#[test]
fn plain_round_trip_preserves_every_field() {
    let p = rich_profile_folded();
    let bytes = p.encode_plain();
    assert!(!bytes.starts_with(&GZIP_MAGIC));
    assert_eq!(Profile::decode(&bytes).expect("decode plain"), p);
}

#[test]
fn gzip_output_inflates_with_flate2_to_the_plain_encoding() {
    let p = rich_profile();
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(p.encode_gzip().as_slice())
        .read_to_end(&mut inflated)
        .expect("flate2 inflates encode_gzip output");
    assert_eq!(inflated, p.encode_plain());
    assert_eq!(
        <Profile as Message>::decode(inflated.as_slice()).unwrap(),
        p
    );

    let mut written = Vec::new();
    p.write_gzip(&mut written).expect("write_gzip");
    let mut inflated2 = Vec::new();
    flate2::read::GzDecoder::new(written.as_slice())
        .read_to_end(&mut inflated2)
        .expect("flate2 inflates write_gzip output");
    assert_eq!(inflated2, inflated);
}

#[test]
fn builder_interns_and_numbers_densely_from_one() {
    let p = rich_profile();
    assert_eq!(p.string_table[0], "");
    let unique: HashSet<&String> = p.string_table.iter().collect();
    assert_eq!(unique.len(), p.string_table.len(), "duplicate strings");
    for (i, f) in p.function.iter().enumerate() {
        assert_eq!(f.id, i as u64 + 1);
    }
    for (i, l) in p.location.iter().enumerate() {
        assert_eq!(l.id, i as u64 + 1);
    }
    assert_eq!(p.mapping.len(), 1);
    assert_eq!(p.mapping[0].id, 1);

    let mut b = ProfileBuilder::new();
    b.add_sample_type("samples", "count");
    let f1 = b.function("f", "f", "f.go", 1);
    let f2 = b.function("f", "f", "f.go", 1);
    let g = b.function("f", "f", "f.go", 2);
    assert_eq!((f1, f2, g), (FunctionId(1), FunctionId(1), FunctionId(2)));
    let line = |function| {
        [FrameLine {
            function,
            line: 3,
            column: 0,
        }]
    };
    let l1 = b.location(0xaa, None, 0xaa, &line(f1)).unwrap();
    assert_eq!(b.location_by_key(0xaa), Some(l1));
    assert_eq!(b.location_by_key(0xbb), None);
    // Same key: the existing location wins, new lines are ignored.
    let again = b.location(0xaa, None, 0xcc, &line(g)).unwrap();
    let l2 = b.location(0xbb, None, 0xbb, &line(g)).unwrap();
    assert_eq!(
        (l1, again, l2),
        (LocationId(1), LocationId(1), LocationId(2))
    );
    b.add_sample(&[l1, l2], &[1], &[]).unwrap();
    let p = b.build();
    assert_eq!(p.location.len(), 2);
    assert_eq!(p.location[0].address, 0xaa);
    assert_eq!(p.location[0].line[0].function_id, 1);
}

#[test]
fn builder_rejects_wrong_value_count_and_foreign_ids() {
    let mut b = ProfileBuilder::new();
    b.add_sample_type("a", "count")
        .add_sample_type("b", "bytes");
    assert_eq!(
        b.add_sample(&[], &[1], &[]),
        Err(BuildError::ValueCount {
            got: 1,
            expected: 2
        })
    );
    assert_eq!(
        b.add_sample(&[LocationId(1)], &[1, 2], &[]),
        Err(BuildError::ForeignId {
            kind: "location",
            id: 1
        })
    );
    let bad_line = [FrameLine {
        function: FunctionId(9),
        line: 1,
        column: 0,
    }];
    assert_eq!(
        b.location(1, None, 1, &bad_line),
        Err(BuildError::ForeignId {
            kind: "function",
            id: 9
        })
    );
    assert_eq!(b.sample_count(), 0);
}

#[test]
fn flat_samples_resolve_stacks_values_and_labels() {
    let p = rich_profile();
    assert_eq!(
        p.sample_type_names().unwrap(),
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(
        p.sample_types().unwrap()[3],
        ("inuse_space".into(), "bytes".into())
    );
    assert_eq!(
        p.period_type_strings().unwrap(),
        Some(("space".into(), "bytes".into()))
    );
    let flat = p.flat_samples().unwrap();
    assert_eq!(flat.len(), 3);
    let frame = |f: &str, file: &str, line| (f.to_string(), file.to_string(), line);
    assert_eq!(
        flat[1].stack,
        [
            frame("runtime.mallocgc", "/go/src/runtime/malloc.go", 950),
            frame("main.inlinedHelper", "/src/helper.go", 22),
            frame("main.alloc", "/src/alloc.go", 12),
            frame("main.main", "/src/main.go", 7),
        ]
    );
    assert_eq!(flat[0].values, [3, 3072, 1, 1024]);
    assert_eq!(
        flat[0].labels,
        [
            (
                "bytes".to_string(),
                FlatLabelValue::Num {
                    value: 1024,
                    unit: "bytes".into()
                }
            ),
            ("kind".to_string(), FlatLabelValue::Str("small".into())),
        ]
    );
    assert!(flat[2].labels.is_empty());
}

/// Rewrites every id and string index of `p` (and reverses every table) without
/// changing what the profile says.
fn renumber(p: &Profile) -> Profile {
    let n = p.string_table.len() as i64;
    // Index 0 stays ""; others are reversed.
    let s = |i: i64| if i == 0 { 0 } else { n - i };
    let mut strings = vec![String::new(); p.string_table.len()];
    for (i, text) in p.string_table.iter().enumerate().skip(1) {
        strings[s(i as i64) as usize] = text.clone();
    }
    let id = |i: u64| if i == 0 { 0 } else { i * 7 + 100 };
    let mut q = p.clone();
    q.string_table = strings;
    for vt in q.sample_type.iter_mut().chain(q.period_type.iter_mut()) {
        vt.r#type = s(vt.r#type);
        vt.unit = s(vt.unit);
    }
    for sample in &mut q.sample {
        sample.location_id.iter_mut().for_each(|l| *l = id(*l));
        for label in &mut sample.label {
            label.key = s(label.key);
            label.str = s(label.str);
            label.num_unit = s(label.num_unit);
        }
    }
    for m in &mut q.mapping {
        m.id = id(m.id);
        m.filename = s(m.filename);
        m.build_id = s(m.build_id);
    }
    for l in &mut q.location {
        l.id = id(l.id);
        l.mapping_id = id(l.mapping_id);
        l.line
            .iter_mut()
            .for_each(|line| line.function_id = id(line.function_id));
    }
    for f in &mut q.function {
        f.id = id(f.id);
        f.name = s(f.name);
        f.system_name = s(f.system_name);
        f.filename = s(f.filename);
    }
    q.mapping.reverse();
    q.location.reverse();
    q.function.reverse();
    q
}

#[test]
fn flat_samples_do_not_depend_on_id_numbering() {
    let p = rich_profile();
    let q = renumber(&p);
    assert_ne!(p, q);
    assert_ne!(p.string_table, q.string_table);
    assert_eq!(p.flat_samples().unwrap(), q.flat_samples().unwrap());
    assert_eq!(p.sample_types().unwrap(), q.sample_types().unwrap());
    assert_eq!(
        p.period_type_strings().unwrap(),
        q.period_type_strings().unwrap()
    );
}

#[test]
fn flat_samples_report_dangling_references() {
    let mut p = rich_profile();
    p.sample[0].location_id.push(999);
    assert!(matches!(
        p.flat_samples(),
        Err(ProfileError::UnknownLocation(999))
    ));

    let mut p = rich_profile();
    p.location[0].line[0].function_id = 77;
    assert!(matches!(
        p.flat_samples(),
        Err(ProfileError::UnknownFunction {
            location: 1,
            function: 77
        })
    ));

    let mut p = rich_profile();
    p.function[0].name = -1;
    assert!(matches!(
        p.flat_samples(),
        Err(ProfileError::StringIndex { index: -1, .. })
    ));
    let mut p = rich_profile();
    p.sample_type[0].unit = 10_000;
    assert!(matches!(
        p.sample_types(),
        Err(ProfileError::StringIndex { index: 10_000, .. })
    ));

    let mut p = rich_profile();
    p.location[1].id = p.location[0].id;
    assert!(matches!(
        p.flat_samples(),
        Err(ProfileError::BadId {
            table: "location",
            ..
        })
    ));
    let mut p = rich_profile();
    p.function[0].id = 0;
    assert!(matches!(
        p.flat_samples(),
        Err(ProfileError::BadId {
            table: "function",
            id: 0
        })
    ));

    let p = rich_profile();
    assert!(matches!(
        p.flat_samples_with_limit(5),
        Err(ProfileError::TooManyFrames { limit: 5 })
    ));
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    common::support::XorShift(seed | 1).bytes(len)
}

#[test]
fn decode_returns_errors_on_garbage_without_panicking() {
    let plain = rich_profile().encode_plain();
    let gz = rich_profile().encode_gzip();
    // Every truncation of a valid encoding, plain and gzipped.
    let mut rejected_prefixes = 0;
    for cut in 0..plain.len() {
        if Profile::decode(&plain[..cut]).is_err() {
            rejected_prefixes += 1;
        }
    }
    assert!(
        rejected_prefixes > plain.len() / 2,
        "truncations mostly decode?"
    );
    for cut in 2..gz.len() {
        assert!(
            Profile::decode(&gz[..cut]).is_err(),
            "truncated gzip at {cut} decoded"
        );
    }
    // Random bytes, with and without a gzip header in front.
    for seed in 1..300u64 {
        let mut junk = pseudo_random_bytes(seed, (seed as usize * 37) % 4096);
        let _ = Profile::decode(&junk);
        junk.splice(0..0, GZIP_MAGIC);
        assert!(matches!(Profile::decode(&junk), Err(ProfileError::Gzip(_))));
    }
    // Flipped bytes inside a valid protobuf must not panic either.
    for i in 0..plain.len() {
        let mut flipped = plain.clone();
        flipped[i] ^= 0xa5;
        if let Ok(p) = Profile::decode(&flipped) {
            let _ = p.flat_samples();
            let _ = p.sample_types();
        }
    }
    assert!(matches!(
        Profile::decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(ProfileError::Protobuf(_))
    ));
}

#[test]
fn decode_bounds_the_inflated_size() {
    let mut zeros = Vec::new();
    let mut enc = flate2::write::GzEncoder::new(&mut zeros, flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &vec![0u8; 4 << 20]).unwrap();
    enc.finish().unwrap();
    assert!(zeros.len() < 64 << 10);
    assert!(matches!(
        Profile::decode_with_limit(&zeros, 1 << 20),
        Err(ProfileError::TooLarge { limit }) if limit == 1 << 20
    ));
    // The real profile fits under a limit equal to its plain size, but not one byte less.
    let p = rich_profile();
    let plain_len = p.encode_plain().len() as u64;
    assert_eq!(
        Profile::decode_with_limit(&p.encode_gzip(), plain_len).unwrap(),
        p
    );
    assert!(Profile::decode_with_limit(&p.encode_gzip(), plain_len - 1).is_err());
}

/// Minimal independent protobuf walker: top-level (field number -> wire types and varint values).
fn top_level_fields(mut buf: &[u8]) -> BTreeMap<u64, Vec<(u8, Option<u64>)>> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (b, rest) = buf.split_first().expect("truncated varint");
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out: BTreeMap<u64, Vec<(u8, Option<u64>)>> = BTreeMap::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let (field, wire) = (key >> 3, (key & 7) as u8);
        let value = match wire {
            0 => Some(varint(&mut buf)),
            2 => {
                let len = varint(&mut buf) as usize;
                buf = &buf[len..];
                None
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.entry(field).or_default().push((wire, value));
    }
    out
}

#[test]
fn profile_fields_use_the_upstream_tag_numbers() {
    let p = rich_profile();
    let fields = top_level_fields(&p.encode_plain());
    let varint_field = |tag: u64| -> u64 {
        match fields.get(&tag).map(Vec::as_slice) {
            Some([(0, Some(v))]) => *v,
            other => panic!("field {tag}: {other:?}"),
        }
    };
    let index_of = |s: &str| p.string_table.iter().position(|x| x == s).unwrap() as u64;
    assert_eq!(varint_field(7), index_of(RICH_DROP_FRAMES));
    assert_eq!(varint_field(8), index_of(RICH_KEEP_FRAMES));
    assert_eq!(varint_field(9), 1_700_000_000_123_456_789);
    assert_eq!(varint_field(10), 2_500_000_000);
    assert_eq!(varint_field(12), 524_288);
    assert_eq!(varint_field(14), index_of("inuse_space"));
    assert_eq!(varint_field(15), index_of(RICH_DOC_URL));
    // Messages and strings are length-delimited; comment (13) is packed.
    for tag in [1, 2, 3, 4, 5, 6, 11, 13] {
        assert!(
            fields[&tag].iter().all(|(wire, _)| *wire == 2),
            "field {tag}"
        );
    }
    assert_eq!(fields[&1].len(), 4);
    assert_eq!(fields[&6].len(), p.string_table.len());
}
