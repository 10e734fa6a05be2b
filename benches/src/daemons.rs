//! Debian 12's Go daemons as benchmark targets: which package ships each, and how to start one
//! with a tiny configuration of its own (data under its own directory, loopback-only ports
//! picked fresh, nothing that phones home), plus how to tell it is up.
//!
//! Packages: `apt-get install etcd-server caddy nats-server syncthing prometheus containerd
//! influxdb rclone restic`. Their maintainer scripts would start services; without systemd (or
//! with a `policy-rc.d` that answers 101, as in containers) nothing is started, and the
//! benchmarks start their own copies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::node::free_port;

/// One of the Debian daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Daemon {
    Etcd,
    Caddy,
    Nats,
    Syncthing,
    Prometheus,
    Containerd,
    Influxd,
    Rclone,
    Restic,
}

/// How to tell that a started daemon is up.
#[derive(Debug, Clone)]
pub enum Ready {
    /// Accepts TCP connections on 127.0.0.1:port.
    Port(u16),
    /// The path exists.
    File(PathBuf),
    /// Still running after this long.
    Alive(Duration),
}

/// A daemon instance ready to spawn.
pub struct Launch {
    pub cmd: Command,
    pub ready: Ready,
    /// Give it a stdin pipe that stays open (restic reads its backup from stdin).
    pub keep_stdin: bool,
}

impl Daemon {
    pub const ALL: [Daemon; 9] = [
        Daemon::Etcd,
        Daemon::Caddy,
        Daemon::Nats,
        Daemon::Syncthing,
        Daemon::Prometheus,
        Daemon::Containerd,
        Daemon::Influxd,
        Daemon::Rclone,
        Daemon::Restic,
    ];

