//! The agent's HTTP endpoints, on one listener.
//!
//! HTTP/1.1 is handled by `hyper` (server side, HTTP/1 only). This module only routes and answers:
//! GET only (anything else is 405), request bodies are never read, keep-alive is allowed. Limits: a
//! request head (request line and headers) over 16 KiB is refused with 431; a head not received within
//! 10 s closes the connection (that timer also closes keep-alive connections idle for 10 s); at most 64
//! connections at once, further ones are closed on accept.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text format 0.0.4 (`?pid=P`: only that process's series) |
//! | `/targets` | Prometheus `http_sd_config` JSON: one target group per readable Go process |
//! | `/healthz` | `ok` |
//! | `/processes` | JSON: node, cycle count, Go processes and their state |
//! | `/debug/pprof/heap?pid=P` | the heap profile now, as `goheap profile` writes it |
//! | `/debug/pprof/allocs?pid=P` | the same profile opening as alloc_space; `duration_nanos` = the process's age |
//! | `/debug/pprof/allocs?pid=P&seconds=N` | allocations during the next N seconds (delta profile; `duration_nanos` = the window) |
//! | `/debug/pprof/` | HTML index of the node's Go processes with links to their profiles |
//! | `/debug/pprof/goroutine?pid=P` | the goroutine profile now, as `goheap goroutines` writes it |
//!
//! Bad parameters are 400 with a one-line reason, an unknown pid 404, a Go process that cannot be
//! profiled 409, and `--go-heap-profiler=disabled` makes profile endpoints 403.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::Refusal;
use crate::target::procfs;

use super::collector::Shared;
use super::profiles;
use super::ProfilerMode;

/// Longest `seconds=` accepted by `/debug/pprof/allocs`.
pub const MAX_ALLOCS_SECONDS: u64 = 300;
/// Profiles built at once (each is a full walk plus symbolization on a blocking thread).
const MAX_PROFILE_JOBS: usize = 4;

/// Protocol limits of the listener.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Largest request head (request line and headers), in bytes; larger ones get 431.
    max_head_bytes: usize,
    /// Time allowed to receive a request head, counted from connection start or from the end of
    /// the previous response on a kept-alive connection.
    head_timeout: Duration,
    /// Connections served at once; further ones are closed right after accept.
    max_connections: usize,
}

const LIMITS: Limits = Limits {
    max_head_bytes: 16 * 1024,
    head_timeout: Duration::from_secs(10),
    max_connections: 64,
};

/// An answer, before it becomes an HTTP response.
pub struct Response {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub headers: Vec<(hyper::header::HeaderName, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn text(status: StatusCode, body: impl Into<String>) -> Response {
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
            status: StatusCode::OK,
            content_type: "application/octet-stream",
            headers: vec![(
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            )],
            body,
        }
    }

    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(self.body)));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        for (name, value) in self.headers {
            match HeaderValue::try_from(value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(e) => tracing::warn!(header = %name, error = %e, "dropping invalid header"),
            }
        }
        resp
    }
}

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    serve_with(listener, shared, LIMITS).await
}

async fn serve_with(listener: TcpListener, shared: Arc<Shared>, limits: Limits) {
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let jobs = Arc::new(Semaphore::new(MAX_PROFILE_JOBS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_header_size(limits.max_head_bytes);
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
        let service = {
            let (shared, jobs) = (shared.clone(), jobs.clone());
            service_fn(move |req| {
                let (shared, jobs) = (shared.clone(), jobs.clone());
                async move { Ok::<_, Infallible>(route(&req, &shared, &jobs).await.into_hyper()) }
            })
        };
        let conn = http.serve_connection(TokioIo::new(sock), service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection");
            }
            drop(permit);
        });
    }
}

/// The parts of a GET request the endpoints look at.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Percent-decoded path.
    pub path: String,
    /// Query pairs in order, percent- and `+`-decoded.
    pub query: Vec<(String, String)>,
}

