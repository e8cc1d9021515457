//! The harness: start the real binary on `127.0.0.1:0` with a temporary data dir, read its
//! `listening on` line, and talk to it with a real HTTP client.
//!
//! The one of each that every test module uses: [`Fixture`], a server on a fresh data dir;
//! [`agent`], the `ureq` client behind [`Server::request`] and any client thread's own; and
//! [`Conn`], the raw-HTTP client over bare TCP, for bytes no HTTP library would send.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_twinkv");

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one request through [`agent`] may take before the test calls it a hang (a bound, not
/// a measurement).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// A new HTTP client, with its own connection pool. Every `ureq` agent in these tests comes from
/// here, so each has the same hang guard.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build()
}

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts the status and that the body is a JSON error object; returns its message.
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field in {v}"))
            .to_string()
    }
}

/// A running server process. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data dir.
    pub dir: PathBuf,
    /// Lines the server printed on stdout.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// What the server printed on stderr.
    pub stderr: Arc<Mutex<String>>,
    agent: ureq::Agent,
    token: Option<String>,
}

/// A server on a fresh temporary data dir; derefs to the [`Server`]. Fields drop in order, so
/// the server is killed before its dir is removed.
pub struct Fixture {
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts a server with `args` on a fresh data dir.
    pub fn start(args: &[&str]) -> Fixture {
        let dir = temp_dir();
        let server = Server::start(dir.path(), args);
        Fixture { server, _dir: dir }
    }
}

impl std::ops::Deref for Fixture {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

/// A new temporary data dir.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("twinkv-it-")
        .tempdir()
        .expect("temp dir")
}

/// A `twinkv` command with `TWINKV_*` variables cleared, so the caller's environment never leaks.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("TWINKV_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TWINKV_LOG", "warn");
    cmd
}

