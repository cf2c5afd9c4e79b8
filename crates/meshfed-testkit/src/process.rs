//! Real `meshfed` processes for end-to-end tests: a node directory made by `meshfed init`, its
//! gateway run as a child process on ephemeral loopback ports, and the CLI run against it.
//!
//! What it is: [`Mesh`] (one node directory and, while it runs, its gateway), [`Outcome`] (what
//! a finished command showed: exit code, stdout, stderr), [`Spawned`] (a command left running,
//! such as `meshfed subscribe`) and [`poll`] / [`wait_until`] (synchronisation by condition,
//! with a deadline, never by sleeping a fixed time). Every child process is killed when its
//! guard drops, also when a test fails half-way.
//!
//! What it is not: tied to one binary. The tests of the crate that builds `meshfed` pass
//! `env!("CARGO_BIN_EXE_meshfed")` to [`Mesh::init`]. Linux only: signals are sent with the
//! `kill` command, and [`connected_to`] reads `/proc`.
//!
//! Where to start reading: [`Mesh::init`], then [`Mesh::start`] and [`Mesh::cli`].

#![expect(
    clippy::expect_used,
    reason = "test support: a process that cannot be started or a file that cannot be read is a broken test setup"
)]

use std::fmt;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a condition before it fails: gateways start, links come up and
/// messages cross in well under a second; the rest is headroom for a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Interval between two looks at a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The heartbeat interval a [`Mesh`] is given by [`Mesh::init`]: three silent intervals mark a
/// link unreachable, so failures show within a second.
pub const FAST_HEARTBEAT: &str = "250ms";

/// The handshake timeout a [`Mesh`] is given by [`Mesh::init`].
pub const TEST_HANDSHAKE_TIMEOUT: &str = "5s";

/// Looks at `check` until it returns `Ok`, and returns that value. Fails the test after
/// `timeout`, naming `what` and the last thing `check` reported (its `Err`).
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not reached within {timeout:?}; last seen: {last}"
                );
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Looks at `cond` until it holds; fails the test after `timeout`, naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    poll(what, timeout, || {
        if cond() {
            Ok(())
        } else {
            Err("condition false".to_owned())
        }
    });
}

/// What a finished command showed its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    fn of(status: ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        Self {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Fails the test unless the command exited 0; returns its stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "command failed:\n{self}");
        &self.stdout
    }

    /// Fails the test unless the command exited with `code`, printed nothing on stdout, and
    /// its stderr starts with `error:` and contains `reason`; returns stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, reason: &str) -> &str {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
        assert!(
            self.stderr.starts_with("error:"),
            "stderr does not start with `error:`:\n{self}"
        );
        assert!(
            self.stderr.contains(reason),
            "stderr does not mention {reason:?}:\n{self}"
        );
        assert_eq!(
            self.stdout, "",
            "a failed command printed on stdout:\n{self}"
        );
        &self.stderr
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exit code: {:?}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// A child process that is killed (SIGKILL) and reaped when this guard drops.
#[derive(Debug)]
pub struct ProcessGuard {
    child: Child,
    name: String,
}

impl ProcessGuard {
    /// Guards `child`, called `name` in failure messages.
    pub fn new(child: Child, name: impl Into<String>) -> Self {
        Self {
            child,
            name: name.into(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name))
    }

    /// Waits until the process ends; fails the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let what = format!("{} exits", self.name);
        poll(&what, timeout, || {
            self.try_wait().ok_or_else(|| "still running".to_owned())
        })
    }

    /// Sends `signal` (a name `kill` knows: `TERM`, `STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run `kill`");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        // An error here means the process has already ended, which is what is wanted.
        let _ = self.child.kill();
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("reaping {}: {e}", self.name))
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command left running, its stdout and stderr going to files.
#[derive(Debug)]
pub struct Spawned {
    guard: ProcessGuard,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Spawned {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// What it has printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// What it has printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// The file its stdout goes to (it outlives the process, until the [`Mesh`] drops), for
    /// tests that read a long output a piece at a time.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Whether it has ended.
    pub fn has_exited(&mut self) -> bool {
        self.guard.try_wait().is_some()
    }

    /// Sends it `signal` (`TERM`, `STOP`, …).
    pub fn signal(&self, signal: &str) {
        self.guard.signal(signal);
    }

    /// Waits until it ends (failing the test after `timeout`) and returns what it showed.
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let what = format!("{} exits", self.guard.name);
        let status = poll(&what, timeout, || {
            self.guard
                .try_wait()
                .ok_or_else(|| format!("still running; stdout so far:\n{}", self.stdout_so_far()))
        });
        Outcome::of(
            status,
            fs::read(&self.stdout).unwrap_or_default(),
            fs::read(&self.stderr).unwrap_or_default(),
        )
    }
}