    /// The executable's name (as the agent shows it).
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Etcd => "etcd",
            Daemon::Caddy => "caddy",
            Daemon::Nats => "nats-server",
            Daemon::Syncthing => "syncthing",
            Daemon::Prometheus => "prometheus",
            Daemon::Containerd => "containerd",
            Daemon::Influxd => "influxd",
            Daemon::Rclone => "rclone",
            Daemon::Restic => "restic",
        }
    }

    /// The Debian 12 package that ships it.
    pub fn package(self) -> &'static str {
        match self {
            Daemon::Etcd => "etcd-server",
            Daemon::Caddy => "caddy",
            Daemon::Nats => "nats-server",
            Daemon::Syncthing => "syncthing",
            Daemon::Prometheus => "prometheus",
            Daemon::Containerd => "containerd",
            Daemon::Influxd => "influxdb",
            Daemon::Rclone => "rclone",
            Daemon::Restic => "restic",
        }
    }

    /// Where the package installs it.
    pub fn installed_path(self) -> PathBuf {
        let dir = if self == Daemon::Nats {
            "/usr/sbin"
        } else {
            "/usr/bin"
        };
        Path::new(dir).join(self.name())
    }

    /// Writes the instance's configuration under `dir` (created) and returns how to run `exe`
    /// (the installed binary or a copy of it) with it. Commands start with a clean environment:
    /// PATH, and HOME and XDG directories inside `dir`.
    pub fn prepare(self, exe: &Path, dir: &Path) -> anyhow::Result<Launch> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .env("XDG_DATA_HOME", dir.join("xdg-data"))
            .env("XDG_CACHE_HOME", dir.join("xdg-cache"))
            .current_dir(dir);
        let mut keep_stdin = false;
        let ready = match self {
            Daemon::Etcd => {
                let (client, peer) = (free_port()?, free_port()?);
                let c = format!("http://127.0.0.1:{client}");
                let p = format!("http://127.0.0.1:{peer}");
                cmd.args(["--name", "bench", "--data-dir"])
                    .arg(dir.join("data"))
                    .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
                    .args([
                        "--listen-peer-urls",
                        &p,
                        "--initial-advertise-peer-urls",
                        &p,
                    ])
                    .args(["--initial-cluster", &format!("bench={p}")]);
                Ready::Port(client)
            }
            Daemon::Caddy => {
                let port = free_port()?;
                let cfg = dir.join("Caddyfile");
                std::fs::write(&cfg, caddyfile_static(port, dir))?;
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&cfg);
                Ready::Port(port)
            }
            Daemon::Nats => {
                let port = free_port()?;
                cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
                Ready::Port(port)
            }
            Daemon::Syncthing => {
                let (gui, listen) = (free_port()?, free_port()?);
                let home = dir.join("home");
                let st = Command::new(exe)
                    .args(["generate", "--no-default-folder", "--home"])
                    .arg(&home)
                    .env_clear()
                    .env("HOME", dir)
                    .output()?;
                anyhow::ensure!(
                    st.status.success(),
                    "syncthing generate: {}",
                    String::from_utf8_lossy(&st.stderr)
                );
                let path = home.join("config.xml");
                let mut xml = std::fs::read_to_string(&path)?;
                // No discovery, relays, NAT traversal, STUN, usage or crash reports, upgrades:
                // nothing leaves loopback.
                for (from, to) in [
                    (
                        "<listenAddress>default</listenAddress>".to_string(),
                        format!("<listenAddress>tcp://127.0.0.1:{listen}</listenAddress>"),
                    ),
                    (
                        "<globalAnnounceEnabled>true".into(),
                        "<globalAnnounceEnabled>false".into(),
                    ),
                    (
                        "<localAnnounceEnabled>true".into(),
                        "<localAnnounceEnabled>false".into(),
                    ),
                    ("<relaysEnabled>true".into(), "<relaysEnabled>false".into()),
                    ("<natEnabled>true".into(), "<natEnabled>false".into()),
                    ("<startBrowser>true".into(), "<startBrowser>false".into()),
                    ("<urAccepted>0".into(), "<urAccepted>-1".into()),
                    (
                        "<autoUpgradeIntervalH>12".into(),
                        "<autoUpgradeIntervalH>0".into(),
                    ),
                    (
                        "<crashReportingEnabled>true".into(),
                        "<crashReportingEnabled>false".into(),
                    ),
                    (
                        "<stunKeepaliveStartS>180".into(),
                        "<stunKeepaliveStartS>0".into(),
                    ),
                ] {
                    anyhow::ensure!(
                        xml.contains(&from),
                        "syncthing config.xml has no {from:?}: this syncthing's defaults differ, check the patch list"
                    );
                    xml = xml.replace(&from, &to);
                }
                std::fs::write(&path, xml)?;
                cmd.args([
                    "serve",
                    "--no-browser",
                    "--no-restart",
                    "--no-upgrade",
                    "--home",
                ])
                .arg(&home)
                .arg(format!("--gui-address=http://127.0.0.1:{gui}"))
                // One process, without the monitor parent that restarts it.
                .env("STMONITORED", "yes")
                .env("STNOUPGRADE", "1");
                Ready::Port(gui)
            }
            Daemon::Prometheus => {
                let port = free_port()?;
                let cfg = dir.join("prometheus.yml");
                std::fs::write(
                    &cfg,
                    format!(
                        "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
                    ),
                )?;
                cmd.arg(format!("--config.file={}", cfg.display()))
                    .arg(format!("--storage.tsdb.path={d}/data"))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"));
                Ready::Port(port)
            }
            Daemon::Containerd => {
                let cfg = dir.join("config.toml");
                let sock = dir.join("containerd.sock");
                std::fs::write(
                    &cfg,
                    format!(
                        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
                    ),
                )?;
                cmd.arg("--config").arg(&cfg);
                Ready::File(sock)
            }
            Daemon::Influxd => {
                let (http, rpc) = (free_port()?, free_port()?);
                let cfg = dir.join("influxdb.conf");
                std::fs::write(
                    &cfg,
                    format!(
                        r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
[http]
  bind-address = "127.0.0.1:{http}"
[monitor]
  store-enabled = false
"#
                    ),
                )?;
                cmd.args(["run", "-config"]).arg(&cfg);
                Ready::Port(http)
            }
            Daemon::Rclone => {
                let port = free_port()?;
                let served = dir.join("served");
                std::fs::create_dir_all(&served)?;
                for i in 0..20 {
                    std::fs::write(served.join(format!("f{i}.txt")), format!("file {i}\n"))?;
                }
                cmd.args(["serve", "http"])
                    .arg(&served)
                    .args(["--addr", &format!("127.0.0.1:{port}")])
                    .arg("--config")
                    .arg(dir.join("rclone.conf"))
                    .arg("--cache-dir")
                    .arg(dir.join("cache"));
                Ready::Port(port)
            }
            Daemon::Restic => {
                // `restic backup --stdin` into a local repository, reading a pipe that stays open.
                let repo = dir.join("repo");
                let st = Command::new(exe)
                    .arg("-r")
                    .arg(&repo)
                    .arg("--cache-dir")
                    .arg(dir.join("cache"))
                    .arg("init")
                    .env_clear()
                    .env("HOME", dir)
                    .env("RESTIC_PASSWORD", "bench")
                    .output()?;
                anyhow::ensure!(
                    st.status.success(),
                    "restic init: {}",
                    String::from_utf8_lossy(&st.stderr)
                );
                cmd.arg("-r")
                    .arg(&repo)
                    .arg("--cache-dir")
                    .arg(dir.join("cache"))
                    .args(["backup", "--stdin", "--stdin-filename", "stream.bin"])
                    .env("RESTIC_PASSWORD", "bench");
                keep_stdin = true;
                Ready::Alive(Duration::from_secs(2))
            }
        };
        Ok(Launch {
            cmd,
            ready,
            keep_stdin,
        })
    }
}

/// A Caddyfile for one small static response on 127.0.0.1:`port`: no admin endpoint, no
/// automatic HTTPS (so no certificate authority is contacted), storage under `dir`.
pub fn caddyfile_static(port: u16, dir: &Path) -> String {
    format!(
        "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}/caddy-data\n}}\nhttp://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\trespond \"hello\"\n}}\n",
        dir.display()
    )
}

/// The installed version of a Debian package, or `None` when it is not installed.
pub fn package_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", package])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let v = s.strip_prefix("install ok installed ")?;
    Some(v.trim().to_string())
}

/// An error naming the `apt-get install` line when one of `daemons` is missing.
pub fn check_installed(daemons: &[Daemon]) -> anyhow::Result<()> {
    let missing: Vec<&str> = daemons
        .iter()
        .filter(|d| !d.installed_path().exists())
        .map(|d| d.package())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "missing Debian packages: apt-get install {}",
        missing.join(" ")
    );
    Ok(())
}
