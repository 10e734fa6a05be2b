//! OTLP profiles (`opentelemetry.proto.collector.profiles.v1development`) over HTTP/protobuf:
//! `POST {prefix}/v1development/profiles`, `Content-Type: application/x-protobuf`.
//!
//! The messages below are written by hand with prost's derive, field for field from the profiles
//! proto as the OpenTelemetry Collector v0.161.0 speaks it (pdata v1.67.0: one `sample_type` per
//! `Profile`, a request-level `ProfilesDictionary` with a `stack_table`, `Sample.stack_index`).
//! The protos changed incompatibly between releases; `fixtures/otelcol` pins the collector the
//! tests decode our requests with, so a mismatch fails `tests/push_otlp.rs`.
//!
//! One request per process and interval: a `ResourceProfiles` whose resource carries the semantic
//! conventions' attributes (`service.name`, `process.pid`, `process.executable.name`,
//! `process.executable.path`, `container.id`, `k8s.pod.uid`, `host.name`), with up to four
//! `Profile`s: `alloc_objects`/`alloc_space` over the interval and `inuse_objects`/`inuse_space` at
//! its end, values unsampled exactly as in the pprof profile.

use std::collections::HashMap;

use prost::Message;

use super::client::Endpoint;
use super::{select_sample_types, PushItem, PushLabels, Request};