impl Request {
    fn from_uri(uri: &hyper::Uri) -> Request {
        let query = uri.query().unwrap_or("");
        Request {
            path: percent_encoding::percent_decode_str(uri.path())
                .decode_utf8_lossy()
                .into_owned(),
            query: form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        }
    }
}

fn param<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `pid` query parameter: a positive integer.
fn pid_param(req: &Request) -> Result<i32, Response> {
    let raw = param(req, "pid").ok_or_else(|| {
        Response::text(
            StatusCode::BAD_REQUEST,
            "missing pid parameter (use ?pid=PID)",
        )
    })?;
    match raw.parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Response::text(
            StatusCode::BAD_REQUEST,
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
            StatusCode::BAD_REQUEST,
            format!("invalid seconds {raw:?}: expected an integer from 1 to {MAX_ALLOCS_SECONDS}"),
        )),
    }
}

fn refusal_response(r: &Refusal) -> Response {
    match r {
        Refusal::NoSuchProcess { .. } | Refusal::ProcessExited { .. } | Refusal::Zombie { .. } => {
            Response::text(StatusCode::NOT_FOUND, r.to_string())
        }
        _ => Response::text(StatusCode::CONFLICT, r.to_string()),
    }
}

async fn route(
    http_req: &hyper::Request<Incoming>,
    shared: &Arc<Shared>,
    jobs: &Arc<Semaphore>,
) -> Response {
    if http_req.method() != Method::GET {
        let mut r = Response::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported");
        r.headers.push((ALLOW, "GET".to_string()));
        return r;
    }
    let req = Request::from_uri(http_req.uri());
    match req.path.as_str() {
        "/healthz" => Response::text(StatusCode::OK, "ok"),
        "/metrics" => {
            let body = match param(&req, "pid") {
                None => shared.metrics.encode(),
                Some(_) => match pid_param(&req) {
                    Ok(pid) if shared.process(pid).is_some() => shared.metrics.encode_pid(pid),
                    Ok(pid) => return Response::text(
                        StatusCode::NOT_FOUND,
                        format!("no Go process with pid {pid} is tracked (see /processes or /targets; new processes appear after the next cycle)"),
                    ),
                    Err(r) => return r,
                },
            };
            Response {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: Vec::new(),
                body,
            }
        }
        "/targets" => {
            let host = http_req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok());
            Response {
                status: StatusCode::OK,
                content_type: "application/json",
                headers: Vec::new(),
                body: targets(shared, host),
            }
        }
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
                status: StatusCode::OK,
                content_type: "application/json",
                headers: Vec::new(),
                body: serde_json::to_vec_pretty(&body).unwrap_or_default(),
            }
        }
        "/debug/pprof/" | "/debug/pprof" => index(shared),
        "/debug/pprof/heap" => profile_endpoint(req, shared, jobs, false).await,
        "/debug/pprof/allocs" => profile_endpoint(req, shared, jobs, true).await,
        "/debug/pprof/goroutine" => goroutine_endpoint(req, shared, jobs).await,
        // The raw path: a valid URI has no control characters, so the reason stays on one line.
        _ => Response::text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint {}", http_req.uri().path()),
        ),
    }
}

