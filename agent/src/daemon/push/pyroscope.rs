//! Pyroscope's HTTP ingest API: `POST {prefix}/ingest?name=SERVICE{labels}&from=S&until=S&format=pprof`
//! with a `multipart/form-data` body whose `profile` part is a gzipped pprof profile. Two uploads per
//! process and interval: the alloc delta (`alloc_objects`, `alloc_space` over `from..until`) and the
//! in-use snapshot (`inuse_objects`, `inuse_space` at `until`). The agent computes the deltas itself,
//! so every upload carries `__delta__=false` (the server must not subtract consecutive uploads).

use super::client::Endpoint;
use super::{select_sample_types, PushItem, PushLabels, Request};

/// Multipart boundary (never occurs in a gzip stream's framing that matters: the part length is
/// implied by the boundary, so it must not occur in the data; it is 40 random-looking bytes).
const BOUNDARY: &str = "goheap-3f9a1c2e7b5d4a60b8e1f2c3d4e5f6a7b8c9";

/// Replaces the characters Pyroscope's application-name syntax reserves (`{`, `}`, `,`, `=`) and
/// control characters, so a label value cannot end or split the label set.
fn clean(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            '{' | '}' | ',' | '=' | '"' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .take(256)
        .collect()
}

/// `SERVICE{k=v,...,__delta__=false}`; empty values are left out.
pub fn app_name(l: &PushLabels) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("service_name", clean(&l.service_name)),
        ("pid", l.pid.to_string()),
        ("binary", clean(&l.binary)),
        ("go_version", clean(&l.go_version)),
        ("container_id", clean(&l.container_id)),
        ("pod_uid", clean(&l.pod_uid)),
        ("namespace", clean(&l.namespace)),
        ("pod", clean(&l.pod)),
        ("container", clean(&l.container)),
        ("node", clean(&l.node)),
    ];
    pairs.retain(|(_, v)| !v.is_empty());
    pairs.push(("__delta__", "false".into()));
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let service = if l.service_name.is_empty() {
        "unknown".to_string()
    } else {
        clean(&l.service_name)
    };
    format!("{service}{{{}}}", body.join(","))
}

fn multipart(gz: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(gz.len() + 256);
    b.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    b.extend_from_slice(gz);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// The uploads for one item, each with the number of profiles it carries (1).
pub fn requests(ep: &Endpoint, item: &PushItem) -> Vec<(Request, u64)> {
    let name = app_name(&item.labels);
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let from = item.from_unix_nano / 1_000_000_000;
    let until = (item.until_unix_nano / 1_000_000_000).max(from + 1);
    let mut out = Vec::new();
    let mut push = |p: &pprof_proto::Profile, from: u64| {
        out.push((
            Request {
                path_and_query: format!(
                    "{}/ingest?name={}&from={from}&until={until}&format=pprof",
                    ep.prefix,
                    enc(&name)
                ),
                content_type: format!("multipart/form-data; boundary={BOUNDARY}"),
                body: multipart(&p.encode_gzip()),
            },
            1,
        ))
    };
    if let Some(d) = &item.alloc_delta {
        push(
            &select_sample_types(d, &["alloc_objects", "alloc_space"]),
            from,
        );
    }
    push(
        &select_sample_types(&item.inuse, &["inuse_objects", "inuse_space"]),
        until.saturating_sub(1),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_break_the_label_set() {
        let l = PushLabels {
            service_name: "api".into(),
            pid: 7,
            binary: "a,b=c}".into(),
            ..Default::default()
        };
        assert_eq!(
            app_name(&l),
            "api{service_name=api,pid=7,binary=a_b_c_,__delta__=false}"
        );
    }
}