#[derive(Clone, PartialEq, Message)]
pub struct ExportProfilesServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_profiles: Vec<ResourceProfiles>,
    #[prost(message, optional, tag = "2")]
    pub dictionary: Option<ProfilesDictionary>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProfilesDictionary {
    #[prost(message, repeated, tag = "1")]
    pub mapping_table: Vec<Mapping>,
    #[prost(message, repeated, tag = "2")]
    pub location_table: Vec<Location>,
    #[prost(message, repeated, tag = "3")]
    pub function_table: Vec<Function>,
    #[prost(message, repeated, tag = "4")]
    pub link_table: Vec<Link>,
    #[prost(string, repeated, tag = "5")]
    pub string_table: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub attribute_table: Vec<KeyValueAndUnit>,
    #[prost(message, repeated, tag = "7")]
    pub stack_table: Vec<Stack>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceProfiles {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_profiles: Vec<ScopeProfiles>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValueAndUnit {
    #[prost(int32, tag = "1")]
    pub key_strindex: i32,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    #[prost(int32, tag = "3")]
    pub unit_strindex: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 3")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(int64, tag = "3")]
        IntValue(i64),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeProfiles {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub profiles: Vec<OtlpProfile>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct OtlpProfile {
    #[prost(message, optional, tag = "1")]
    pub sample_type: Option<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(uint64, tag = "4")]
    pub duration_nano: u64,
    #[prost(message, optional, tag = "5")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "6")]
    pub period: i64,
    #[prost(bytes = "vec", tag = "7")]
    pub profile_id: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct ValueType {
    #[prost(int32, tag = "1")]
    pub type_strindex: i32,
    #[prost(int32, tag = "2")]
    pub unit_strindex: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(int32, tag = "1")]
    pub stack_index: i32,
    #[prost(int64, repeated, tag = "4")]
    pub values: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Stack {
    #[prost(int32, repeated, tag = "1")]
    pub location_indices: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(int32, tag = "1")]
    pub mapping_index: i32,
    #[prost(uint64, tag = "2")]
    pub address: u64,
    #[prost(message, repeated, tag = "3")]
    pub lines: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(int32, tag = "1")]
    pub function_index: i32,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(int32, tag = "1")]
    pub name_strindex: i32,
    #[prost(int32, tag = "2")]
    pub system_name_strindex: i32,
    #[prost(int32, tag = "3")]
    pub filename_strindex: i32,
    #[prost(int64, tag = "4")]
    pub start_line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub memory_start: u64,
    #[prost(uint64, tag = "2")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "3")]
    pub file_offset: u64,
    #[prost(int32, tag = "4")]
    pub filename_strindex: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Link {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
}

/// Builds the dictionary shared by the request's profiles. Index 0 of every table is the
/// zero value, as the proto requires.
#[derive(Default)]
struct Dict {
    d: ProfilesDictionary,
    strings: HashMap<String, i32>,
    stacks: HashMap<Vec<i32>, i32>,
}

/// Tables this large are refused (a dictionary index is an int32).
const MAX_TABLE: usize = i32::MAX as usize / 2;

impl Dict {
    fn new() -> Dict {
        let mut d = Dict::default();
        d.d.string_table.push(String::new());
        d.strings.insert(String::new(), 0);
        d.d.mapping_table.push(Mapping::default());
        d.d.location_table.push(Location::default());
        d.d.function_table.push(Function::default());
        d.d.link_table.push(Link::default());
        d.d.attribute_table.push(KeyValueAndUnit::default());
        d.d.stack_table.push(Stack::default());
        d.stacks.insert(Vec::new(), 0);
        d
    }

    fn str(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.d.string_table.len().min(MAX_TABLE) as i32;
        self.d.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn stack(&mut self, locs: Vec<i32>) -> i32 {
        if let Some(&i) = self.stacks.get(&locs) {
            return i;
        }
        let i = self.d.stack_table.len().min(MAX_TABLE) as i32;
        self.d.stack_table.push(Stack {
            location_indices: locs.clone(),
        });
        self.stacks.insert(locs, i);
        i
    }
}

/// Per-pprof-profile index translation into the dictionary.
struct Imported {
    /// pprof location id -> dictionary location index.
    locations: HashMap<u64, i32>,
}

fn import(dict: &mut Dict, p: &pprof_proto::Profile) -> Imported {
    let s = |i: i64| {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    let mut mappings: HashMap<u64, i32> = HashMap::new();
    for m in &p.mapping {
        let fname = dict.str(s(m.filename));
        let i = dict.d.mapping_table.len().min(MAX_TABLE) as i32;
        dict.d.mapping_table.push(Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename_strindex: fname,
        });
        mappings.insert(m.id, i);
    }
    let mut functions: HashMap<u64, i32> = HashMap::new();
    for f in &p.function {
        let func = Function {
            name_strindex: dict.str(s(f.name)),
            system_name_strindex: dict.str(s(f.system_name)),
            filename_strindex: dict.str(s(f.filename)),
            start_line: f.start_line,
        };
        let i = dict.d.function_table.len().min(MAX_TABLE) as i32;
        dict.d.function_table.push(func);
        functions.insert(f.id, i);
    }
    let mut locations = HashMap::new();
    for l in &p.location {
        let loc = Location {
            mapping_index: mappings.get(&l.mapping_id).copied().unwrap_or(0),
            address: l.address,
            lines: l
                .line
                .iter()
                .map(|ln| Line {
                    function_index: functions.get(&ln.function_id).copied().unwrap_or(0),
                    line: ln.line,
                })
                .collect(),
        };
        let i = dict.d.location_table.len().min(MAX_TABLE) as i32;
        dict.d.location_table.push(loc);
        locations.insert(l.id, i);
    }
    Imported { locations }
}

/// One OTLP profile per sample type of `p` (values of that column; zero samples left out).
fn profiles_of(
    dict: &mut Dict,
    p: &pprof_proto::Profile,
    time_unix_nano: u64,
    duration_nano: u64,
    id_seed: u64,
) -> Vec<OtlpProfile> {
    let imported = import(dict, p);
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    let stacks: Vec<i32> = p
        .sample
        .iter()
        .map(|smp| {
            let locs: Vec<i32> = smp
                .location_id
                .iter()
                .map(|id| imported.locations.get(id).copied().unwrap_or(0))
                .collect();
            dict.stack(locs)
        })
        .collect();
    let period_type = p.period_type.map(|pt| ValueType {
        type_strindex: dict.str(&s(pt.r#type)),
        unit_strindex: dict.str(&s(pt.unit)),
    });
    p.sample_type
        .iter()
        .enumerate()
        .map(|(col, st)| {
            let sample_type = ValueType {
                type_strindex: dict.str(&s(st.r#type)),
                unit_strindex: dict.str(&s(st.unit)),
            };
            let samples = p
                .sample
                .iter()
                .zip(&stacks)
                .filter_map(|(smp, &stack_index)| {
                    let v = smp.value.get(col).copied().unwrap_or(0);
                    (v != 0).then(|| Sample {
                        stack_index,
                        values: vec![v],
                    })
                })
                .collect();
            OtlpProfile {
                sample_type: Some(sample_type),
                samples,
                time_unix_nano,
                duration_nano,
                period_type,
                period: p.period,
                profile_id: profile_id(id_seed, col as u64),
            }
        })
        .collect()
}

/// 16 bytes, distinct per process, interval and sample type (not all zero, as the spec asks).
fn profile_id(seed: u64, col: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(col + 1);
    let mut out = Vec::with_capacity(16);
    for _ in 0..2 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        out.extend_from_slice(&(x | 1).to_le_bytes());
    }
    out
}

fn attr_str(key: &str, v: &str) -> Option<KeyValue> {
    (!v.is_empty()).then(|| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
    })
}

/// Resource attributes of a process, per the semantic conventions (empty values left out).
pub fn resource(l: &PushLabels) -> Resource {
    let mut attributes: Vec<KeyValue> = [
        attr_str("service.name", &l.service_name),
        Some(KeyValue {
            key: "process.pid".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(l.pid as i64)),
            }),
        }),
        attr_str("process.executable.name", &l.binary),
        attr_str("process.executable.path", &l.executable),
        attr_str("process.runtime.name", "go"),
        attr_str("process.runtime.version", &l.go_version),
        attr_str("container.id", &l.container_id),
        attr_str("k8s.pod.uid", &l.pod_uid),
        attr_str("k8s.pod.name", &l.pod),
        attr_str("k8s.namespace.name", &l.namespace),
        attr_str("k8s.container.name", &l.container),
        attr_str("host.name", &l.node),
    ]
    .into_iter()
    .flatten()
    .collect();
    attributes.shrink_to_fit();
    Resource {
        attributes,
        dropped_attributes_count: 0,
    }
}

/// The export request for one item.
pub fn export_request(item: &PushItem) -> ExportProfilesServiceRequest {
    let mut dict = Dict::new();
    let seed = (item.labels.pid as u64) << 40 ^ item.until_unix_nano;
    let mut profiles = Vec::new();
    if let Some(d) = &item.alloc_delta {
        let d = select_sample_types(d, &["alloc_objects", "alloc_space"]);
        profiles.extend(profiles_of(
            &mut dict,
            &d,
            item.from_unix_nano,
            item.until_unix_nano.saturating_sub(item.from_unix_nano),
            seed,
        ));
    }
    let inuse = select_sample_types(&item.inuse, &["inuse_objects", "inuse_space"]);
    profiles.extend(profiles_of(
        &mut dict,
        &inuse,
        item.until_unix_nano,
        0,
        seed ^ 0x5555,
    ));
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(resource(&item.labels)),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "goheap".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                profiles,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(dict.d),
    }
}

/// The HTTP request for one item, with the number of process profiles it carries.
pub fn http_requests(ep: &Endpoint, item: &PushItem) -> Vec<(Request, u64)> {
    let body = export_request(item).encode_to_vec();
    vec![(
        Request {
            path_and_query: format!("{}/v1development/profiles", ep.prefix),
            content_type: "application/x-protobuf".into(),
            body,
        },
        1 + item.alloc_delta.is_some() as u64,
    )]
}

/// The gRPC request for one item (its body is the bare message; grpc.rs frames it).
pub fn grpc_requests(item: &PushItem) -> Vec<(Request, u64)> {
    vec![(
        Request {
            path_and_query: super::grpc::EXPORT_PATH.into(),
            content_type: "application/grpc".into(),
            body: export_request(item).encode_to_vec(),
        },
        1 + item.alloc_delta.is_some() as u64,
    )]
}