/// The gateway of a [`Mesh`] while it runs.
#[derive(Debug)]
struct Running {
    guard: ProcessGuard,
    federation: SocketAddr,
    api: SocketAddr,
}

/// One node directory, made by `meshfed init` in a temporary directory, and its gateway.
///
/// The node listens on `127.0.0.1:0` (federation and API), so the operating system picks free
/// ports; the addresses actually used are read from the gateway's ready line. The gateway logs
/// at `info` (`MESHFED_LOG=info`) to a log file beside the node directory, kept across restarts
/// ([`Mesh::log`]). When the test fails, the log is printed.
#[derive(Debug)]
pub struct Mesh {
    // Field order matters: the gateway is killed before its directory is removed.
    running: Option<Running>,
    spawned: u32,
    bin: PathBuf,
    mesh: String,
    dir: PathBuf,
    log: PathBuf,
    root: tempfile::TempDir,
}

impl Mesh {
    /// `meshfed init --mesh MESH --listen 127.0.0.1:0 --api 127.0.0.1:0` in a new temporary
    /// directory, then heartbeats of [`FAST_HEARTBEAT`] and a handshake timeout of
    /// [`TEST_HANDSHAKE_TIMEOUT`] in its `meshfed.toml`. `bin` is the `meshfed` binary.
    pub fn init(bin: impl Into<PathBuf>, mesh: &str) -> Self {
        Self::init_with(bin, mesh, false, &[])
    }

    /// [`Mesh::init`] with more `meshfed init` arguments (say `--node-cert-validity 4s`).
    pub fn init_with_args(bin: impl Into<PathBuf>, mesh: &str, args: &[&str]) -> Self {
        Self::init_with(bin, mesh, false, args)
    }

    /// [`Mesh::init`] with `--root-key-out`: the mesh CA key goes to [`Mesh::root_key_out`],
    /// outside the node directory, and the gateway has only the issuing CA key.
    pub fn init_with_root_key_out(bin: impl Into<PathBuf>, mesh: &str) -> Self {
        Self::init_with(bin, mesh, true, &[])
    }

    /// Where [`Mesh::init_with_root_key_out`] wrote the mesh CA key.
    pub fn root_key_out(&self) -> PathBuf {
        self.root.path().join("offline-root.key")
    }

    fn init_with(bin: impl Into<PathBuf>, mesh: &str, root_key_out: bool, args: &[&str]) -> Self {
        let root = crate::temp_dir();
        let dir = root.path().join(mesh);
        let log = root.path().join("gateway.log");
        let node = Self {
            running: None,
            spawned: 0,
            bin: bin.into(),
            mesh: mesh.to_owned(),
            dir,
            log,
            root,
        };
        let dir = node.dir.to_str().expect("temporary directory is UTF-8");
        let mut init = node.command();
        init.args([
            "init",
            "--dir",
            dir,
            "--mesh",
            mesh,
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ]);
        if root_key_out {
            init.arg("--root-key-out").arg(node.root_key_out());
        }
        init.args(args);
        run(init, None).ok();
        node.configure("federation", "heartbeat_interval", FAST_HEARTBEAT);
        node.configure("federation", "handshake_timeout", TEST_HANDSHAKE_TIMEOUT);
        node
    }

