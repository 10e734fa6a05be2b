//! The agent's HTTP endpoints, on one listener.
//!
//! A minimal HTTP/1.1 server on tokio: GET only, no request bodies, one request per connection
//! (`Connection: close`), request head capped at 16 KiB and 10 s, at most 64 connections at once.
//! That is all Prometheus, `go tool pprof` and curl need, and it avoids a web-framework dependency tree.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text format 0.0.4 |
//! | `/healthz` | `ok` |
//! | `/processes` | JSON: node, cycle count, Go processes and their state |
//! | `/debug/pprof/heap?pid=P` | the heap profile now, as `goheap profile` writes it |
//! | `/debug/pprof/allocs?pid=P&seconds=N` | allocations during the next N seconds (delta profile) |
//!
//! Bad parameters are 400 with a one-line reason, an unknown pid 404, a Go process that cannot be
//! profiled 409, and `--go-heap-profiler=disabled` makes profile endpoints 403.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error::Refusal;
use crate::process;

use super::collector::Shared;
use super::profiles;
use super::ProfilerMode;

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 64;
/// Profiles built at once (each is a full walk plus symbolization on a blocking thread).
const MAX_PROFILE_JOBS: usize = 4;
/// Longest `seconds=` accepted by `/debug/pprof/allocs`.
pub const MAX_ALLOCS_SECONDS: u64 = 300;

/// An HTTP response.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        let mut body: String = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    fn profile(body: Vec<u8>, name: &str) -> Response {
        Response {
            status: 200,
            content_type: "application/octet-stream",
            headers: vec![(
                "Content-Disposition",
                format!("attachment; filename=\"{name}\""),
            )],
            body,
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let jobs = Arc::new(Semaphore::new(MAX_PROFILE_JOBS));
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let shared = shared.clone();
        let jobs = jobs.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(sock, shared, jobs).await {
                tracing::debug!(error = %e, "http connection");
            }
            drop(permit);
        });
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
}

/// Parses the request head (request line; headers are ignored).
pub fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Some(Request {
        method,
        path: percent_decode(path),
        query,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_head(sock: &mut TcpStream) -> Result<Vec<u8>, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = sock.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Err(400);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
    }
}

async fn handle(
    mut sock: TcpStream,
    shared: Arc<Shared>,
    jobs: Arc<Semaphore>,
) -> std::io::Result<()> {
    let resp = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock)).await {
        Err(_) => return Ok(()),
        Ok(Err(status)) => Response::text(status, "malformed request"),
        Ok(Ok(head)) => match parse_head(&head) {
            None => Response::text(400, "malformed request line"),
            Some(req) => route(req, &shared, &jobs).await,
        },
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        reason_phrase(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&resp.body).await?;
    sock.shutdown().await
}

fn param<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `pid` query parameter: a positive integer.
fn pid_param(req: &Request) -> Result<i32, Response> {
    let raw = param(req, "pid")
        .ok_or_else(|| Response::text(400, "missing pid parameter (use ?pid=PID)"))?;
    match raw.parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Response::text(
            400,
            format!("invalid pid {raw:?}: expected a positive integer"),
        )),
    }
}

/// `seconds` query parameter of allocs: 1..=MAX_ALLOCS_SECONDS, or absent.
fn seconds_param(req: &Request) -> Result<Option<u64>, Response> {
    let Some(raw) = param(req, "seconds") else {
        return Ok(None);
    };
    match raw.parse::<u64>() {
        Ok(s) if (1..=MAX_ALLOCS_SECONDS).contains(&s) => Ok(Some(s)),
        _ => Err(Response::text(
            400,
            format!("invalid seconds {raw:?}: expected an integer from 1 to {MAX_ALLOCS_SECONDS}"),
        )),
    }
}

fn refusal_response(r: &Refusal) -> Response {
    match r {
        Refusal::NoSuchProcess { .. } | Refusal::ProcessExited { .. } => {
            Response::text(404, r.to_string())
        }
        _ => Response::text(409, r.to_string()),
    }
}

