//! A minimal blocking HTTP/1.1 client for push requests, in clear or over TLS (rustls, see
//! [`super::tls`]): one connection per request (`Connection: close`), every step bounded by the request's deadline, the response read into at
//! most [`MAX_RESPONSE`] bytes. Push sends one request every interval per process and sink, so a
//! connection pool would buy little; a sink that stalls holds only its own worker thread.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::{Credentials, Request};

/// Most bytes of a response read (status line, headers and the start of the body, for the log).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Most characters of an answer's body handed to a classifier (enough for a Connect error's JSON).
pub const MAX_BODY_CHARS: usize = 8192;

/// Where a sink is: host, port and a path prefix (no trailing slash; may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// `reason` is the metric label; `retry` whether sending again may succeed.
    Failed {
        reason: &'static str,
        retry: bool,
        detail: String,
    },
}

fn failed(reason: &'static str, retry: bool, detail: impl Into<String>) -> Outcome {
    Outcome::Failed {
        reason,
        retry,
        detail: detail.into(),
    }
}

fn io_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout",
        _ => "io",
    }
}

/// A connection: plain TCP or TLS over it. Timeouts are set on the TCP socket in both cases.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Runs the TLS handshake on `tcp` for `host` before anything is sent, each read and write
/// bounded by `deadline`. Any failure (certificate chain, name, protocol, a peer that is not TLS)
/// is `reason="tls"`, retried; a timeout stays `timeout`.
fn handshake(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
    deadline: Instant,
) -> Result<Conn, Outcome> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        failed(
            "tls",
            false,
            format!("{host:?} is not a TLS server name: {e}"),
        )
    })?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| failed("tls", true, format!("TLS setup: {e}")))?;
    while conn.is_handshaking() {
        let Some(t) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Err(failed("timeout", true, "TLS handshake timed out"));
        };
        if let Err(e) = tcp
            .set_read_timeout(Some(t))
            .and_then(|_| tcp.set_write_timeout(Some(t)))
        {
            return Err(failed("io", true, e.to_string()));
        }
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(failed("timeout", true, "TLS handshake timed out"))
            }
            Err(e) => {
                return Err(failed(
                    "tls",
                    true,
                    format!("TLS handshake with {host}: {e}"),
                ))
            }
        }
    }
    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

/// POSTs `req` to `ep` within `timeout` (connect, handshake, send and the whole answer), over
/// TLS with `tls`, else in clear.
pub fn post(
    ep: &Endpoint,
    req: &Request,
    creds: &Credentials,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Outcome {
    post_with(ep, req, creds, timeout, &[], classify_http, tls)
}

/// [`post`] with `headers` added to the request and the answer's status and body (control
/// characters removed, at most [`MAX_BODY_CHARS`] characters) judged by `classify` instead of
/// [`classify_http`].
pub fn post_with(
    ep: &Endpoint,
    req: &Request,
    creds: &Credentials,
    timeout: Duration,
    headers: &[(&str, &str)],
    classify: fn(u16, &str) -> Outcome,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let left = |d: Instant| {
        d.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let addrs: Vec<_> = match (ep.host.as_str(), ep.port).to_socket_addrs() {
        Ok(a) => a.take(8).collect(),
        Err(e) => return failed("connect", true, format!("resolving {}: {e}", ep.host)),
    };
    let mut stream = None;
    let mut last = String::from("no address");
    for a in addrs {
        let Some(t) = left(deadline) else {
            return failed("timeout", true, "connect timed out");
        };
        match TcpStream::connect_timeout(&a, t) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    let Some(tcp) = stream else {
        return failed("connect", true, last);
    };
    let _ = tcp.set_nodelay(true);
    let mut stream = match tls {
        Some(config) => match handshake(config, &ep.host, tcp, deadline) {
            Ok(c) => c,
            Err(o) => return o,
        },
        None => Conn::Plain(tcp),
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: goheap/{}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        req.path_and_query,
        ep.host,
        ep.port,
        env!("CARGO_PKG_VERSION"),
        req.content_type,
        req.body.len()
    );
    if let Some(a) = &creds.authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(t) = &creds.tenant {
        head.push_str(&format!("X-Scope-OrgID: {t}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // Write in chunks so the deadline is checked between them.
    for chunk in std::iter::once(head.as_bytes()).chain(req.body.chunks(64 * 1024)) {
        let Some(t) = left(deadline) else {
            return failed("timeout", true, "sending timed out");
        };
        if let Err(e) = stream
            .tcp()
            .set_write_timeout(Some(t))
            .and_then(|_| stream.write_all(chunk))
        {
            return failed(io_reason(&e), true, format!("sending: {e}"));
        }
    }
    if let Err(e) = stream.flush() {
        return failed(io_reason(&e), true, format!("sending: {e}"));
    }
    let mut resp = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let status = loop {
        let Some(t) = left(deadline) else {
            return failed("timeout", true, "no answer in time");
        };
        if let Err(e) = stream.tcp().set_read_timeout(Some(t)) {
            return failed("io", true, e.to_string());
        }
        match stream.read(&mut buf) {
            Ok(0) => break parse_status(&resp),
            // A TLS peer that closes without close_notify after its answer: the answer stands.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break parse_status(&resp),
            Ok(n) => {
                let room = MAX_RESPONSE.saturating_sub(resp.len());
                resp.extend_from_slice(&buf[..n.min(room)]);
                if let Some(s) = parse_status(&resp) {
                    // The status line is enough; the body is read only for a failure's detail.
                    if (200..300).contains(&s) || resp.len() >= MAX_RESPONSE {
                        break Some(s);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if let Some(s) = parse_status(&resp) {
                    break Some(s);
                }
                return failed(io_reason(&e), true, format!("reading the answer: {e}"));
            }
        }
    };
    let Some(status) = status else {
        return failed("io", true, "the answer is not HTTP");
    };
    classify(status, &body_of(&resp))
}

/// The HTTP status rules: 2xx success; 408, 429 and 5xx retried; any other 4xx not. The detail
/// keeps the first 300 characters of the body.
pub fn classify_http(status: u16, body: &str) -> Outcome {
    let body: String = body.chars().take(300).collect();
    match status {
        200..=299 => Outcome::Ok,
        408 | 429 => failed("http_4xx", true, format!("HTTP {status}: {body}")),
        400..=499 => failed("http_4xx", false, format!("HTTP {status}: {body}")),
        _ => failed("http_5xx", true, format!("HTTP {status}: {body}")),
    }
}

/// The status code of a response whose status line is complete.
fn parse_status(resp: &[u8]) -> Option<u16> {
    let end = memchr::memchr(b'\n', resp)?;
    let line = std::str::from_utf8(&resp[..end]).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn body_of(resp: &[u8]) -> String {
    let start = memchr::memmem::find(resp, b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    let b = String::from_utf8_lossy(&resp[start..]);
    let b: String = b
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_BODY_CHARS)
        .collect();
    b.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.1 50"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(
            body_of(b"HTTP/1.1 400 Bad\r\nA: b\r\n\r\nbad profile\n"),
            "bad profile"
        );
    }
}