impl Server {
    /// Starts a server on port 0 with `dir` as its data dir and `args` added.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Server::start_with(command(), dir, args)
            .unwrap_or_else(|(status, err)| panic!("server failed to start ({status:?}): {err}"))
    }

    /// Like `start`, but returns the exit status and stderr when the server does not come up.
    pub fn try_start(dir: &Path, args: &[&str]) -> Result<Server, (Option<ExitStatus>, String)> {
        Server::start_with(command(), dir, args)
    }

    /// Starts a server on `addr` (a loopback `IP:PORT`, so a restarted node keeps the address
    /// its peers know it by) with `dir` as its data dir and `args` added.
    pub fn start_at(dir: &Path, addr: &str, args: &[&str]) -> Server {
        Server::try_start_at(dir, addr, args)
            .unwrap_or_else(|(status, err)| panic!("server failed to start ({status:?}): {err}"))
    }

    /// Like `start_at`, but returns the exit status and stderr when the server does not come up.
    pub fn try_start_at(
        dir: &Path,
        addr: &str,
        args: &[&str],
    ) -> Result<Server, (Option<ExitStatus>, String)> {
        Server::start_with_addr(command(), dir, addr, args)
    }

    /// Starts from a prepared command (extra env, pre_exec hooks).
    pub fn start_with(
        cmd: Command,
        dir: &Path,
        args: &[&str],
    ) -> Result<Server, (Option<ExitStatus>, String)> {
        Server::start_with_addr(cmd, dir, "127.0.0.1:0", args)
    }

    /// Starts from a prepared command on `addr` (loopback only).
    pub fn start_with_addr(
        mut cmd: Command,
        dir: &Path,
        addr: &str,
        args: &[&str],
    ) -> Result<Server, (Option<ExitStatus>, String)> {
        let ip = addr.parse::<SocketAddr>().map(|a| a.ip());
        assert!(
            ip.is_ok_and(|ip| ip.to_string() == "127.0.0.1"),
            "tests only listen on 127.0.0.1, not {addr}"
        );
        cmd.arg("serve")
            .arg("--addr")
            .arg(addr)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn twinkv");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let out = child.stdout.take().expect("piped stdout");
            let lines = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = tx.send(addr.trim().to_string());
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        {
            let mut err = child.stderr.take().expect("piped stderr");
            let buf = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(base) => {
                    return Ok(Server {
                        child: Some(child),
                        base,
                        dir: dir.to_path_buf(),
                        stdout,
                        stderr,
                        agent: agent(),
                        token: None,
                    });
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Give the reader threads a moment to collect the last words.
                        std::thread::sleep(Duration::from_millis(100));
                        let err = stderr.lock().unwrap().clone();
                        return Err((Some(status), err));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let err = stderr.lock().unwrap().clone();
                        return Err((None, err));
                    }
                }
            }
        }
    }

    /// Sends `Authorization: Bearer <token>` on every later request.
    pub fn with_token(mut self, token: &str) -> Server {
        self.token = Some(token.to_string());
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        let addr: SocketAddr = self
            .base
            .strip_prefix("http://")
            .expect("base starts with http://")
            .parse()
            .expect("base is IP:PORT");
        assert_eq!(
            addr.ip().to_string(),
            "127.0.0.1",
            "tests only talk to 127.0.0.1"
        );
        addr
    }

    /// A fresh raw connection with [`IO_TIMEOUT`] on every read and write.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr(), IO_TIMEOUT)
    }

    /// Sends `bytes` byte for byte on a fresh raw connection and reads one answer (the head only
    /// when they start with `HEAD `). The token, if any, is not added.
    pub fn exchange(&self, bytes: &[u8]) -> Outcome {
        let mut c = self.connect();
        c.send(bytes);
        if bytes.starts_with(b"HEAD ") {
            c.answer_head()
        } else {
            c.answer()
        }
    }

    /// Like [`Server::exchange`], but anything other than a whole response fails the test.
    pub fn raw(&self, bytes: &[u8]) -> Resp {
        match self.exchange(bytes) {
            Outcome::Response(r) => r,
            other => panic!("no HTTP response to \"{}\": {other:?}", show(bytes)),
        }
    }

    /// Sends a request; never fails on an HTTP status.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends a request; `Err` only on a transport failure (refused, reset).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, String> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        if let Some(a) = &auth {
            all.push(("Authorization", a));
        }
        all.extend_from_slice(headers);
        call(&self.agent, method, &self.url(path), &all, body)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    pub fn put_text(&self, key: &str, text: &str) -> Resp {
        self.request("PUT", &format!("/kv/{key}"), &[], Some(text.as_bytes()))
    }

    pub fn put_json(&self, key: &str, json: &serde_json::Value) -> Resp {
        self.request(
            "PUT",
            &format!("/kv/{key}"),
            &[("Content-Type", "application/json")],
            Some(json.to_string().as_bytes()),
        )
    }

    pub fn delete(&self, key: &str) -> Resp {
        self.request("DELETE", &format!("/kv/{key}"), &[], None)
    }

    pub fn batch(&self, body: &serde_json::Value) -> Resp {
        self.request(
            "POST",
            "/kv",
            &[("Content-Type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    }

    /// `POST /snapshot` and its JSON.
    pub fn snapshot_now(&self) -> serde_json::Value {
        let r = self.request("POST", "/snapshot", &[], None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Every key with its value and version, through the listing API (pages of 10 000).
    pub fn entries(&self) -> Entries {
        let mut out = Entries::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut path = "/kv?values=true&limit=10000".to_string();
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", encode(a)));
            }
            let r = self.get(&path);
            assert_eq!(r.status, 200, "{}", r.text());
            let page = r.json();
            for item in page["items"].as_array().expect("items") {
                let key = item["key"].as_str().expect("key").to_string();
                out.insert(key, (item["value"].clone(), num(item, "version")));
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return out,
            }
        }
        panic!("listing did not end within {MAX_PAGES} pages");
    }

    /// Every key and value, through the listing API.
    pub fn all(&self) -> serde_json::Map<String, serde_json::Value> {
        self.entries()
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect()
    }

    /// `GET /snapshot` as JSON.
    pub fn snapshot_status(&self) -> serde_json::Value {
        let r = self.get("/snapshot");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (up to a minute) for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id(), Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not exit within a minute of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own.
    pub fn wait(mut self) -> ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }

    /// Waits at most `bound` for the process to exit on its own (see [`exit_within`]).
    pub fn wait_within(mut self, bound: Duration) -> ExitStatus {
        exit_within(self.child.take().expect("running"), bound)
    }
}

/// Waits at most `bound` for `child` to exit on its own; past it, kills it and fails the test
/// (a process expected to die must not hang the suite when it does not).
pub fn exit_within(mut child: Child, bound: Duration) -> ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every key with its value and version.
pub type Entries = std::collections::BTreeMap<String, (serde_json::Value, u64)>;

/// Most pages a listing loop follows; the stores in these tests are far smaller.
const MAX_PAGES: usize = 1000;

/// A `u64` field of a JSON object, or a panic naming it.
pub fn num(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer in {v}"))
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: Signal) {
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("{pid} is not a process id"));
    kill_process(target, sig).unwrap_or_else(|e| panic!("kill({pid}, {sig:?}): {e}"));
}

/// Percent-encodes every byte that is not unreserved (so `/` becomes `%2F`).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh copy of a data dir.
pub fn clone_dir(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let dest = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &dest);
            } else {
                std::fs::copy(&path, &dest).unwrap();
            }
        }
    }
    let dir = temp_dir();
    copy(from, dir.path());
    dir
}

