//! Pyroscope's Connect push API: `POST {prefix}/push.v1.PusherService/Push` over the Connect
//! protocol (unary, `Content-Type: application/proto`, `Connect-Protocol-Version: 1`,
//! `Connect-Timeout-Ms` the `--push-timeout`), the body a protobuf `push.v1.PushRequest`.
//!
//! The messages below are written by hand with prost's derive, field for field from Pyroscope's
//! published API module **github.com/grafana/pyroscope/api v1.6.0** (`push/v1/push.proto`,
//! `types/v1/types.proto`; `RawProfileSeries.annotations` is left out: Pyroscope drops it on push).
//! `fixtures/pyroscope` decodes our requests with that release's generated types and its
//! `pushv1connect` handler, so a mismatch fails `tests/push_pyroscope.rs`.
//!
//! One request per process and interval with up to two series, the same two profiles as
//! `/ingest` ([`super::pyroscope`]): the alloc delta (`alloc_objects`, `alloc_space` over the
//! interval) and the in-use snapshot (`inuse_objects`, `inuse_space` at its end), each a series
//! whose one `RawSample.raw_profile` is the gzipped pprof profile. Labels: `__name__="memory"` (the
//! name Pyroscope gives Go heap profiles), `__delta__="false"` (the agent computed the delta; the
//! server must not subtract consecutive profiles), `service_name` and the process labels, sorted
//! by name, empty values left out.
//!
//! A non-2xx answer carries a Connect error (`{"code":"unavailable","message":"..."}`); its code
//! decides the retry as for gRPC: `unavailable`, `deadline_exceeded`, `resource_exhausted` and
//! `aborted` are retried, every other code is the receiver refusing this payload. An answer
//! without a Connect error body (a proxy's page) falls back to the HTTP status rules.

use std::hash::{Hash, Hasher};

use prost::Message;

use super::client::{Endpoint, Outcome};
use super::{select_sample_types, PushItem, PushLabels, Request};

/// `push.v1.PusherService/Push` (pushv1connect.PusherServicePushProcedure).
pub const PUSH_PROCEDURE: &str = "/push.v1.PusherService/Push";