    /// Another gateway of this mesh made from a copy of this node directory, whose gateway must
    /// be stopped: the same mesh CA and issuing CA, configuration, admin token and store (so it
    /// knows, and resumes, the same federations — a standby taking over), but named `node` and
    /// with a fresh node key, so that it issues itself a certificate for `node` when it starts.
    pub fn copy_as(&self, node: &str) -> Mesh {
        assert!(
            self.running.is_none(),
            "stop the gateway of {} before copying its directory",
            self.mesh
        );
        let root = crate::temp_dir();
        let dir = root.path().join(&self.mesh);
        copy_dir(&self.dir, &dir);
        let copy = Self {
            running: None,
            spawned: 0,
            bin: self.bin.clone(),
            mesh: self.mesh.clone(),
            log: root.path().join("gateway.log"),
            dir,
            root,
        };
        copy.configure("node", "name", node);
        let key = meshfed_trust::SigningKey::generate().expect("generate a node key");
        let pem = meshfed_trust::key_to_pkcs8_pem(&key).expect("encode the node key");
        meshfed_trust::files::write_file(
            &copy.dir.join("node/node.key"),
            pem.as_bytes(),
            meshfed_trust::files::FileMode::Private,
            meshfed_trust::files::IfExists::Replace,
        )
        .expect("write the new node key");
        copy
    }

    /// The mesh id.
    pub fn name(&self) -> &str {
        &self.mesh
    }

    /// The node directory (`--dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets `key` in `[section]` of `meshfed.toml` to the string `value` (takes effect at the
    /// next [`Mesh::start`]). Fails the test if the file has no such key.
    pub fn configure(&self, section: &str, key: &str, value: &str) {
        self.configure_toml(section, key, &format!("\"{value}\""));
    }