/// `/debug/pprof/`: an HTML index like Go's handler's, one row per Go process the agent tracks
/// (pid, state, Go version, binary) with links to its heap and allocs profiles.
fn index(shared: &Arc<Shared>) -> Response {
    let view = shared.view.lock().map(|v| v.clone()).unwrap_or_default();
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut rows = String::new();
    for p in view.processes.values() {
        let links = if p.cached.is_some() && shared.mode != ProfilerMode::Disabled {
            format!(
                "<a href=\"/debug/pprof/heap?pid={0}\">heap</a> <a href=\"/debug/pprof/allocs?pid={0}\">allocs</a> <a href=\"/debug/pprof/allocs?pid={0}&amp;seconds=30\">allocs 30s</a>",
                p.pid
            )
        } else {
            esc(p.detail.as_deref().unwrap_or("not profilable"))
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{links}</td></tr>\n",
            p.pid,
            p.state.as_str(),
            esc(&p.go_version),
            esc(&p.binary),
        ));
    }
    let node = shared
        .node_name
        .as_deref()
        .map(|n| format!(" on {}", esc(n)))
        .unwrap_or_default();
    let body = format!(
        "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/ (goheap agent{node})<br>\n<br>\n\
Go processes ({n}, as of cycle {cycles}):\n<table>\n<thead><td>pid</td><td>state</td><td>go</td><td>binary</td><td>profiles</td></thead>\n{rows}</table>\n<br>\n\
<p>heap: a sampling of memory allocations of live objects, and of all past allocations (opens as inuse_space).<br>\n\
allocs: the same profile opening as alloc_space; add &amp;seconds=N for the allocations of the next N seconds (1 to {MAX_ALLOCS_SECONDS}).<br>\n\
Also: <a href=\"/processes\">/processes</a> (JSON), <a href=\"/metrics\">/metrics</a>.</p>\n</body>\n</html>\n",
        n = view.processes.len(),
        cycles = view.cycles,
    );
    Response {
        status: StatusCode::OK,
        content_type: "text/html; charset=utf-8",
        headers: Vec::new(),
        body: body.into_bytes(),
    }
}

/// Whether `s` is `host:port`: a DNS name or IPv4 address, or `[IPv6]`, and a port; at most 255
/// bytes (what `/targets` may echo from a `Host` header or `--advertise-address`).
pub fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    s.len() <= 255 && host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The address scrapers reach this agent at: `--advertise-address`, else the request's `Host`
/// (if it is `host:port`), else the listen address.
fn advertised(shared: &Shared, host: Option<&str>) -> String {
    if let Some(a) = &shared.advertise {
        return a.clone();
    }
    if let Some(h) = host.filter(|h| valid_host_port(h)) {
        return h.to_string();
    }
    shared
        .listen
        .map(|a| a.to_string())
        .unwrap_or_else(|| "localhost:9465".into())
}

/// `/targets`: one `http_sd_config` target group per readable Go process, labelled with its
/// [`super::labels::ProcessLabels`] plus `__param_pid` (so the scrape URL carries `?pid=`) and
/// `__metrics_path__` `/metrics` (a Prometheus job then scrapes that process's series; profile
/// scrapers set their own paths).
fn targets(shared: &Shared, host: Option<&str>) -> Vec<u8> {
    let address = advertised(shared, host);
    let view = shared.view.lock().map(|v| v.clone()).unwrap_or_default();
    let groups: Vec<serde_json::Value> = view
        .processes
        .values()
        .filter(|p| p.state == crate::target::state::ProcessState::Readable)
        .map(|p| {
            let mut labels: serde_json::Map<String, serde_json::Value> = p
                .labels
                .pairs()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            labels.insert("__param_pid".into(), p.pid.to_string().into());
            labels.insert("__metrics_path__".into(), "/metrics".into());
            serde_json::json!({ "targets": [address], "labels": labels })
        })
        .collect();
    serde_json::to_vec_pretty(&groups).unwrap_or_default()
}