/// Runs `twinkv inspect` with `args`; returns exit code, stdout, stderr.
pub fn inspect(args: &[&str]) -> (i32, String, String) {
    let out = command()
        .arg("inspect")
        .args(args)
        .output()
        .expect("run inspect");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// The raw-HTTP client

/// How long one read or write on a [`Conn`] may block before the test calls it a hang (a bound,
/// not a measurement).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What came back for one request on a [`Conn`].
pub enum Outcome {
    /// A whole response.
    Response(Resp),
    /// The server closed the connection (read returned 0) before a response began.
    Closed,
    /// The connection was reset or broke (an I/O error other than a timeout).
    Reset(std::io::Error),
    /// Nothing, or only part of a response, arrived within the read timeout.
    TimedOut(Vec<u8>),
    /// Bytes that are not an HTTP/1.x response, or a response cut short.
    Garbled(Vec<u8>),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Response(r) => {
                write!(f, "{} {:?} body \"{}\"", r.status, r.headers, show(&r.body))
            }
            Outcome::Closed => write!(f, "closed"),
            Outcome::Reset(e) => write!(f, "reset ({e})"),
            Outcome::TimedOut(b) => write!(f, "timed out after \"{}\"", show(b)),
            Outcome::Garbled(b) => write!(f, "garbled: \"{}\"", show(b)),
        }
    }
}

impl Outcome {
    /// A short name for reports: the status, or how the connection ended.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Response(r) => {
                let json = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
                let body = match json {
                    _ if r.body.is_empty() => "empty body",
                    Some(v) if v["error"].is_string() => "JSON error",
                    Some(_) => "JSON",
                    None => "non-JSON body",
                };
                format!("{} ({body})", r.status)
            }
            Outcome::Closed => "closed".into(),
            Outcome::Reset(_) => "reset".into(),
            Outcome::TimedOut(_) => "timed out".into(),
            Outcome::Garbled(_) => "garbled".into(),
        }
    }
}

/// At most the first 300 bytes, escaped, for messages.
pub fn show(b: &[u8]) -> String {
    let head = &b[..b.len().min(300)];
    let mut s = head.escape_ascii().to_string();
    if b.len() > head.len() {
        s.push_str(&format!("... ({} bytes)", b.len()));
    }
    s
}

/// A bare TCP connection: the bytes sent are exactly the bytes given, and responses are parsed
/// here, so no HTTP library tidies or normalises anything. For requests whose exact bytes matter
/// (bad percent-encoding, malformed HTTP, chunked or lying bodies, pipelining).
///
/// Every socket has read and write timeouts and every loop is bounded, so a misbehaving server
/// fails a test rather than hanging it.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet consumed as a response.
    buf: Vec<u8>,
    /// The error of the first write that failed, if any: the server hung up on us.
    write_error: Option<std::io::Error>,
}

