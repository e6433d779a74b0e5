//! A throwaway PostgreSQL cluster for the tests and the load benchmark: made
//! with the machine's own `initdb` in a temporary directory, listening on a
//! free loopback port, owned by an unprivileged user (PostgreSQL refuses to
//! run as root, so as root it runs as `nobody`), and stopped when dropped or
//! when the process that started it exits, however it exits.
//!
//! Not used by the server itself.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// One cluster; [`PgCluster::url`] names a database in it.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The user the server runs as when this process is root.
    run_as: Option<String>,
    running: Option<(Child, ChildStdin)>,
    fsync: bool,
}

fn fail(what: &str, detail: impl std::fmt::Display) -> String {
    format!("{what}: {detail}")
}

/// The directory holding `initdb` and `postgres`: `TESSERA_PG_BIN`, else
/// the newest of Debian's `/usr/lib/postgresql/*/bin`, else `PATH`.
fn find_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("TESSERA_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists())
        .ok_or_else(|| {
            "PostgreSQL's initdb was not found (install Debian's `postgresql`, or set \
             TESSERA_PG_BIN to the directory holding initdb and postgres)"
                .to_owned()
        })
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| fail("finding a port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| fail("finding a port", e))
}

impl PgCluster {
    /// Create and start a cluster. `fsync: false` for tests (faster, and a
    /// crash of the machine loses nothing a test needs); the benchmark keeps
    /// it on to measure durable commits.
    pub fn start(fsync: bool) -> Result<Self, String> {
        let bin = find_bin()?;
        remove_abandoned();
        let base = std::env::temp_dir().join(format!(
            "tessera-pg-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&base).map_err(|e| fail("creating the cluster directory", e))?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then(|| "nobody".to_owned());
        if root {
            chown_to_nobody(&base)?;
        }
        let mut cluster = Self {
            bin,
            dir: base,
            port: free_port()?,
            run_as,
            running: None,
            fsync,
        };
        let data = cluster.data_dir();
        let out = cluster
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "tessera", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| fail("running initdb", e))?;
        if !out.status.success() {
            return Err(fail(
                "initdb failed",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        cluster.resume()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// One of the cluster's programs, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        self.as_owner(self.bin.join(program))
    }

    /// `program`, run as the user the cluster belongs to (this process's
    /// own user unless it is root).
    fn as_owner(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    "--regid=nogroup",
                    "--clear-groups",
                    "--",
                ])
                .arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Start the server again on the same data (after [`PgCluster::stop`]).
    pub fn resume(&mut self) -> Result<(), String> {
        if self.running.is_some() {
            return Ok(());
        }
        let postgres = self.bin.join("postgres");
        let data = self.data_dir();
        let settings = [
            "listen_addresses=127.0.0.1".to_owned(),
            format!("port={}", self.port),
            "unix_socket_directories=".to_owned(),
            format!("fsync={}", if self.fsync { "on" } else { "off" }),
            "max_connections=200".to_owned(),
            "log_min_messages=fatal".to_owned(),
        ];
        let mut args = vec![postgres.display().to_string(), "-D".into()];
        args.push(data.display().to_string());
        for setting in settings {
            args.push("-c".into());
            args.push(setting);
        }
        // The shell stops the server (fast shutdown) as soon as its standard
        // input closes: when this cluster is dropped or stopped, and when
        // this process dies without dropping it.
        let script = "\"$@\" & pid=$!; read _; kill -INT $pid; wait $pid";
        let mut shell = self.as_owner("sh");
        let mut child = shell
            .args(["-c", script, "postgres"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail("starting postgres", e))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| "starting postgres: no pipe".to_owned())?;
        self.running = Some((child, stdin));
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        for _ in 0..300 {
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map_err(|e| fail("running pg_isready", e))?;
            if ready.success() {
                return Ok(());
            }
            if let Some((child, _)) = &mut self.running {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("postgres exited at start ({status})"));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("postgres did not become ready within 15 s".into())
    }

    /// Stop the server (fast shutdown), keeping its data for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some((mut child, mut stdin)) = self.running.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` (see [`PgCluster::create_database`]).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://tessera@127.0.0.1:{}/{name}?connect_timeout=2",
            self.port
        )
    }

    /// Run SQL as the superuser in the `postgres` database.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "tessera", "-d", "postgres", "-c", sql])
            .output()
            .map_err(|e| fail("running psql", e))?;
        if !out.status.success() {
            return Err(fail("psql", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A new, empty database, and its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.sql(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Clusters left by processes that died without cleaning up: their servers
/// stopped with them (see `resume`), their files stay until removed here.
fn remove_abandoned() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("tessera-pg-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn chown_to_nobody(dir: &Path) -> Result<(), String> {
    let out = Command::new("chown")
        .args(["nobody:nogroup"])
        .arg(dir)
        .output()
        .map_err(|e| fail("chown", e))?;
    if !out.status.success() {
        return Err(fail("chown", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
