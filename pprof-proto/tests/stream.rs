//! Streaming encoding: `Profile::write_plain` and `ProfileWriter` produce exactly prost's bytes.

mod common;

use std::io::Read;

use pprof_proto::{
    gzip_encoder, BuildError, FrameLine, LocationId, MappingInfo, Profile, ProfileBuilder,
    SampleLabel, WriteError,
};

use common::rich_profile;

#[test]
fn write_plain_is_encode_plain() {
    let mut p = rich_profile();
    p.location[2].is_folded = true;
    let mut out = Vec::new();
    p.write_plain(&mut out).unwrap();
    assert_eq!(out, p.encode_plain());

    // Large enough to cross the writer's chunk size several times, with negative values.
    let mut b = ProfileBuilder::new();
    b.add_sample_type("a", "count").set_period(-1);
    let f = b.function("f", "f", "f.go", 1);
    let mut locs = Vec::new();
    for i in 0..500u64 {
        locs.push(
            b.location(
                i,
                None,
                i * 16,
                &[FrameLine {
                    function: f,
                    line: i as i64,
                    column: 0,
                }],
            )
            .unwrap(),
        );
    }
    for i in 0..2000usize {
        b.add_sample(&locs[i % 300..i % 300 + 150], &[-(i as i64)], &[])
            .unwrap();
    }
    let p = b.build();
    let mut out = Vec::new();
    p.write_plain(&mut out).unwrap();
    assert!(out.len() > 200 * 1024);
    assert_eq!(out, p.encode_plain());
}