/// `/debug/pprof/goroutine?pid=P`: the goroutine profile now (as `goheap goroutines` writes it);
/// independent of `--go-heap-profiler`.
async fn goroutine_endpoint(req: Request, shared: &Arc<Shared>, jobs: &Arc<Semaphore>) -> Response {
    let pid = match pid_param(&req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(info) = shared.process(pid) else {
        return Response::text(
            StatusCode::NOT_FOUND,
            format!("no Go process with pid {pid} is tracked (see /processes)"),
        );
    };
    let Some(cached) = info.cached.clone() else {
        let why = info.detail.as_deref().unwrap_or(info.state.as_str());
        return Response::text(
            StatusCode::CONFLICT,
            format!("process {pid} cannot be read: {why}"),
        );
    };
    let Ok(_permit) = jobs.clone().acquire_owned().await else {
        return Response::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let (root, start_time) = (shared.proc_root.clone(), info.start_time);
    let result = tokio::task::spawn_blocking(move || {
        if procfs::start_time(&root, pid) != Some(start_time) {
            return Err(Refusal::NoSuchProcess { pid });
        }
        crate::goroutine::read_process(&root, pid, &cached).map(|g| g.profile().encode_gzip())
    })
    .await;
    match result {
        Ok(Ok(bytes)) => Response::profile(bytes, "goroutine"),
        Ok(Err(r)) => refusal_response(&r),
        Err(_) => Response::text(StatusCode::INTERNAL_SERVER_ERROR, "goroutine task failed"),
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
            StatusCode::FORBIDDEN,
            "profiles are off: the agent runs with --go-heap-profiler=disabled",
        );
    }
    let Some(info) = shared.process(pid) else {
        return Response::text(
            StatusCode::NOT_FOUND,
            format!("no Go process with pid {pid} is tracked (see /processes; new processes appear after the next cycle)"),
        );
    };
    let Some(cached) = info.cached.clone() else {
        return Response::text(
            StatusCode::CONFLICT,
            format!(
                "process {pid} cannot be profiled: {}",
                info.detail.as_deref().unwrap_or(info.state.as_str())
            ),
        );
    };
    let Ok(_permit) = jobs.clone().acquire_owned().await else {
        return Response::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let root = shared.proc_root.clone();
    let start_time = info.start_time;
    let read = {
        let (root, cached) = (root.clone(), cached.clone());
        move || -> Result<profiles::FreshRead, Refusal> {
            if procfs::start_time(&root, pid) != Some(start_time) {
                return Err(Refusal::NoSuchProcess { pid });
            }
            profiles::read_now(&root, pid, &cached)
        }
    };
    let result = match seconds {
        None => {
            tokio::task::spawn_blocking(move || {
                if procfs::start_time(&root, pid) != Some(start_time) {
                    return Err(Refusal::NoSuchProcess { pid });
                }
                if allocs {
                    profiles::allocs(&root, pid, &cached)
                } else {
                    profiles::heap(&root, pid, &cached)
                }
            })
            .await
        }
        Some(s) => {
            let first = match tokio::task::spawn_blocking(read.clone()).await {
                Ok(Ok(r)) => r,
                Ok(Err(r)) => return refusal_response(&r),
                Err(_) => {
                    return Response::text(StatusCode::INTERNAL_SERVER_ERROR, "profile task failed")
                }
            };
            let first_at = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(s)).await;
            tokio::task::spawn_blocking(move || {
                let second = read()?;
                profiles::delta(pid, &cached, &first, &second, first_at.elapsed())
            })
            .await
        }
    };
    match result {
        Ok(Ok(bytes)) => Response::profile(bytes, if allocs { "allocs" } else { "heap" }),
        Ok(Err(r)) => refusal_response(&r),
        Err(_) => Response::text(StatusCode::INTERNAL_SERVER_ERROR, "profile task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    #[test]
    fn decodes_paths_and_queries() {
        let uri: hyper::Uri = "/debug/pprof/allocs?pid=12&seconds=5".parse().unwrap();
        let r = Request::from_uri(&uri);
        assert_eq!(r.path, "/debug/pprof/allocs");
        assert_eq!(
            r.query,
            vec![("pid".into(), "12".into()), ("seconds".into(), "5".into())]
        );
        assert_eq!(pid_param(&r).ok(), Some(12));
        assert_eq!(seconds_param(&r).ok(), Some(Some(5)));
        let uri: hyper::Uri = "/x%2Fy?pid=-3&&seconds=99999&q=%41%zz%4+b".parse().unwrap();
        let bad = Request::from_uri(&uri);
        assert_eq!(bad.path, "/x/y");
        let status = |r: Option<Response>| r.map(|r| r.status);
        assert_eq!(status(pid_param(&bad).err()), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            status(seconds_param(&bad).err()),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(param(&bad, "q"), Some("A%zz%4 b"));
        let none = Request::from_uri(&"/debug/pprof/heap".parse().unwrap());
        assert_eq!(
            status(pid_param(&none).err()),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    /// A server on 127.0.0.1 with no tracked processes; the runtime stops it when dropped.
    fn start(mode: ProfilerMode, limits: Limits) -> (tokio::runtime::Runtime, u16) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let metrics = super::super::metrics::AgentMetrics::new().unwrap();
        let shared = Arc::new(Shared::new(
            std::env::temp_dir().join("goheap-http-test-no-proc"),
            mode,
            Some("test-node".into()),
            metrics,
        ));
        rt.spawn(serve_with(listener, shared, limits));
        (rt, port)
    }

    fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends one request and reads exactly one response (by Content-Length), leaving the
    /// connection open. The answer to HEAD has no body.
    fn exchange(s: &mut TcpStream, method: &str, target: &str) -> Answer {
        write!(s, "{method} {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {raw:?}");
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut a = Answer {
            status: status.parse().unwrap(),
            headers,
            body: Vec::new(),
        };
        let len: usize = a.header("content-length").unwrap().parse().unwrap();
        if method != "HEAD" {
            a.body = vec![0; len];
            s.read_exact(&mut a.body).unwrap();
        }
        a
    }

    /// Whether the server closes `s` within `wait` (EOF or reset), reading and discarding data.
    fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s.set_read_timeout(Some(left)).unwrap();
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    #[test]
    fn routes_statuses_and_keep_alive() {
        let (_rt, port) = start(ProfilerMode::Enabled, LIMITS);
        // Every request below goes over this one connection.
        let mut s = connect(port);
        let a = exchange(&mut s, "GET", "/healthz");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok\n"[..]));
        let a = exchange(&mut s, "GET", "/metrics");
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let a = exchange(&mut s, "GET", "/processes");
        assert_eq!(a.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["node"], "test-node");
        assert_eq!(v["mode"], "enabled");
        assert!(v["processes"].as_array().unwrap().is_empty());
        let a = exchange(&mut s, "GET", "/targets");
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.body, b"[]");
        assert!(valid_host_port("10.0.0.1:9465") && valid_host_port("[::1]:80"));
        assert!(valid_host_port("goheap.goheap.svc:9465"));
        for bad in ["x", "a b:1", "h:0", "h:99999", "[zz]:1", "\"x\":1"] {
            assert!(!valid_host_port(bad), "{bad}");
        }
        for (target, status) in [
            ("/debug/pprof/heap", 400),
            ("/debug/pprof/heap?pid=abc", 400),
            ("/debug/pprof/heap?pid=-4", 400),
            ("/debug/pprof/heap?pid=2147483647", 404),
            ("/debug/pprof/allocs?pid=1&seconds=0", 400),
            ("/debug/pprof/allocs?pid=1&seconds=301", 400),
            ("/debug/pprof/allocs?pid=%0A1", 400),
            ("/nope%0A", 404),
            ("/metrics?pid=x", 400),
        ] {
            let a = exchange(&mut s, "GET", target);
            assert_eq!(a.status, status, "{target}");
            let text = String::from_utf8(a.body).unwrap();
            assert_eq!(text.trim_end().lines().count(), 1, "{target}: {text:?}");
        }
        for method in ["HEAD", "POST", "DELETE"] {
            let a = exchange(&mut s, method, "/metrics");
            assert_eq!(a.status, 405, "{method}");
            assert_eq!(a.header("allow"), Some("GET"));
        }
        // The HEAD answer carried no body: the connection is still in step.
        assert_eq!(exchange(&mut s, "GET", "/healthz").status, 200);
    }

    #[test]
    fn advertised_address_order() {
        let metrics = super::super::metrics::AgentMetrics::new().unwrap();
        let mut shared = Shared::new(std::env::temp_dir(), ProfilerMode::Enabled, None, metrics);
        shared.listen = Some("0.0.0.0:9465".parse().unwrap());
        assert_eq!(advertised(&shared, Some("10.1.2.3:9465")), "10.1.2.3:9465");
        // A Host that is not host:port is not echoed.
        for bad in ["evil\"]:1", "no-port", "a/b:1"] {
            assert_eq!(advertised(&shared, Some(bad)), "0.0.0.0:9465", "{bad}");
        }
        assert_eq!(advertised(&shared, None), "0.0.0.0:9465");
        shared.advertise = Some("node-a:9465".into());
        assert_eq!(advertised(&shared, Some("10.1.2.3:9465")), "node-a:9465");
    }

    #[test]
    fn disabled_mode_forbids_profiles() {
        let (_rt, port) = start(ProfilerMode::Disabled, LIMITS);
        let mut s = connect(port);
        for target in ["/debug/pprof/heap?pid=1", "/debug/pprof/allocs?pid=1"] {
            assert_eq!(exchange(&mut s, "GET", target).status, 403, "{target}");
        }
        assert_eq!(exchange(&mut s, "GET", "/debug/pprof/heap").status, 400);
    }

    #[test]
    fn oversized_head_is_refused() {
        let (_rt, port) = start(ProfilerMode::Enabled, LIMITS);
        let mut s = connect(port);
        let filler = "a".repeat(20 * 1024);
        // The server may answer and close before the whole head is written.
        let _ = write!(s, "GET /healthz HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        // Just under the limit is fine.
        let mut s = connect(port);
        let filler = "a".repeat(15 * 1024);
        write!(s, "GET /healthz HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n").unwrap();
        let mut raw = [0u8; 12];
        s.read_exact(&mut raw).unwrap();
        assert_eq!(&raw, b"HTTP/1.1 200");
    }

    #[test]
    fn slow_and_idle_clients_are_dropped() {
        let limits = Limits {
            head_timeout: Duration::from_millis(600),
            ..LIMITS
        };
        let (_rt, port) = start(ProfilerMode::Enabled, limits);
        // A head trickled a byte every 100 ms never completes in time.
        let mut s = connect(port);
        let t0 = Instant::now();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        while t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(b"X").is_err() {
                break;
            }
        }
        assert!(closed_within(&mut s, Duration::from_secs(1)));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // A kept-alive connection that sends nothing more is closed after the same time.
        let mut s = connect(port);
        assert_eq!(exchange(&mut s, "GET", "/healthz").status, 200);
        let t0 = Instant::now();
        assert!(closed_within(&mut s, Duration::from_secs(3)));
        assert!(t0.elapsed() >= Duration::from_millis(500));
    }

    #[test]
    fn connections_over_the_cap_are_closed() {
        let limits = Limits {
            max_connections: 3,
            ..LIMITS
        };
        let (_rt, port) = start(ProfilerMode::Enabled, limits);
        let mut held: Vec<TcpStream> = (0..3).map(|_| connect(port)).collect();
        for s in &mut held {
            // An unfinished head keeps the connection (and its slot) busy.
            s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = connect(port);
        assert!(closed_within(&mut extra, Duration::from_secs(2)));
        drop(held);
        // The slots come back once the held connections end.
        let t0 = Instant::now();
        loop {
            let mut s = connect(port);
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
            let mut first = [0u8; 12];
            if s.read_exact(&mut first).is_ok() {
                assert_eq!(&first, b"HTTP/1.1 200");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no slot came back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
