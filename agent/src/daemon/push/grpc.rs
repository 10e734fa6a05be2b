//! OTLP over gRPC: one unary call `ProfilesService/Export` per request, over HTTP/2 in clear
//! (`otlp+grpc`, prior knowledge, as the collector's gRPC receiver accepts) or over TLS with ALPN
//! `h2` (`otlp+grpcs`, rustls, see [`super::tls`]), with hyper's HTTP/2 client and the
//! gRPC framing done here: a 5-byte prefix (uncompressed flag, big-endian length) before the
//! protobuf message, `content-type: application/grpc`, `te: trailers`, and the answer's
//! `grpc-status` read from the trailers (or the headers of a trailers-only answer).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::client::{Endpoint, Outcome};
use super::{Credentials, Request};

/// The method OTLP profiles are exported with.
pub const EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

/// Most bytes of an answer kept (the `ExportProfilesServiceResponse`, or an error's body).
const MAX_ANSWER: usize = 64 * 1024;

fn failed(reason: &'static str, retry: bool, detail: impl Into<String>) -> Outcome {
    Outcome::Failed {
        reason,
        retry,
        detail: detail.into(),
    }
}

/// gRPC status codes worth retrying (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED).
fn retryable(code: u32) -> bool {
    matches!(code, 14 | 4 | 8 | 10)
}

/// Sends `req.body` (an encoded `ExportProfilesServiceRequest`) within `timeout`, on `rt`; over
/// TLS with `tls` (whose ALPN must offer `h2`), else in clear.
pub fn post(
    rt: &tokio::runtime::Runtime,
    ep: &Endpoint,
    req: &Request,
    creds: &Credentials,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Outcome {
    rt.block_on(async {
        let call = async {
            let stream = match tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await
            {
                Ok(s) => s,
                Err(e) => {
                    return failed(
                        "connect",
                        true,
                        format!("connecting to {}:{}: {e}", ep.host, ep.port),
                    )
                }
            };
            let _ = stream.set_nodelay(true);
            match tls {
                None => call(ep, req, creds, stream, "http").await,
                Some(config) => {
                    let name = match ServerName::try_from(ep.host.clone()) {
                        Ok(n) => n,
                        Err(e) => {
                            return failed(
                                "tls",
                                false,
                                format!("{:?} is not a TLS server name: {e}", ep.host),
                            )
                        }
                    };
                    let connector = tokio_rustls::TlsConnector::from(config.clone());
                    let stream = match connector.connect(name, stream).await {
                        Ok(s) => s,
                        Err(e) => {
                            return failed(
                                "tls",
                                true,
                                format!("TLS handshake with {}: {e}", ep.host),
                            )
                        }
                    };
                    if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                        return failed(
                            "tls",
                            true,
                            format!(
                                "{}:{} did not agree to HTTP/2 over TLS (ALPN h2); is it a gRPC endpoint?",
                                ep.host, ep.port
                            ),
                        );
                    }
                    call(ep, req, creds, stream, "https").await
                }
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(o) => o,
            Err(_) => failed("timeout", true, "no gRPC answer in time"),
        }
    })
}

async fn call<S>(
    ep: &Endpoint,
    req: &Request,
    creds: &Credentials,
    stream: S,
    scheme: &str,
) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
        {
            Ok(x) => x,
            Err(e) => return failed("io", true, format!("HTTP/2 handshake: {e}")),
        };
    let driver = tokio::spawn(conn);
    let Ok(len) = u32::try_from(req.body.len()) else {
        driver.abort();
        return failed("io", false, "message over 4 GiB");
    };
    let mut framed = Vec::with_capacity(req.body.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&req.body);
    let mut b = hyper::Request::builder()
        .method("POST")
        .uri(format!(
            "{scheme}://{}:{}{}{}",
            ep.host, ep.port, ep.prefix, EXPORT_PATH
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", concat!("goheap/", env!("CARGO_PKG_VERSION")));
    if let Some(a) = &creds.authorization {
        b = b.header("authorization", a);
    }
    if let Some(t) = &creds.tenant {
        b = b.header("x-scope-orgid", t);
    }
    let request = match b.body(Full::new(Bytes::from(framed))) {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return failed("io", false, format!("building the request: {e}"));
        }
    };
    let outcome = async {
        let resp = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => return failed("io", true, format!("sending: {e}")),
        };
        let (parts, mut body) = resp.into_parts();
        if !parts.status.is_success() {
            let code = parts.status.as_u16();
            let (reason, retry) = match code {
                408 | 429 => ("http_4xx", true),
                400..=499 => ("http_4xx", false),
                _ => ("http_5xx", true),
            };
            return failed(reason, retry, format!("HTTP {code} from a gRPC endpoint"));
        }
        // Read frames up to the cap, then the trailers.
        let mut kept = 0usize;
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        kept = kept.saturating_add(d.len());
                        if kept > MAX_ANSWER {
                            return failed("io", true, "gRPC answer too large");
                        }
                    } else if let Ok(t) = f.into_trailers() {
                        trailers = Some(t);
                    }
                }
                Err(e) => return failed("io", true, format!("reading the answer: {e}")),
            }
        }
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        let message = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        match status {
            Some(0) => Outcome::Ok,
            Some(c) if retryable(c) => failed("grpc", true, format!("grpc-status {c}: {message}")),
            Some(c) => failed("grpc", false, format!("grpc-status {c}: {message}")),
            None => failed("io", true, "gRPC answer without grpc-status"),
        }
    }
    .await;
    driver.abort();
    outcome
}