impl Conn {
    /// Connects to `addr` (loopback only) with `read_timeout` on reads and [`IO_TIMEOUT`] on
    /// connecting and writing.
    pub fn open(addr: SocketAddr, read_timeout: Duration) -> Conn {
        assert!(addr.ip().is_loopback(), "tests only talk to loopback");
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the server");
        stream
            .set_read_timeout(Some(read_timeout))
            .expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
            write_error: None,
        }
    }

    /// A second handle on the same socket with nothing buffered, so one thread can read while
    /// another writes.
    pub fn try_clone(&self) -> Conn {
        Conn {
            stream: self.stream.try_clone().expect("clone the socket"),
            buf: Vec::new(),
            write_error: None,
        }
    }

    /// Writes `bytes`; a failure is remembered (the server may have answered and hung up).
    pub fn send(&mut self, bytes: &[u8]) {
        if self.write_error.is_some() {
            return;
        }
        if let Err(e) = self
            .stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush())
        {
            self.write_error = Some(e);
        }
    }

    /// The error of the first write that failed, if any.
    pub fn write_error(&self) -> Option<&std::io::Error> {
        self.write_error.as_ref()
    }

    /// Bytes received after the last response read.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// Half-closes our side: the server reads end-of-stream.
    pub fn finish(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Shuts both directions down, which also wakes a reader blocked on a clone.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads one response to a request that was not `HEAD`.
    pub fn answer(&mut self) -> Outcome {
        match self.read_response(false) {
            Ok(r) => Outcome::Response(r),
            Err(o) => o,
        }
    }

    /// Reads one response to a `HEAD` request: its head only, whatever length it declares.
    pub fn answer_head(&mut self) -> Outcome {
        match self.read_response(true) {
            Ok(r) => Outcome::Response(r),
            Err(o) => o,
        }
    }

    /// Everything the server sends from here until it closes the connection, bytes already
    /// received included; `Err` when it neither closes nor resets it within the read timeout.
    pub fn read_to_close(&mut self) -> Result<Vec<u8>, Outcome> {
        // Bounded: every pass reads at least one byte or returns, and the total is capped.
        loop {
            match self.fill() {
                Ok(()) if self.buf.len() > 16 << 20 => {
                    return Err(Outcome::Garbled(std::mem::take(&mut self.buf)))
                }
                Ok(()) => {}
                Err(Outcome::Closed) => return Ok(Vec::new()),
                // End-of-stream with bytes buffered.
                Err(Outcome::Garbled(rest)) => return Ok(rest),
                Err(Outcome::Reset(_)) => return Ok(std::mem::take(&mut self.buf)),
                Err(other) => return Err(other),
            }
        }
    }

    /// Whether the server has closed the connection: once every answer expected has been read, a
    /// request sent now gets no answer, only end-of-stream or a reset. Not timed: a server that
    /// kept the connection open answers the request at once (or, silent, is cut off by the read
    /// timeout).
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        if self.write_error.is_some() {
            return true;
        }
        matches!(self.fill(), Err(Outcome::Closed | Outcome::Reset(_)))
    }

    /// Reads more bytes into `buf`; `Err` says how the connection ended.
    fn fill(&mut self) -> Result<(), Outcome> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) if self.buf.is_empty() => Err(Outcome::Closed),
            Ok(0) => Err(Outcome::Garbled(std::mem::take(&mut self.buf))),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(Outcome::TimedOut(std::mem::take(&mut self.buf)))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Outcome::Reset(e)),
        }
    }

    fn read_response(&mut self, head_only: bool) -> Result<Resp, Outcome> {
        // Bounded: every pass reads at least one byte or returns, and the head is capped.
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(Outcome::Garbled(std::mem::take(&mut self.buf)));
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        let Some(status) = status else {
            return Err(Outcome::Garbled(std::mem::take(&mut self.buf)));
        };
        let mut headers = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(Outcome::Garbled(std::mem::take(&mut self.buf)));
            };
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        self.buf.drain(..head_end + 4);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if head_only || status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.read_chunked()?
        } else if let Some(len) = header("content-length") {
            let Ok(len) = len.parse::<usize>() else {
                return Err(Outcome::Garbled(std::mem::take(&mut self.buf)));
            };
            self.read_exact_body(len)?
        } else {
            // Delimited by close.
            loop {
                match self.fill() {
                    Ok(()) => {}
                    Err(Outcome::Closed | Outcome::Garbled(_)) => break,
                    Err(other) => return Err(other),
                }
                if self.buf.len() > 16 << 20 {
                    return Err(Outcome::Garbled(std::mem::take(&mut self.buf)));
                }
            }
            std::mem::take(&mut self.buf)
        };
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    fn read_exact_body(&mut self, len: usize) -> Result<Vec<u8>, Outcome> {
        while self.buf.len() < len {
            let had = self.buf.clone();
            if let Err(e) = self.fill() {
                return Err(match e {
                    Outcome::Closed => Outcome::Garbled(had),
                    other => other,
                });
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, Outcome> {
        let mut body = Vec::new();
        // Bounded by the 16 MiB cap on the decoded body.
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Outcome::Garbled(self.buf.clone()))?;
            self.buf.drain(..line_end + 2);
            let chunk = self.read_exact_body(size + 2)?;
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..size]);
            if body.len() > 16 << 20 {
                return Err(Outcome::Garbled(body));
            }
        }
    }
}

