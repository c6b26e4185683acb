//! A throwaway PostgreSQL server from Debian's packages (`postgresql-15` or newer, installed by
//! `scripts/install-prereqs.sh`): `initdb` into a temporary directory, `pg_ctl start` on a free
//! 127.0.0.1 port with Unix sockets off, and `pg_ctl stop -m immediate` on drop, so nothing
//! outlives the test. As root the server runs as the `postgres` user (PostgreSQL refuses root).
//!
//! The superuser is `sensor`, authenticated with SCRAM-SHA-256 when a password is given, else
//! trusted (loopback only). TLS is on when [`PgOptions::tls`] carries a certificate and key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The superuser `initdb` creates.
pub const USER: &str = "sensor";

#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// SCRAM password of [`USER`]; `None` = trust.
    pub password: Option<String>,
    /// PEM server certificate (chain) and key: `ssl = on`.
    pub tls: Option<(String, String)>,
}

pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    pub port: u16,
    tls: bool,
    /// `Some("postgres")` when running as root.
    run_as: Option<&'static str>,
}

/// The newest `/usr/lib/postgresql/<major>/bin` holding `pg_ctl`.
fn bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("PostgreSQL server binaries not found under /usr/lib/postgresql; install Debian's postgresql (scripts/install-prereqs.sh does)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postgres {
    /// Creates and starts a server; panics with the server log when it does not start in 60 s.
    pub fn start(options: PgOptions) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        // The `postgres` user must reach the data directory inside root's 0700 temp dir.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let run_as = (unsafe { libc::geteuid() } == 0).then_some("postgres");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let pwfile = dir.path().join("pwfile");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(&log, "").unwrap();
        std::fs::write(&pwfile, options.password.clone().unwrap_or_default()).unwrap();
        if run_as.is_some() {
            for path in [&data, &log, &pwfile] {
                chown_postgres(path);
            }
        }
        let bin = bindir();
        let mut pg = Postgres { _dir: dir, data, log, bin, port: free_port(), tls: false, run_as };
        let auth = if options.password.is_some() { "scram-sha-256" } else { "trust" };
        let mut initdb = vec![
            "-D".to_owned(),
            pg.data.display().to_string(),
            "-U".into(),
            USER.into(),
            format!("--auth={auth}"),
            "--encoding=UTF8".into(),
            "--no-sync".into(),
        ];
        if options.password.is_some() {
            initdb.push(format!("--pwfile={}", pwfile.display()));
        }
        pg.run("initdb", &initdb);
        if let Some((cert, key)) = &options.tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = pg.data.join(name);
                std::fs::write(&path, pem).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                if pg.run_as.is_some() {
                    chown_postgres(&path);
                }
            }
            pg.tls = true;
        }
        pg.start_again();
        pg
    }

    /// `pg_ctl start` (after [`Postgres::stop`]): same port, same data.
    pub fn start_again(&self) {
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=50",
            self.port
        );
        if self.tls {
            opts.push_str(" -c ssl=on");
        }
        let data = self.data.display().to_string();
        let log = self.log.display().to_string();
        let ok = self.try_run("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
        assert!(ok, "PostgreSQL did not start; its log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// `pg_ctl stop -m fast`: clients see their connections closed, new ones are refused.
    pub fn stop(&self) {
        let data = self.data.display().to_string();
        assert!(self.try_run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"]), "pg_ctl stop failed");
    }

    /// A connection string for [`USER`] on the `postgres` database, with `extra` appended to the
    /// query (e.g. `sslmode=require`).
    pub fn url(&self, host: &str, extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { "?" };
        format!("postgres://{USER}@{host}:{}/postgres{sep}{extra}", self.port)
    }

    /// A plain (no TLS) client as [`USER`], for the test's own queries.
    pub async fn client(&self, password: Option<&str>) -> tokio_postgres::Client {
        let mut config: tokio_postgres::Config = self.url("127.0.0.1", "sslmode=disable").parse().unwrap();
        if let Some(p) = password {
            config.password(p);
        }
        config.connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("test client connects");
        tokio::spawn(connection);
        client
    }

    fn run(&self, tool: &str, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(self.try_run(tool, &args), "{tool} failed");
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> bool {
        let exe = self.bin.join(tool);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
        if !out.status.success() {
            eprintln!(
                "{tool} {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.try_run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"]);
    }
}

fn chown_postgres(path: &Path) {
    let out = Command::new("chown").args(["postgres:postgres"]).arg(path).output().unwrap();
    assert!(out.status.success(), "chown {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}