    /// Sets `key` in `[section]` of `meshfed.toml` to `value` written as TOML (`64`, `true`,
    /// `"5s"`). Fails the test if the file has no such key.
    pub fn configure_toml(&self, section: &str, key: &str, value: &str) {
        let path = self.dir.join("meshfed.toml");
        let text = fs::read_to_string(&path).expect("read meshfed.toml");
        let header = format!("[{section}]");
        let mut in_section = false;
        let mut found = false;
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            if line.starts_with('[') {
                in_section = line.trim() == header;
            }
            let is_key = line
                .split_once('=')
                .is_some_and(|(k, _)| k.trim() == key && !line.starts_with('#'));
            if in_section && is_key && !found {
                found = true;
                out.push_str(&format!("{key} = {value}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        assert!(found, "meshfed.toml has no {key} in {header}:\n{text}");
        fs::write(&path, out).expect("write meshfed.toml");
    }

    /// Appends `text` (whole TOML tables, like `[[peers]]` entries) to `meshfed.toml`.
    pub fn append_config(&self, text: &str) {
        let path = self.dir.join("meshfed.toml");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open meshfed.toml");
        file.write_all(text.as_bytes())
            .expect("append to meshfed.toml");
    }

    /// Writes the federation address the running gateway got into `meshfed.toml`, so that after
    /// a restart it listens where its invitations (and its peers' registries) say it does.
    pub fn keep_federation_address(&self) {
        let addr = self.federation_addr().to_string();
        self.configure("federation", "listen", &addr);
    }

    /// Starts `meshfed gateway --dir DIR` (`meshfed broker` for a broker's directory, as its
    /// `meshfed.toml` says) and waits for its ready line; fails the test if the node exits
    /// first or does not get ready within [`DEADLINE`].
    pub fn start(&mut self) -> &mut Self {
        assert!(self.running.is_none(), "gateway {} already runs", self.mesh);
        let config = read_lossy(&self.dir.join("meshfed.toml"));
        let role = if config.contains("role = \"broker\"") {
            "broker"
        } else {
            "gateway"
        };
        self.spawned += 1;
        let stdout_path = self
            .root
            .path()
            .join(format!("gateway-{}.stdout", self.spawned));
        let stdout = File::create(&stdout_path).expect("create the gateway's stdout file");
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the gateway log");
        let child = self
            .command()
            .arg("--dir")
            .arg(&self.dir)
            .arg(role)
            .env("MESHFED_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn meshfed gateway");
        let mut guard = ProcessGuard::new(child, format!("gateway of {}", self.mesh));
        let what = format!("gateway of {} prints its ready line", self.mesh);
        let line = poll(&what, DEADLINE, || {
            let text = read_lossy(&stdout_path);
            if let Some(line) = text.lines().find(|l| l.contains(" ready: ")) {
                return Ok(line.to_owned());
            }
            if let Some(status) = guard.try_wait() {
                panic!(
                    "gateway of {} exited ({status}) before it was ready; log:\n{}",
                    self.mesh,
                    self.log()
                );
            }
            Err(format!("stdout: {text:?}"))
        });
        let (federation, api) = parse_ready(&line);
        self.running = Some(Running {
            guard,
            federation,
            api,
        });
        self
    }

    /// Stops the gateway with SIGTERM and returns its exit status (after at most [`DEADLINE`]).
    pub fn stop(&mut self) -> ExitStatus {
        let mut running = self.take_running();
        running.guard.signal("TERM");
        running.guard.wait(DEADLINE)
    }

    /// Kills the gateway with SIGKILL: no chance to close links or clean up.
    pub fn kill9(&mut self) {
        self.take_running().guard.kill();
    }

    /// Sends `signal` to the running gateway (`STOP` freezes it, `CONT` thaws it).
    pub fn signal(&self, signal: &str) {
        self.running().guard.signal(signal);
    }

    /// Whether the gateway process is still alive (fails the test if it was never started).
    pub fn is_running(&mut self) -> bool {
        let running = self
            .running
            .as_mut()
            .unwrap_or_else(|| panic!("gateway of {} is not running", self.mesh));
        running.guard.try_wait().is_none()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.running().guard.pid()
    }

    /// Where the running gateway accepts federation links.
    pub fn federation_addr(&self) -> SocketAddr {
        self.running().federation
    }

    /// Where the running gateway serves its API.
    pub fn api_addr(&self) -> SocketAddr {
        self.running().api
    }

    /// `meshfed --dir DIR ARGS...`, run to its end.
    pub fn cli(&self, args: &[&str]) -> Outcome {
        run(self.cli_command(args), None)
    }

    /// `meshfed --dir DIR ARGS...` with `stdin` as its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) -> Outcome {
        run(self.cli_command(args), Some(stdin))
    }

    /// `meshfed --dir DIR ARGS...`, left running; stdout and stderr go to files.
    pub fn spawn_cli(&mut self, args: &[&str]) -> Spawned {
        self.spawn_with(args, Stdio::null()).0
    }

    /// `meshfed --dir DIR ARGS...` with `stdin` as its standard input, left running; stdout and
    /// stderr go to files. The input is written to a file first, so a long input does not block
    /// the test while the command reads it.
    pub fn spawn_cli_with_stdin(&mut self, args: &[&str], stdin: &str) -> Spawned {
        let input = self
            .root
            .path()
            .join(format!("cli-{}.stdin", self.spawned + 1));
        fs::write(&input, stdin).expect("write a stdin file");
        let file = File::open(&input).expect("open the stdin file");
        self.spawn_with(args, Stdio::from(file)).0
    }

    /// `meshfed --dir DIR ARGS...` left running with its standard input a pipe the test writes
    /// to (and closes by dropping it); stdout and stderr go to files.
    pub fn spawn_cli_piped(&mut self, args: &[&str]) -> (Spawned, std::process::ChildStdin) {
        let (spawned, input) = self.spawn_with(args, Stdio::piped());
        (spawned, input.expect("stdin is piped"))
    }

    /// Spawns `meshfed --dir DIR ARGS...` with `stdin`, stdout and stderr going to files of
    /// its own; returns its stdin pipe when `stdin` is piped.
    fn spawn_with(
        &mut self,
        args: &[&str],
        stdin: Stdio,
    ) -> (Spawned, Option<std::process::ChildStdin>) {
        self.spawned += 1;
        let stdout = self
            .root
            .path()
            .join(format!("cli-{}.stdout", self.spawned));
        let stderr = self
            .root
            .path()
            .join(format!("cli-{}.stderr", self.spawned));
        let mut child = self
            .cli_command(args)
            .stdin(stdin)
            .stdout(File::create(&stdout).expect("create a stdout file"))
            .stderr(File::create(&stderr).expect("create a stderr file"))
            .spawn()
            .expect("spawn meshfed");
        let input = child.stdin.take();
        let spawned = Spawned {
            guard: ProcessGuard::new(child, format!("meshfed {}", args.join(" "))),
            stdout,
            stderr,
        };
        (spawned, input)
    }

    /// Everything the gateway has logged (stderr) over all its runs.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// A position in the log: pass it to [`Mesh::wait_for_log_after`] to look only at what is
    /// logged later.
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// Waits until a log line contains every one of `needles`; returns that line.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
        self.wait_for_log_after(0, needles)
    }

    /// Waits until a line logged after `mark` contains every one of `needles`; returns it.
    pub fn wait_for_log_after(&self, mark: usize, needles: &[&str]) -> String {
        let what = format!("log of {} shows a line with {needles:?}", self.mesh);
        poll(&what, DEADLINE, || {
            let log = self.log();
            let recent = log.get(mark..).unwrap_or_default();
            recent
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_owned)
                .ok_or_else(|| format!("log since mark:\n{recent}"))
        })
    }

