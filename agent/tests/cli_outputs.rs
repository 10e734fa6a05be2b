//! What the command line prints and writes, on real Go fixture processes: exit code 10
//! (inconsistent memory-profile data) of `goheap profile` with its one line on stderr (output
//! errors, exit 11, are in output_errors.rs), the default output file name, `--proc-root`, and the `goheap ps` table, `--json`
//! and `--all`.

mod support;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use goheap::error::exit_code;
use pprof_proto::Profile;
use support::*;

/// The Go version of the fixtures used here (a non-PIE static default build has absolute symbol
/// addresses, which the corruption test relies on).
const GO: &str = GO_1_23;

/// Starts a small heapfixture (`-scale 0.1`, one sample per 4 KiB), idle once ready.
fn start_small(bin: &Path, scratch: &Scratch, tag: &str) -> Running {
    let ready = scratch.path(&format!("{tag}.ready"));
    let mut cmd = Command::new(bin);
    cmd.env("GOGC", "off")
        .args(["-scale", "0.1", "-rate", "4096", "-ready"])
        .arg(&ready);
    start_and_wait(cmd, &ready, Duration::from_secs(60))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The single line goheap printed on stderr (panics unless there is exactly one).
fn one_line(out: &Output, what: &str) -> String {
    let err = stderr_of(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line on stderr: {err}");
    lines[0].to_string()
}

fn decode_file(path: &Path) -> Profile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Profile::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ELF symbol value of `name` in a non-PIE executable (its run-time address), read with the
/// `object` crate, independently of goheap's own symbol-table code.
fn symbol_address(bin: &Path, name: &str) -> u64 {
    use object::{Object, ObjectKind, ObjectSymbol};
    let data = std::fs::read(bin).unwrap();
    let file = object::File::parse(&*data).unwrap();
    assert_eq!(
        file.kind(),
        ObjectKind::Executable,
        "{} must be a non-PIE executable",
        bin.display()
    );
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} not in {}", bin.display()))
        .address()
}

/// A target whose bucket list is corrupt: the first bucket's type word of a live heapfixture is
/// overwritten (as root, through /proc/PID/mem). `goheap profile` then exits 10 with one line naming
/// the bucket, and writes no file.
#[test]
fn corrupt_bucket_list_exits_10() {
    let bin = fixture("heapfixture", GO, "default");
    let scratch = Scratch::new("corrupt");
    let running = start_small(&bin, &scratch, "corrupt");
    let pid = running.pid;

    let before = scratch.path("before.pb.gz");
    let out = goheap(&[
        "profile",
        "-p",
        &pid.to_string(),
        "-q",
        "-o",
        before.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "the intact fixture profiles: {}",
        stderr_of(&out)
    );

    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    let mut word = [0u8; 8];
    mem.read_exact_at(&mut word, symbol_address(&bin, "runtime.mbuckets"))
        .unwrap();
    let head = u64::from_le_bytes(word);
    assert_ne!(head, 0, "the fixture has memory-profile buckets");
    // bucket.typ is the third word of the header (next, allnext, typ, ...); memProfile is 1.
    mem.read_exact_at(&mut word, head + 16).unwrap();
    assert_eq!(
        u64::from_le_bytes(word),
        1,
        "head bucket is a memProfile bucket"
    );
    mem.write_all_at(&7u64.to_le_bytes(), head + 16).unwrap();

    let dest = scratch.path("corrupt.pb.gz");
    let out = goheap(&[
        "profile",
        "-p",
        &pid.to_string(),
        "-o",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::CORRUPT),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        one_line(&out, "corrupt"),
        format!(
            "goheap: inconsistent memory-profile data in process {pid}: bucket at {head:#x}: bucket type 7 is not the memory-profile type"
        )
    );
    assert!(out.stdout.is_empty());
    assert!(!dest.exists(), "no profile is written for a refusal");
    assert!(alive(pid), "the target is untouched by the failed read");
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Without `-o`, the profile goes to `goheap-<name>-<pid>-<unix time>.pb.gz` in the current
/// directory, `<name>` being the process's comm with characters other than `[A-Za-z0-9_-]` replaced
/// by `_`; the last stderr line names that file and its size.
#[test]
fn default_output_file_name() {
    let scratch = Scratch::new("defname");
    // A copy under a name with characters the file name must not carry.
    let bin = scratch.path("heap.fix+ture");
    std::fs::copy(fixture("heapfixture", GO, "default"), &bin).unwrap();
    let running = start_small(&bin, &scratch, "defname");
    let pid = running.pid;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim_end(),
        "heap.fix+ture"
    );
    let cwd = scratch.path("cwd");
    std::fs::create_dir(&cwd).unwrap();

    let t0 = unix_now();
    let out = Command::new(goheap_bin())
        .args(["profile", "-p", &pid.to_string()])
        .current_dir(&cwd)
        .output()
        .unwrap();
    let t1 = unix_now();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty(), "the profile goes to the file only");

    let names: Vec<String> = std::fs::read_dir(&cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "exactly one file written: {names:?}");
    let name = &names[0];
    let prefix = format!("goheap-heap_fix_ture-{pid}-");
    let time: u64 = name
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(".pb.gz"))
        .unwrap_or_else(|| panic!("{name} is not {prefix}<unix time>.pb.gz"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: time part: {e}"));
    assert!((t0..=t1).contains(&time), "{time} not in [{t0}, {t1}]");

    let path = cwd.join(name);
    let size = std::fs::metadata(&path).unwrap().len();
    let p = decode_file(&path);
    assert!(p.sample.len() >= 10, "{} samples", p.sample.len());
    let err = stderr_of(&out);
    assert_eq!(
        err.lines().last(),
        Some(format!("wrote {name} ({size} bytes); open with: go tool pprof {name}").as_str()),
        "{err}"
    );
}

/// `--proc-root` (and `GOHEAP_PROC_ROOT`) for `profile`: in a private mount namespace a
/// second procfs is mounted on a scratch directory and `/proc` is covered by an empty tmpfs, so only
/// the given root can work; the profile equals the one read through `/proc`. A proc root without
/// the process is refused as "no such process" (exit 3).
#[test]
fn proc_root_elsewhere() {
    let bin = fixture("heapfixture", GO, "default");
    let scratch = Scratch::new("procroot");
    let running = start_small(&bin, &scratch, "procroot");
    let pid = running.pid.to_string();

    let normal = scratch.path("normal.pb.gz");
    let out = goheap(&["profile", "-p", &pid, "-q", "-o", normal.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    let root = scratch.path("proc2");
    std::fs::create_dir(&root).unwrap();
    let by_flag = scratch.path("flag.pb.gz");
    let by_env = scratch.path("env.pb.gz");
    let script = r#"set -e
mount -t proc proc "$1"
mount -t tmpfs none /proc
test ! -e /proc/self
"$2" --proc-root "$1" profile -p "$3" -q -o "$4"
GOHEAP_PROC_ROOT="$1" "$2" profile -p "$3" -q -o "$5"
"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&root)
        .arg(goheap_bin())
        .arg(&pid)
        .args([&by_flag, &by_env])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inside the mount namespace: {}",
        stderr_of(&out)
    );
    assert!(
        std::fs::read_dir(&root).unwrap().next().is_none(),
        "the second procfs stayed in the private namespace"
    );
    let reference = decode_file(&normal);
    for p in [&by_flag, &by_env] {
        let diffs = compare(&decode_file(p), &reference);
        assert!(diffs.is_empty(), "{}: {diffs:#?}", p.display());
        let diffs = compare(&reference, &decode_file(p));
        assert!(diffs.is_empty(), "{}: {diffs:#?}", p.display());
    }

    // A proc root that does not hold the process: an empty directory, and a path that does not exist.
    let empty = scratch.path("empty");
    std::fs::create_dir(&empty).unwrap();
    for wrong in [empty.clone(), scratch.path("does-not-exist")] {
        let out = goheap(&[
            "--proc-root",
            wrong.to_str().unwrap(),
            "profile",
            "-p",
            &pid,
            "-o",
            "-",
        ]);
        assert_eq!(
            out.status.code(),
            Some(exit_code::NO_SUCH_PROCESS),
            "{}: {}",
            wrong.display(),
            stderr_of(&out)
        );
        assert_eq!(
            one_line(&out, "wrong proc root"),
            format!("goheap: no such process: pid {pid} (check the pid with `goheap ps`)")
        );
        assert!(out.stdout.is_empty());
    }
}

// --- goheap ps ---------------------------------------------------------------------------------

/// One row of the `goheap ps` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PsRow {
    pid: i32,
    state: String,
    go: String,
    method: String,
    binary: String,
    detail: Option<String>,
}

const PS_HEADER: &str = "     PID  STATE               GO         METHOD          BINARY";

/// Parses the table by column position (the header fixes where each column starts).
fn parse_ps_table(stdout: &str) -> Vec<PsRow> {
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(PS_HEADER), "header of:\n{stdout}");
    let col = |l: &str, a: usize, b: usize| l.get(a..b).unwrap_or("").trim().to_string();
    lines
        .map(|l| {
            let rest = l.get(57..).unwrap_or_else(|| panic!("short row {l:?}"));
            let (binary, detail) = match rest.split_once("  (") {
                Some((b, d)) => (
                    b.to_string(),
                    Some(
                        d.strip_suffix(')')
                            .expect("detail in parentheses")
                            .to_string(),
                    ),
                ),
                None => (rest.to_string(), None),
            };
            assert_eq!(&l[8..10], "  ", "{l:?}");
            for sep in [29, 40, 56] {
                assert_eq!(&l[sep..sep + 1], " ", "column separator at {sep} in {l:?}");
            }
            PsRow {
                pid: col(l, 0, 8)
                    .parse()
                    .unwrap_or_else(|e| panic!("pid in {l:?}: {e}")),
                state: col(l, 10, 29),
                go: col(l, 30, 40),
                method: col(l, 41, 56),
                binary,
                detail,
            }
        })
        .collect()
}

fn json_row(r: &PsRow) -> serde_json::Value {
    let opt = |s: &str, none: &str| {
        if s == none {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(s.to_string())
        }
    };
    serde_json::json!({
        "pid": r.pid,
        "binary": r.binary,
        "go_version": opt(&r.go, "?"),
        "state": r.state,
        "method": opt(&r.method, "-"),
        "detail": r.detail,
    })
}

fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

/// The table lists a readable fixture (its Go version, located by `symtab`), a stripped one
/// (`code-reference`) and one with linker-disabled profiling (`profiling-disabled` with the reason),
/// not a non-Go process; columns line up under the header, rows ascend by pid and `--json` holds
/// the same rows. The proc root holds just the processes under test (so `ps` honours
/// `--proc-root`, and the table does not depend on what else runs on the machine).
#[test]
fn ps_table_and_json() {
    let scratch = Scratch::new("ps");
    let plain = fixture("heapfixture", GO, "default");
    let stripped = fixture("heapfixture", GO, "stripped");
    let noprof = fixture("noprofile", GO, "default");
    let a = start_small(&plain, &scratch, "plain");
    let b = start_small(&stripped, &scratch, "stripped");
    let ready = scratch.path("noprofile.ready");
    let mut cmd = Command::new(&noprof);
    cmd.args(["-rate-mib-per-sec", "1", "-ready"]).arg(&ready);
    let c = start_and_wait(cmd, &ready, Duration::from_secs(60));
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let sleeper_pid = sleeper.id() as i32;
    // A proc root with just these processes, so the table does not depend on (or wait for the
    // inspection of) whatever else runs on the machine.
    let root = scratch.path("proc");
    std::fs::create_dir(&root).unwrap();
    for pid in [a.pid, b.pid, c.pid, sleeper_pid] {
        std::os::unix::fs::symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
    }
    let ps = |args: &[&str]| {
        let out = Command::new(goheap_bin())
            .arg("--proc-root")
            .arg(&root)
            .arg("ps")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ps {args:?}: {}", stderr_of(&out));
        out
    };

    let out = ps(&[]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        out.stderr.is_empty(),
        "nothing is denied to root: {}",
        stderr_of(&out)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows = parse_ps_table(&stdout);
    let find = |pid: i32| {
        rows.iter()
            .find(|r| r.pid == pid)
            .unwrap_or_else(|| panic!("pid {pid} not in:\n{stdout}"))
            .clone()
    };
    let go = format!("go{GO}");
    let expect = [
        PsRow {
            pid: a.pid,
            state: "readable".into(),
            go: go.clone(),
            method: "symtab".into(),
            binary: canonical(&plain),
            detail: None,
        },
        PsRow {
            pid: b.pid,
            state: "readable".into(),
            go: go.clone(),
            method: "code-reference".into(),
            binary: canonical(&stripped),
            detail: None,
        },
        PsRow {
            pid: c.pid,
            state: "profiling-disabled".into(),
            go: go.clone(),
            method: "symtab".into(),
            binary: canonical(&noprof),
            detail: Some("linker set runtime.disableMemoryProfiling".into()),
        },
    ];
    for e in &expect {
        assert_eq!(&find(e.pid), e, "\n{stdout}");
    }
    assert!(
        rows.iter().all(|r| r.pid != sleeper_pid),
        "sleep is not Go:\n{stdout}"
    );
    assert_eq!(rows.len(), 3, "only the three Go fixtures:\n{stdout}");
    assert!(
        rows.windows(2).all(|w| w[0].pid < w[1].pid),
        "rows ascend by pid:\n{stdout}"
    );
    assert!(
        rows.iter().all(|r| r.state != "permission-denied"),
        "without --all no permission-denied rows:\n{stdout}"
    );

    let out = ps(&["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = json.as_array().expect("an array");
    for e in &expect {
        let j = arr
            .iter()
            .find(|r| r["pid"] == e.pid)
            .unwrap_or_else(|| panic!("pid {} not in --json: {json:#}", e.pid));
        assert_eq!(j, &json_row(e));
    }
    let ids: Vec<i64> = arr.iter().map(|r| r["pid"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{json:#}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

fn ensure_user(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .expect("useradd");
        // Another test binary may have created it at the same moment.
        assert!(
            st.success() || id("-u").is_some(),
            "useradd {name} failed (tests run as root)"
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// `command` as an unprivileged user with no capabilities at all.
fn as_user(uid: u32, gid: u32, program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(program);
    c
}

/// As a user without CAP_SYS_PTRACE, root's Go processes cannot be inspected: `ps` leaves them out
/// and says on stderr how many there were and what to do; `--all` lists them as
/// `permission-denied` (binary shown as `[comm]`), in the table and in `--json`. The user's own Go
/// process stays readable.
#[test]
fn ps_all_lists_permission_denied() {
    let (uid, gid) = ensure_user("goheap-test");
    let scratch = Scratch::new("psall");
    let root_owned = start_small(&fixture("heapfixture", GO, "default"), &scratch, "root");
    // The user's own fixture: a copy it can execute (the build cache is under /root) in a directory
    // it can write its ready file to.
    let user_dir = scratch.path("user");
    std::fs::create_dir(&user_dir).unwrap();
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&user_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let user_bin = user_dir.join("heapfixture");
    std::fs::copy(fixture("heapfixture", GO, "default"), &user_bin).unwrap();
    let ready = user_dir.join("ready");
    let mut cmd = as_user(uid, gid, &user_bin);
    cmd.env("GOGC", "off")
        .args(["-scale", "0.1", "-rate", "4096", "-ready"])
        .arg(&ready);
    let user_owned = start_and_wait(cmd, &ready, Duration::from_secs(60));
    // setpriv execs the fixture, so the child's pid is the fixture's.
    let user_pid = user_owned.pid;

    let ps = |args: &[&str]| {
        let out = as_user(uid, gid, &goheap_bin())
            .arg("ps")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ps {args:?}: {}", stderr_of(&out));
        out
    };

    let out = ps(&[]);
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let rows = parse_ps_table(&stdout);
    assert!(
        rows.iter().all(|r| r.pid != root_owned.pid),
        "root's process is not listed without --all:\n{stdout}"
    );
    let own = rows
        .iter()
        .find(|r| r.pid == user_pid)
        .unwrap_or_else(|| panic!("the user's own process is listed:\n{stdout}"));
    assert_eq!(
        (own.state.as_str(), own.method.as_str()),
        ("readable", "symtab")
    );
    let hint = one_line(&out, "ps as non-root");
    let n: usize = hint
        .strip_prefix("goheap: ")
        .and_then(|h| h.split_once(" processes could not be inspected (permission denied; run as root or with CAP_SYS_PTRACE); --all lists them"))
        .filter(|(_, tail)| tail.is_empty())
        .unwrap_or_else(|| panic!("hint line: {hint}"))
        .0
        .parse()
        .unwrap_or_else(|e| panic!("count in {hint}: {e}"));
    assert!(n >= 1, "{hint}");

    let out = ps(&["--all"]);
    assert!(
        out.stderr.is_empty(),
        "no hint with --all: {}",
        stderr_of(&out)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows = parse_ps_table(&stdout);
    let denied = PsRow {
        pid: root_owned.pid,
        state: "permission-denied".into(),
        go: "?".into(),
        method: "-".into(),
        binary: "[heapfixture]".into(),
        detail: Some("CAP_SYS_PTRACE needed to read /proc/PID/exe".into()),
    };
    assert_eq!(
        rows.iter().find(|r| r.pid == root_owned.pid),
        Some(&denied),
        "\n{stdout}"
    );
    assert!(rows.iter().any(|r| r.pid == user_pid), "\n{stdout}");
    assert!(
        rows.iter()
            .filter(|r| r.state == "permission-denied")
            .count()
            >= n.min(1),
        "\n{stdout}"
    );

    let out = ps(&["--all", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let j = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == root_owned.pid)
        .unwrap_or_else(|| panic!("{json:#}"));
    assert_eq!(j, &json_row(&denied));
}
