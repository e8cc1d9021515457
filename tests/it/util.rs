//! The harness: start the real binary on `127.0.0.1:0` with a temporary data dir, read its
//! `listening on` line, and talk to it with a real HTTP client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

    /// Starts from a prepared command (extra env, pre_exec hooks).
    pub fn start_with(
        mut cmd: Command,
        dir: &Path,
        args: &[&str],
    ) -> Result<Server, (Option<ExitStatus>, String)> {
        cmd.arg("serve")
            .arg("--addr")
            .arg("127.0.0.1:0")
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
        let mut req = self.agent.request(method, &self.url(path));
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
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
        signal(c.id(), libc::SIGTERM);
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
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this test spawned; no memory is involved.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
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
