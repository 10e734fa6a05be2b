//! `-o` that cannot be written: a missing directory, a regular file where a directory should be, a
//! read-only bind mount, a full file system (a 64 KiB tmpfs filled up) and `/dev/full` each give
//! exit 11 and one line naming the path and what to do; no partial file is left, and a file already
//! at the destination keeps its old contents. A directory as `-o` gets the default file name.

mod agent_common;

use std::path::Path;
use std::process::{Command, Output};

use agent_common::*;
use goheap::error::exit_code;

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `goheap ARGS` and requires exit 11 with one line that names `path` and contains `why`.
fn refused(args: &[&str], path: &Path, why: &str) -> String {
    let out = goheap(args);
    assert_eq!(
        out.status.code(),
        Some(exit_code::OUTPUT),
        "{args:?}: {}",
        stderr_of(&out)
    );
    let e = stderr_of(&out);
    assert_eq!(e.lines().count(), 1, "{args:?}: one line expected: {e:?}");
    let line = e.trim_end().to_string();
    assert!(
        line.starts_with(&format!("goheap: cannot write {}: ", path.display())),
        "{line}"
    );
    assert!(line.contains(why), "{line} should say {why:?}");
    assert!(line.contains("-o"), "{line} should say what to do");
    assert!(out.stdout.is_empty());
    line
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}: {st}");
}

/// A mount that is unmounted (lazily) on drop.
struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn unwritable_outputs_exit_11_and_leave_no_partial_file() {
    let s = Scratch::new("outerr");
    let (fx, _addr) = start_steadyalloc(&s, "sa", 8.0);
    let pid = fx.pid.to_string();

    // A missing directory: nothing is created.
    let missing = s.path("no-such-dir").join("x.pb.gz");
    let line = refused(
        &["profile", "-p", &pid, "-o", missing.to_str().unwrap()],
        &missing,
        "does not exist",
    );
    assert!(line.contains("mkdir -p"), "{line}");
    assert!(!missing.parent().unwrap().exists());

    // A missing directory given as DIR/: said once, before anything is read.
    let missing_dir = s.path("no-such-out");
    let t0 = std::time::Instant::now();
    let out = goheap(&[
        "record",
        "-p",
        &pid,
        "-d",
        "5s",
        "-o",
        &format!("{}/", missing_dir.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::OUTPUT),
        "{}",
        stderr_of(&out)
    );
    let e = stderr_of(&out);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with(&format!(
            "goheap: cannot write {}/goheap-allocs-steadyalloc-{pid}-",
            missing_dir.display()
        )) && e.contains("does not exist"),
        "{e}"
    );
    assert!(!missing_dir.exists());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "refused before the 5 s window, not after recording it"
    );

    // A regular file where the directory should be.
    let file = s.path("a-file");
    std::fs::write(&file, "x").unwrap();
    let under = file.join("x.svg");
    refused(
        &[
            "profile",
            "-p",
            &pid,
            "--format",
            "svg",
            "-o",
            under.to_str().unwrap(),
        ],
        &under,
        "is not a directory",
    );

    // A read-only bind mount (root ignores mode bits, not a read-only mount).
    let ro = s.path("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("old.pb.gz"), "old contents").unwrap();
    run(
        "mount",
        &["--bind", ro.to_str().unwrap(), ro.to_str().unwrap()],
    );
    let _ro_mount = Mounted(ro.clone());
    run("mount", &["-o", "remount,bind,ro", ro.to_str().unwrap()]);
    let target = ro.join("old.pb.gz");
    refused(
        &["profile", "-p", &pid, "-o", target.to_str().unwrap()],
        &target,
        "read-only file system",
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old contents");

    // A full file system: a 64 KiB tmpfs filled to the last byte, with an old file at the
    // destination. Both the streamed pprof, a flame graph and a record window fail with exit 11,
    // leave no temporary file, and keep the old file as it was.
    let full = s.path("full");
    std::fs::create_dir(&full).unwrap();
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            full.to_str().unwrap(),
        ],
    );
    let _full_mount = Mounted(full.clone());
    let old = full.join("profile.pb.gz");
    std::fs::write(&old, "old contents").unwrap();
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(full.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while filler.write_all(&chunk).is_ok() {}
        while filler.write_all(&[0u8]).is_ok() {}
    }
    let before = entries(&full);
    refused(
        &["profile", "-p", &pid, "-o", old.to_str().unwrap()],
        &old,
        "no space left on the device",
    );
    let svg = full.join("profile.svg");
    refused(
        &[
            "profile",
            "-p",
            &pid,
            "--format",
            "svg",
            "-o",
            svg.to_str().unwrap(),
        ],
        &svg,
        "no space left on the device",
    );
    let rec = full.join("window.pb.gz");
    refused(
        &[
            "record",
            "-p",
            &pid,
            "-d",
            "1s",
            "-q",
            "-o",
            rec.to_str().unwrap(),
        ],
        &rec,
        "no space left on the device",
    );
    assert_eq!(
        entries(&full),
        before,
        "no partial or temporary file is left"
    );
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "old contents");

    // /dev/full is written in place (never replaced) and says the same.
    let dev_full = Path::new("/dev/full");
    refused(
        &["profile", "-p", &pid, "-o", "/dev/full"],
        dev_full,
        "no space left on the device",
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(dev_full)
        .unwrap()
        .file_type()
        .is_char_device());

    // A directory as -o: the default name inside it.
    let dir = s.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let out = goheap(&["profile", "-p", &pid, "-q", "-o", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let names = entries(&dir);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with(&format!("goheap-steadyalloc-{pid}-")) && names[0].ends_with(".pb.gz"),
        "{names:?}"
    );
    let p = pprof_proto::Profile::decode(&std::fs::read(dir.join(&names[0])).unwrap()).unwrap();
    assert!(!p.sample.is_empty());
}