/// The same sequence of calls on a builder (samples kept) and on a writer (samples streamed),
/// with tables growing between samples as a heap-profile build does.
fn build_both(stream: bool) -> (Vec<u8>, Option<Profile>) {
    let mut b = ProfileBuilder::new();
    b.set_period_type("space", "bytes").set_period(524_288);
    for (t, u) in [("alloc_objects", "count"), ("alloc_space", "bytes")] {
        b.add_sample_type(t, u);
    }
    b.set_time_nanos(1_700_000_000_000_000_000);
    let m = b.mapping(&MappingInfo {
        memory_start: 0x40_0000,
        memory_limit: 0x50_0000,
        filename: "/bin/app",
        build_id: "id",
        ..MappingInfo::default()
    });
    let f = b.function("main.a", "main.a", "/a.go", 3);
    let l1 = b
        .location(
            1,
            Some(m),
            0x40_1000,
            &[FrameLine {
                function: f,
                line: 4,
                column: 0,
            }],
        )
        .unwrap();
    let label = [SampleLabel::Num {
        key: "bytes",
        value: 16,
        unit: "",
    }];
    // A sample added before streaming starts.
    b.add_sample(&[l1], &[1, 16], &label).unwrap();

    fn rest<B: std::ops::DerefMut<Target = ProfileBuilder>>(
        b: &mut B,
        m: pprof_proto::MappingId,
        l1: LocationId,
        mut add: impl FnMut(&mut B, &[LocationId], &[i64], &[SampleLabel<'_>]),
    ) {
        for i in 0..200u64 {
            let f = b.function(&format!("main.f{i}"), &format!("main.f{i}"), "/f.go", 10);
            let l = b
                .location(
                    100 + i,
                    Some(m),
                    0x40_2000 + i,
                    &[FrameLine {
                        function: f,
                        line: 11,
                        column: 0,
                    }],
                )
                .unwrap();
            let label = SampleLabel::Num {
                key: "bytes",
                value: i as i64,
                unit: "",
            };
            add(b, &[l, l1], &[i as i64, -7], &[label]);
            if i == 50 {
                // Through the builder in the middle: still written in call order.
                b.add_sample(
                    &[l1],
                    &[9, 9],
                    &[SampleLabel::Str {
                        key: "k",
                        value: "v",
                    }],
                )
                .unwrap();
            }
        }
        b.set_mapping_flags(m, true, false, false, false).unwrap();
        b.add_comment("done");
    }

    if stream {
        let mut w = b.into_writer(Vec::new()).unwrap();
        rest(&mut w, m, l1, |w, s, v, l| w.add_sample(s, v, l).unwrap());
        assert_eq!(w.samples_written(), 202);
        let (out, tables) = w.finish().unwrap();
        assert!(tables.sample.is_empty());
        (out, None)
    } else {
        struct Plain(ProfileBuilder);
        impl std::ops::Deref for Plain {
            type Target = ProfileBuilder;
            fn deref(&self) -> &ProfileBuilder {
                &self.0
            }
        }
        impl std::ops::DerefMut for Plain {
            fn deref_mut(&mut self) -> &mut ProfileBuilder {
                &mut self.0
            }
        }
        let mut p = Plain(b);
        rest(&mut p, m, l1, |p, s, v, l| p.0.add_sample(s, v, l).unwrap());
        let p = p.0.build();
        (p.encode_plain(), Some(p))
    }
}

#[test]
fn writer_output_is_the_builders_encoding() {
    let (streamed, _) = build_both(true);
    let (kept, profile) = build_both(false);
    assert_eq!(streamed, kept);
    let p = profile.unwrap();
    assert_eq!(p.sample.len(), 202);
    assert!(p.mapping[0].has_functions);
    assert_eq!(Profile::decode(&streamed).unwrap(), p);
}

#[test]
fn writer_into_gzip_inflates_to_the_plain_encoding() {
    let p = rich_profile();
    let mut b = ProfileBuilder::new();
    for (t, u) in [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ] {
        b.add_sample_type(t, u);
    }
    let mut w = b.into_writer(gzip_encoder(Vec::new())).unwrap();
    w.add_sample(&[], &[1, 2, 3, 4], &[]).unwrap();
    let (gz, _) = w.finish().unwrap();
    let gz = gz.finish().unwrap();
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut inflated)
        .unwrap();
    let decoded = Profile::decode(&gz).unwrap();
    assert_eq!(inflated, decoded.encode_plain());
    assert_eq!(decoded.sample[0].value, [1, 2, 3, 4]);
    assert_eq!(decoded.sample_type, p.sample_type);
}

#[test]
fn writer_checks_samples_like_the_builder() {
    let mut b = ProfileBuilder::new();
    b.add_sample_type("a", "count");
    let mut w = b.into_writer(Vec::new()).unwrap();
    assert!(matches!(
        w.add_sample(&[LocationId(1)], &[1], &[]),
        Err(WriteError::Build(BuildError::ForeignId {
            kind: "location",
            id: 1
        }))
    ));
    assert!(matches!(
        w.add_sample(&[], &[1, 2], &[]),
        Err(WriteError::Build(BuildError::ValueCount {
            got: 2,
            expected: 1
        }))
    ));
    w.add_sample(&[], &[1], &[]).unwrap();
    w.add_sample_type("b", "count");
    let late = BuildError::SampleTypeAfterSamples {
        declared: 2,
        written: 1,
    };
    match w.add_sample(&[], &[1, 2], &[]) {
        Err(WriteError::Build(e)) => assert_eq!(e, late),
        other => panic!("{other:?}"),
    }
    match w.finish() {
        Err(WriteError::Build(e)) => assert_eq!(e, late),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("finish accepted a late sample type"),
    }
}

#[test]
fn mapping_flags_can_be_set_later() {
    let mut b = ProfileBuilder::new();
    let info = MappingInfo {
        memory_start: 1,
        memory_limit: 2,
        filename: "/x",
        ..MappingInfo::default()
    };
    let m = b.mapping(&info);
    b.set_mapping_flags(m, true, true, false, true).unwrap();
    assert_eq!(b.mapping(&info), pprof_proto::MappingId(2));
    assert_eq!(
        b.mapping(&MappingInfo {
            has_functions: true,
            has_filenames: true,
            has_inline_frames: true,
            ..info
        }),
        m
    );
    assert!(b
        .set_mapping_flags(pprof_proto::MappingId(3), true, true, true, true)
        .is_err());
    let p = b.build();
    assert!(p.mapping[0].has_functions && p.mapping[0].has_filenames);
    assert!(!p.mapping[0].has_line_numbers && p.mapping[0].has_inline_frames);
    assert!(!p.mapping[1].has_functions);
}