/// Headers of every request besides those client.rs writes: the Connect protocol version and the
/// request's deadline, `timeout` in whole milliseconds (at most 10 digits, as the protocol allows).
pub fn headers(timeout: std::time::Duration) -> [(&'static str, String); 2] {
    [
        ("Connect-Protocol-Version", "1".to_string()),
        (
            "Connect-Timeout-Ms",
            timeout.as_millis().clamp(1, 9_999_999_999).to_string(),
        ),
    ]
}

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries` (without `annotations`, tag 3).
#[derive(Clone, PartialEq, Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `push.v1.RawSample`.
#[derive(Clone, PartialEq, Message)]
pub struct RawSample {
    /// The pprof profile, gzipped.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// A UUID naming this profile (`ID` in the proto).
    #[prost(string, tag = "2")]
    pub id: String,
}

/// The label set of one series, sorted by name; values longer than 256 characters are cut.
pub fn labels(l: &PushLabels) -> Vec<LabelPair> {
    let service = if l.service_name.is_empty() {
        "unknown"
    } else {
        &l.service_name
    };
    let pid = l.pid.to_string();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("__name__", "memory"),
        ("__delta__", "false"),
        ("service_name", service),
        ("pid", &pid),
        ("binary", &l.binary),
        ("go_version", &l.go_version),
        ("container_id", &l.container_id),
        ("pod_uid", &l.pod_uid),
        ("namespace", &l.namespace),
        ("pod", &l.pod),
        ("container", &l.container),
        ("node", &l.node),
    ];
    pairs.retain(|(_, v)| !v.is_empty());
    pairs.sort_unstable();
    pairs
        .into_iter()
        .map(|(k, v)| LabelPair {
            name: k.to_string(),
            value: v.chars().take(256).collect(),
        })
        .collect()
}

/// A UUID (RFC 9562 version 8: custom bits) derived from the profile's identity — process, node,
/// end of interval and kind — so a retried request carries the same id.
fn profile_id(item: &PushItem, kind: &str) -> String {
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            salt,
            item.labels.pid,
            &item.labels.node,
            item.until_unix_nano,
            kind,
        )
            .hash(&mut h);
        h.finish()
    };
    let b = ((half(1) as u128) << 64) | half(2) as u128;
    // Version 8 in bits 48..52 from the top, variant 0b10 in bits 64..66.
    let b = (b & !(0xf << 76) | (0x8 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The protobuf `PushRequest` of one item.
pub fn push_request(item: &PushItem) -> PushRequest {
    let labels = labels(&item.labels);
    let mut series = Vec::with_capacity(2);
    let mut add = |p: &pprof_proto::Profile, kind: &str| {
        series.push(RawProfileSeries {
            labels: labels.clone(),
            samples: vec![RawSample {
                raw_profile: p.encode_gzip(),
                id: profile_id(item, kind),
            }],
        })
    };
    if let Some(d) = &item.alloc_delta {
        add(
            &select_sample_types(d, &["alloc_objects", "alloc_space"]),
            "alloc",
        );
    }
    add(
        &select_sample_types(&item.inuse, &["inuse_objects", "inuse_space"]),
        "inuse",
    );
    PushRequest { series }
}

/// The one request for an item, with the number of profiles it carries (1 or 2).
pub fn requests(ep: &Endpoint, item: &PushItem) -> Vec<(Request, u64)> {
    let req = push_request(item);
    let n = req.series.len() as u64;
    vec![(
        Request {
            path_and_query: format!("{}{PUSH_PROCEDURE}", ep.prefix),
            content_type: "application/proto".into(),
            body: req.encode_to_vec(),
        },
        n,
    )]
}

/// The Connect error of a non-2xx answer's body: (code, message), each at most 300 characters.
fn connect_error(body: &str) -> Option<(String, String)> {
    // The body may be chunked: take the outermost JSON object.
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    let v: serde_json::Value = serde_json::from_str(body.get(start..=end)?).ok()?;
    let code = v.get("code")?.as_str()?;
    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let cut = |s: &str| s.chars().filter(|c| !c.is_control()).take(300).collect();
    Some((cut(code), cut(message)))
}

/// What an answer means for a Connect unary call: 2xx is success; otherwise the Connect error
/// code decides the retry (see the module doc), and the metric reason stays `http_4xx`/`http_5xx`
/// by status.
pub fn classify(status: u16, body: &str) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Ok;
    }
    let Some((code, message)) = connect_error(body) else {
        return super::client::classify_http(status, body);
    };
    let retry = matches!(
        code.as_str(),
        "unavailable" | "deadline_exceeded" | "resource_exhausted" | "aborted"
    );
    Outcome::Failed {
        reason: if status < 500 { "http_4xx" } else { "http_5xx" },
        retry,
        detail: format!("HTTP {status}, Connect error {code}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_empty_ones_left_out() {
        let l = PushLabels {
            service_name: "api".into(),
            pid: 7,
            binary: "api".into(),
            node: "n1".into(),
            ..Default::default()
        };
        let got: Vec<(String, String)> =
            labels(&l).into_iter().map(|p| (p.name, p.value)).collect();
        let names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "__delta__",
                "__name__",
                "binary",
                "node",
                "pid",
                "service_name"
            ]
        );
        assert_eq!(got[1].1, "memory");
        assert_eq!(got[0].1, "false");
    }

    #[test]
    fn connect_errors_decide_the_retry() {
        let body = r#"{"code":"unavailable","message":"try later"}"#;
        assert!(matches!(
            classify(503, body),
            Outcome::Failed {
                retry: true,
                reason: "http_5xx",
                ..
            }
        ));
        // aborted is 409 in HTTP terms, but Connect (as gRPC) says retry.
        assert!(matches!(
            classify(409, r#"{"code":"aborted"}"#),
            Outcome::Failed {
                retry: true,
                reason: "http_4xx",
                ..
            }
        ));
        // internal is a 500 but not retried: the receiver failed on this payload.
        assert!(matches!(
            classify(500, "3a\r\n{\"code\":\"internal\",\"message\":\"x\"}\r\n0"),
            Outcome::Failed { retry: false, .. }
        ));
        // No Connect error body: HTTP rules (502 from a proxy is retried).
        assert!(matches!(
            classify(502, "<html>bad gateway</html>"),
            Outcome::Failed { retry: true, .. }
        ));
        assert!(matches!(classify(200, ""), Outcome::Ok));
        // A long message does not hide the code.
        let long = format!(r#"{{"code":"aborted","message":"{}"}}"#, "x".repeat(2000));
        assert!(matches!(
            classify(409, &long),
            Outcome::Failed { retry: true, .. }
        ));
    }
}