/// One request with `agent` to a full URL; `Err` only on a transport failure or a timeout
/// (any status is a `Resp`).
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// One Server-Sent Event of a watch stream: its id, its `event:` name (empty for a data
/// event), its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: Option<serde_json::Value>,
}

/// An open watch stream (Server-Sent Events), read an event at a time. The one reader of
/// `/watch` for the watch and cluster tests.
pub struct SseStream {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
}

impl SseStream {
    /// Opens `url` with `headers`, following no redirect; a refusal gives its status and JSON
    /// body.
    pub fn open(
        url: &str,
        headers: &[(&str, &str)],
        read_timeout: Duration,
    ) -> Result<SseStream, (u16, serde_json::Value)> {
        let agent = ureq::AgentBuilder::new()
            .timeout_read(read_timeout)
            .redirects(0)
            .build();
        let mut req = agent.get(url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        match req.call() {
            Ok(r) => Ok(SseStream {
                lines: BufReader::new(r.into_reader()),
            }),
            Err(ureq::Error::Status(code, r)) => {
                Err((code, r.into_json().unwrap_or(serde_json::Value::Null)))
            }
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    /// The next event (comments skipped); `None` at the end of the stream.
    pub fn next(&mut self) -> Option<Sse> {
        let mut ev = Sse {
            id: None,
            event: String::new(),
            data: None,
        };
        let mut any = false;
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    return Some(ev);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            any = true;
            if let Some(v) = line.strip_prefix("id: ") {
                ev.id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                ev.event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                ev.data = Some(serde_json::from_str(v).expect("event data is JSON"));
            }
        }
    }

    /// The next data event (named events such as `progress` skipped).
    pub fn change(&mut self) -> Option<Sse> {
        loop {
            let e = self.next()?;
            if e.event.is_empty() {
                return Some(e);
            }
        }
    }

    /// Reads until the named event `name` (say `reset`), skipping everything before it; fails
    /// after `deadline` (progress events keep an idle stream from timing out on its own) or
    /// if the stream ends first.
    pub fn until_event(&mut self, name: &str, deadline: Duration) {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < deadline,
                "no `event: {name}` within {deadline:?}"
            );
            let e = self
                .next()
                .unwrap_or_else(|| panic!("the watch stream ended without `event: {name}`"));
            if e.event == name {
                return;
            }
        }
    }
}