    fn running(&self) -> &Running {
        self.running
            .as_ref()
            .unwrap_or_else(|| panic!("gateway of {} is not running", self.mesh))
    }

    fn take_running(&mut self) -> Running {
        self.running
            .take()
            .unwrap_or_else(|| panic!("gateway of {} is not running", self.mesh))
    }

    /// The binary, with no inherited setting that changes what it does or prints.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_remove("MESHFED_DIR")
            .env_remove("MESHFED_LOG")
            .env("NO_COLOR", "1");
        cmd
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command();
        cmd.arg("--dir").arg(&self.dir).args(args);
        cmd
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of the gateway of {} ----\n{}",
                self.mesh,
                self.log()
            );
        }
    }
}

/// Copies the directory tree `from` to `to` (files keep their modes): a store as it was, to
/// put back or to edit a copy of.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the copy's directory");
    for entry in fs::read_dir(from).expect("read the directory to copy") {
        let entry = entry.expect("read a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Runs `cmd` to its end, feeding it `stdin`; fails the test if it runs longer than
/// [`DEADLINE`].
fn run(mut cmd: Command, stdin: Option<&str>) -> Outcome {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn meshfed");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes()).expect("write to stdin");
        // Dropping the pipe closes it: the command sees the end of its input.
    }
    // The guard kills a command that hangs, so that the test fails instead of hanging.
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(DEADLINE).is_err() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
        panic!("{cmd:?} did not finish within {DEADLINE:?}");
    }
    let out = waiter
        .join()
        .expect("the waiting thread does not panic")
        .expect("collect the command's output");
    Outcome::of(out.status, out.stdout, out.stderr)
}

/// `meshfed gateway <mesh>/<node> ready: federation=<addr> api=http://<addr>`.
fn parse_ready(line: &str) -> (SocketAddr, SocketAddr) {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| {
                v.trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name}ADDR in the ready line {line:?}"))
    };
    (field("federation="), field("api="))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Whether process `pid` holds an established TCP connection to `port` on loopback (Linux:
/// its socket inodes in `/proc/PID/fd`, their state in `/proc/PID/net/tcp`).
pub fn connected_to(pid: u32, port: u16) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let want_port = format!("{port:04X}");
    ["tcp", "tcp6"].iter().any(|table| {
        let text = read_lossy(Path::new(&format!("/proc/{pid}/net/{table}")));
        text.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(remote), Some(state), Some(inode)) = (cols.get(2), cols.get(3), cols.get(9))
            else {
                return false;
            };
            *state == "01"
                && remote.rsplit(':').next() == Some(want_port.as_str())
                && inodes.iter().any(|i| i == inode)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_gives_both_addresses() {
        let (fed, api) = parse_ready(
            "meshfed gateway plant-a/gw1 ready: federation=127.0.0.1:4100 api=http://127.0.0.1:4200",
        );
        assert_eq!(fed.to_string(), "127.0.0.1:4100");
        assert_eq!(api.to_string(), "127.0.0.1:4200");
    }

    #[test]
    fn poll_returns_the_first_value_that_is_ready() {
        let mut n = 0;
        let v = poll("n reaches 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 { Ok(n) } else { Err(n.to_string()) }
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "never: not reached within")]
    fn poll_fails_with_the_last_observation_after_the_deadline() {
        poll::<()>("never", Duration::from_millis(50), || Err("nope".into()));
    }

    #[test]
    fn a_connection_to_a_listening_port_is_seen_in_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local address").port();
        assert!(!connected_to(std::process::id(), port));
        let _stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert!(connected_to(std::process::id(), port));
    }
}