async fn route(req: Request, shared: &Arc<Shared>, jobs: &Arc<Semaphore>) -> Response {
    if req.method != "GET" {
        return Response::text(405, "only GET is supported");
    }
    match req.path.as_str() {
        "/healthz" => Response::text(200, "ok"),
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: shared.metrics.encode(),
        },
        "/processes" => {
            let view = shared.view.lock().map(|v| v.clone()).unwrap_or_default();
            let body = serde_json::json!({
                "node": shared.node_name,
                "mode": format!("{:?}", shared.mode).to_lowercase(),
                "cycles": view.cycles,
                "last_cycle_unix": view.last_cycle_unix,
                "processes": view.processes.values().collect::<Vec<_>>(),
            });
            Response {
                status: 200,
                content_type: "application/json",
                headers: Vec::new(),
                body: serde_json::to_vec_pretty(&body).unwrap_or_default(),
            }
        }
        "/debug/pprof/heap" => profile_endpoint(req, shared, jobs, false).await,
        "/debug/pprof/allocs" => profile_endpoint(req, shared, jobs, true).await,
        _ => Response::text(404, format!("no such endpoint {}", req.path)),
    }
}

async fn profile_endpoint(
    req: Request,
    shared: &Arc<Shared>,
    jobs: &Arc<Semaphore>,
    allocs: bool,
) -> Response {
    let pid = match pid_param(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let seconds = if allocs {
        match seconds_param(&req) {
            Ok(s) => s,
            Err(r) => return r,
        }
    } else {
        None
    };
    if shared.mode == ProfilerMode::Disabled {
        return Response::text(
            403,
            "profiles are off: the agent runs with --go-heap-profiler=disabled",
        );
    }
    let Some(info) = shared.process(pid) else {
        return Response::text(
            404,
            format!("no Go process with pid {pid} is tracked (see /processes; new processes appear after the next cycle)"),
        );
    };
    let Some(cached) = info.cached.clone() else {
        return Response::text(
            409,
            format!(
                "process {pid} cannot be profiled: {}",
                info.detail.as_deref().unwrap_or(info.state)
            ),
        );
    };
    let Ok(_permit) = jobs.clone().acquire_owned().await else {
        return Response::text(503, "shutting down");
    };
    let root = shared.proc_root.clone();
    let start_time = info.start_time;
    let read = {
        let (root, cached) = (root.clone(), cached.clone());
        move || -> Result<profiles::FreshRead, Refusal> {
            if process::start_time(&root, pid) != Some(start_time) {
                return Err(Refusal::NoSuchProcess { pid });
            }
            profiles::read_now(&root, pid, &cached)
        }
    };
    let result = match seconds {
        None => {
            tokio::task::spawn_blocking(move || {
                if process::start_time(&root, pid) != Some(start_time) {
                    return Err(Refusal::NoSuchProcess { pid });
                }
                profiles::heap(&root, pid, &cached)
            })
            .await
        }
        Some(s) => {
            let first = match tokio::task::spawn_blocking(read.clone()).await {
                Ok(Ok(r)) => r,
                Ok(Err(r)) => return refusal_response(&r),
                Err(_) => return Response::text(500, "profile task failed"),
            };
            tokio::time::sleep(Duration::from_secs(s)).await;
            tokio::task::spawn_blocking(move || {
                let second = read()?;
                profiles::delta(pid, &cached, &first, &second)
            })
            .await
        }
    };
    match result {
        Ok(Ok(bytes)) => Response::profile(bytes, if allocs { "allocs" } else { "heap" }),
        Ok(Err(r)) => refusal_response(&r),
        Err(_) => Response::text(500, "profile task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        let r =
            parse_head(b"GET /debug/pprof/allocs?pid=12&seconds=5 HTTP/1.1\r\nHost: x").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/debug/pprof/allocs");
        assert_eq!(
            r.query,
            vec![("pid".into(), "12".into()), ("seconds".into(), "5".into())]
        );
        assert_eq!(pid_param(&r).ok(), Some(12));
        assert_eq!(seconds_param(&r).ok(), Some(Some(5)));
        let bad = parse_head(b"GET /x?pid=-3&seconds=99999&q=%41%zz%4 HTTP/1.0").unwrap();
        assert_eq!(pid_param(&bad).err().map(|r| r.status), Some(400));
        assert_eq!(seconds_param(&bad).err().map(|r| r.status), Some(400));
        assert_eq!(param(&bad, "q"), Some("A%zz%4"));
        assert!(parse_head(b"GET /").is_none());
        assert!(parse_head(b"\xff\xfe").is_none());
        let none = parse_head(b"GET /debug/pprof/heap HTTP/1.1").unwrap();
        assert_eq!(pid_param(&none).err().map(|r| r.status), Some(400));
    }
}
