//! The `twinkv` command line and process life: the data-dir lock, the refusal of a non-loopback
//! address without a token, bearer-token auth, environment variables standing in for flags,
//! `--help`, usage errors (exit 2), the start-up lines, and a clean exit on SIGTERM and SIGINT.
//!
//! Only loopback traffic: the non-loopback checks start processes that must refuse before they
//! listen, and a process that does not exit within a minute is killed and fails its test. Every
//! spawned process runs in a temporary working directory, so a flag or variable that is ignored
//! can never touch `./data` of the repository.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::json;

use crate::util::{agent, command, signal, temp_dir, Server};

/// Every `serve` flag of the contract.
const SERVE_FLAGS: [&str; 11] = [
    "--addr",
    "--data-dir",
    "--durability",
    "--fsync-interval-ms",
    "--checkpoint-log-bytes",
    "--max-key-bytes",
    "--max-value-bytes",
    "--max-batch-bytes",
    "--workers",
    "--auth-token",
    "--insecure-no-auth",
];

/// Polls of 20 ms before a process that should exit is declared stuck: one minute.
const EXIT_POLLS: usize = 3000;

/// Runs `cmd` to its exit in a temporary working directory. A process still running after a
/// minute (a server that should have refused to start) is killed and fails the test.
fn run_to_exit(mut cmd: Command) -> Output {
    let cwd = temp_dir();
    cmd.current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn twinkv");
    for _ in 0..EXIT_POLLS {
        if child.try_wait().expect("try_wait").is_some() {
            let out = child.wait_with_output().expect("collect output");
            assert!(
                !cwd.path().join("data").exists(),
                "the process used ./data of its working directory"
            );
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("collect output");
    panic!(
        "still running after a minute; stdout {:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server started from a bare command (no `serve --addr --data-dir` added), for checks of the
/// environment and the default subcommand. Killed when dropped.
struct Spawned {
    child: Option<Child>,
    /// `http://IP:PORT` from its `listening on` line.
    base: String,
}

impl Spawned {
    /// Spawns `cmd` in `cwd` and waits (up to a minute) for its `listening on` line.
    fn start(mut cmd: Command, cwd: &Path) -> Spawned {
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn twinkv");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut spawned = Spawned {
            child: Some(child),
            base: String::new(),
        };
        spawned.base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a `listening on` line within a minute");
        spawned
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` and waits (up to a minute) for the exit.
    fn stop(mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), sig);
        for _ in 0..EXIT_POLLS {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("no exit within a minute of signal {sig:?}");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Name/value pairs: headers or environment variables.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// Method, path, headers and body of a request.
type Request<'a> = (&'a str, &'a str, Pairs<'a>, Option<&'a [u8]>);

/// Status and body of a request to a [`Spawned`] server.
fn call(base: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
    let req = agent().request(method, &format!("{base}{path}"));
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The data-dir lock

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_while_the_first_serves() {
    let dir = temp_dir();
    let first = Server::start(dir.path(), &[]);
    assert_eq!(first.put_text("k", "v1").status, 201);

    match Server::try_start(dir.path(), &[]) {
        Ok(second) => {
            drop(second);
            panic!("a second server started on a data dir in use");
        }
        Err((status, stderr)) => {
            let status = status.expect("the second server exited rather than hung");
            assert!(!status.success(), "{status:?}");
            assert!(
                stderr.contains(&dir.path().display().to_string()),
                "stderr does not name the data dir {}: {stderr:?}",
                dir.path().display()
            );
        }
    }
    // The refusal disturbed nothing: the first still reads and writes.
    assert_eq!(first.get("/health").status, 200);
    assert_eq!(first.get("/kv/k").text(), "v1");
    assert_eq!(first.put_text("k", "v2").status, 200);
    assert_eq!(first.get("/kv/k").text(), "v2");

    // Once the first is gone, the dir is free again and holds what it wrote.
    let status = first.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let again = Server::start(dir.path(), &[]);
    assert_eq!(again.get("/kv/k").text(), "v2");
}

// ---------------------------------------------------------------------------------------------
// Non-loopback addresses

#[test]
fn a_non_loopback_address_without_a_token_is_refused() {
    let dir = temp_dir();
    let data = dir.path().to_str().expect("UTF-8 temp path");
    let mut cases: Vec<(String, Command)> = Vec::new();
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let mut cmd = command();
        cmd.args(["serve", "--addr", addr, "--data-dir", data]);
        cases.push((format!("--addr {addr}"), cmd));
    }
    let mut cmd = command();
    cmd.env("TWINKV_ADDR", "0.0.0.0:0")
        .args(["serve", "--data-dir", data]);
    cases.push(("TWINKV_ADDR=0.0.0.0:0".into(), cmd));
    let mut cmd = command();
    cmd.args(["--addr", "0.0.0.0:0", "--data-dir", data]);
    cases.push(("--addr 0.0.0.0:0 without `serve`".into(), cmd));

    for (what, cmd) in cases {
        let out = run_to_exit(cmd);
        assert!(!out.status.success(), "{what}: {:?}", out.status);
        let err = stderr_of(&out);
        assert!(
            err.contains("--auth-token") || err.contains("loopback"),
            "{what}: the message should say why: {err:?}"
        );
        assert!(
            !stdout_of(&out).contains("listening on"),
            "{what}: it listened"
        );
    }
}

#[test]
fn insecure_no_auth_is_accepted() {
    // Only on loopback: a non-loopback bind is out of bounds for these tests.
    let dir = temp_dir();
    let s = Server::start(dir.path(), &["--insecure-no-auth"]);
    assert_eq!(s.put_text("k", "v").status, 201);
    assert_eq!(s.get("/kv/k").text(), "v");
}

// ---------------------------------------------------------------------------------------------
// Auth

#[test]
fn with_a_token_every_request_but_get_health_needs_it() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &["--auth-token", "s3cret"]);
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    let json_type = ("Content-Type", "application/json");
    let requests: Vec<Request> = vec![
        ("GET", "/kv/k", vec![], None),
        ("PUT", "/kv/k", vec![], Some(b"v")),
        ("PUT", "/kv/k", vec![json_type], Some(b"1")),
        ("POST", "/kv/k", vec![form_type], Some(b"value=v")),
        ("DELETE", "/kv/k", vec![], None),
        ("GET", "/kv", vec![], None),
        ("GET", "/kv?prefix=k&values=true", vec![], None),
        ("POST", "/kv", vec![json_type], Some(br#"{"put":{"k":1}}"#)),
        ("GET", "/metrics", vec![], None),
        ("GET", "/snapshot", vec![], None),
        ("POST", "/snapshot", vec![], None),
        ("GET", "/nope", vec![], None),
        ("PATCH", "/kv/k", vec![], Some(b"v")),
        ("POST", "/health", vec![], None),
    ];
    let wrong = [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("Bearer s3cret2"),
        Some("Bearer S3CRET"),
        Some("Bearer "),
        Some("Bearer"),
        Some("s3cret"),
        Some("Basic czNjcmV0"),
        Some("Token s3cret"),
    ];
    let mut violations = Vec::new();
    for (method, path, headers, body) in &requests {
        for auth in wrong {
            let mut headers = headers.clone();
            if let Some(a) = auth {
                headers.push(("Authorization", a));
            }
            let r = s.request(method, path, &headers, *body);
            let json_error = serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|v| v["error"].is_string());
            if r.status != 401 || !json_error {
                violations.push(format!(
                    "{method} {path} with {auth:?}: {} {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    let h = s.request("HEAD", "/kv/k", &[], None);
    if h.status != 401 {
        violations.push(format!("HEAD /kv/k without a token: {}", h.status));
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));

    // Health is open, with or without a (right or wrong) token.
    for auth in [None, Some("Bearer wrong"), Some("Bearer s3cret")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = s.request("GET", "/health", &headers, None);
        assert_eq!(r.status, 200, "{auth:?}: {}", r.text());
        assert_eq!(r.json()["status"], "ok");
    }

    // No unauthenticated write got through.
    let s = s.with_token("s3cret");
    s.get("/kv/k").assert_error(404);
    assert_eq!(s.get("/kv").json(), json!({"keys": [], "next": null}));
    let metrics = s.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("\ntwinkv_seq 0\n"),
        "{}",
        metrics.text()
    );

    // With the token everything works.
    assert_eq!(s.put_text("k", "v").status, 201);
    assert_eq!(s.get("/kv/k").text(), "v");
    assert_eq!(s.batch(&json!({"put": {"b": 1}})).status, 200);
    assert_eq!(s.get("/kv").json()["keys"], json!(["b", "k"]));
    assert_eq!(s.delete("b").status, 204);
    s.get("/nope").assert_error(404);
}

#[test]
fn a_401_says_how_to_authenticate() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &["--auth-token", "s3cret"]);
    let r = s.get("/kv/k");
    r.assert_error(401);
    // RFC 9110: a 401 carries WWW-Authenticate naming the scheme.
    let challenge = r.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "WWW-Authenticate: {challenge:?}"
    );
}

#[test]
fn without_a_token_no_header_is_needed() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.put_text("k", "v").status, 201);
    assert_eq!(s.get("/kv/k").text(), "v");
    assert_eq!(s.get("/kv").status, 200);
    assert_eq!(s.get("/metrics").status, 200);
    assert_eq!(s.get("/health").status, 200);
    // A stray header is ignored rather than refused.
    let r = s.request(
        "GET",
        "/kv/k",
        &[("Authorization", "Bearer whatever")],
        None,
    );
    assert_eq!((r.status, r.text()), (200, "v".to_string()));
}

// ---------------------------------------------------------------------------------------------
// Environment variables

#[test]
fn environment_variables_work_as_flags_do() {
    let dir = temp_dir();
    let mut cmd = command();
    cmd.env("TWINKV_MAX_KEY_BYTES", "8")
        .env("TWINKV_MAX_VALUE_BYTES", "10")
        .env("TWINKV_MAX_BATCH_BYTES", "200")
        .env("TWINKV_AUTH_TOKEN", "envtok")
        .env("TWINKV_WORKERS", "2")
        .env("TWINKV_DURABILITY", "sync");
    let s = Server::start_with(cmd, dir.path(), &[])
        .unwrap_or_else(|(status, err)| panic!("server failed to start ({status:?}): {err}"));
    s.get("/kv/k").assert_error(401);
    let s = s.with_token("envtok");
    assert_eq!(s.put_text("12345678", "0123456789").status, 201);
    let r = s.put_text("123456789", "v");
    assert!(
        matches!(r.status, 400 | 414),
        "TWINKV_MAX_KEY_BYTES=8 ignored: {}",
        r.status
    );
    s.put_text("k", "0123456789a").assert_error(413);
    let big = json!({"put": {"a": "x".repeat(100), "b": "y".repeat(100)}});
    s.batch(&big).assert_error(413);
    s.get("/kv/a").assert_error(404);
    // `sync`: an answered write is already flushed (the log), so durable_seq has reached it.
    let version = s.put_text("d", "durable").json()["version"]
        .as_u64()
        .expect("version");
    let text = s.get("/metrics").text();
    let durable: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("twinkv_durable_seq "))
        .expect("twinkv_durable_seq")
        .trim()
        .parse()
        .expect("a number");
    assert!(
        durable >= version,
        "TWINKV_DURABILITY=sync ignored: durable {durable} < version {version}"
    );
    drop(s);

    // A flag beats its variable.
    let dir = temp_dir();
    let mut cmd = command();
    cmd.env("TWINKV_MAX_KEY_BYTES", "8");
    let s = Server::start_with(cmd, dir.path(), &["--max-key-bytes", "16"])
        .unwrap_or_else(|(status, err)| panic!("server failed to start ({status:?}): {err}"));
    assert_eq!(s.put_text(&"k".repeat(16), "v").status, 201);
}

#[test]
fn addr_and_data_dir_come_from_the_environment_and_serve_is_the_default() {
    let dir = temp_dir();
    let cwd = temp_dir();
    let data = dir.path().join("nested/data");
    let mut cmd = command();
    cmd.env("TWINKV_ADDR", "127.0.0.1:0")
        .env("TWINKV_DATA_DIR", &data);
    // No subcommand: the same as `serve`.
    let s = Spawned::start(cmd, cwd.path());
    let port: u16 = s
        .base
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("not listening on 127.0.0.1: {}", s.base))
        .parse()
        .expect("a port");
    assert_ne!(port, 0);
    assert_eq!(call(&s.base, "PUT", "/kv/k", Some(b"v")).0, 201);
    assert_eq!(call(&s.base, "GET", "/kv/k", None), (200, "v".to_string()));
    assert!(data.is_dir(), "TWINKV_DATA_DIR was not created");
    let status = s.stop(Signal::TERM);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let snapshots: Vec<String> = std::fs::read_dir(&data)
        .expect("read data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    assert!(!snapshots.is_empty(), "no snapshot in TWINKV_DATA_DIR");
    assert!(
        !cwd.path().join("data").exists(),
        "./data was used instead of TWINKV_DATA_DIR"
    );
    let (code, dump, err) = crate::util::inspect(&["--dump", data.to_str().expect("UTF-8")]);
    assert_eq!(code, 0, "{err}");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("JSON dump");
    assert_eq!(dump, json!({"k": "v"}));
}

// ---------------------------------------------------------------------------------------------
// Help and usage errors

#[test]
fn help_exits_0_and_names_every_flag() {
    let mut top = command();
    top.arg("--help");
    let mut serve = command();
    serve.args(["serve", "--help"]);
    for (what, cmd) in [("twinkv --help", top), ("twinkv serve --help", serve)] {
        let out = run_to_exit(cmd);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr_of(&out));
        let text = stdout_of(&out);
        for flag in SERVE_FLAGS {
            assert!(
                text.contains(flag),
                "{what} does not mention {flag}:\n{text}"
            );
        }
        if what == "twinkv --help" {
            for sub in ["serve", "inspect"] {
                assert!(text.contains(sub), "{what} does not mention {sub}:\n{text}");
            }
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = temp_dir();
    let data = dir.path().to_str().expect("UTF-8 temp path");
    let safe = ["--addr", "127.0.0.1:0", "--data-dir", data];
    let cases: Vec<(Vec<&str>, Pairs)> = vec![
        ([&safe[..], &["--bogus"]].concat(), vec![]),
        ([&["serve"][..], &safe, &["--bogus"]].concat(), vec![]),
        ([&["serve"][..], &safe, &["--bogus=1"]].concat(), vec![]),
        ([&["serve"][..], &safe, &["-x"]].concat(), vec![]),
        (
            [&["serve"][..], &safe, &["--durability", "maybe"]].concat(),
            vec![],
        ),
        (
            [&["serve"][..], &safe, &["--max-key-bytes", "abc"]].concat(),
            vec![],
        ),
        ([&["serve"][..], &safe, &["--workers"]].concat(), vec![]),
        ([&["serve"][..], &safe, &["stray"]].concat(), vec![]),
        // Gone in 0.2 (the log's checkpoints replaced it): a flag error, not silently ignored.
        (
            [&["serve"][..], &safe, &["--snapshot-interval-ms", "100"]].concat(),
            vec![],
        ),
        (vec!["no-such-subcommand"], vec![]),
        (
            [&["serve"][..], &safe].concat(),
            vec![("TWINKV_DURABILITY", "maybe")],
        ),
        (
            [&["serve"][..], &safe].concat(),
            vec![("TWINKV_MAX_KEY_BYTES", "abc")],
        ),
    ];
    let mut violations = Vec::new();
    for (args, env) in cases {
        let mut cmd = command();
        cmd.args(&args).envs(env.iter().copied());
        let out = run_to_exit(cmd);
        if out.status.code() != Some(2) {
            violations.push(format!(
                "twinkv {args:?} env {env:?}: {:?}, stderr {:?}",
                out.status,
                stderr_of(&out)
            ));
        } else if stderr_of(&out).trim().is_empty() {
            violations.push(format!("twinkv {args:?} env {env:?}: exit 2 in silence"));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Start-up lines and signals

#[test]
fn startup_prints_the_address_and_what_was_recovered() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    let port = s.base.rsplit(':').next().expect("a port").to_string();
    assert_ne!(port, "0");
    let lines = s.stdout.lock().expect("stdout lines").clone();
    let recovered: Vec<&String> = lines.iter().filter(|l| l.contains("recover")).collect();
    assert_eq!(recovered.len(), 1, "one recovery line: {lines:?}");
    for word in ["seq", "keys", "ms"] {
        assert!(
            recovered[0].contains(word),
            "{word} missing: {}",
            recovered[0]
        );
    }
    assert_eq!(s.put_text("a", "1").status, 201);
    assert_eq!(s.put_text("b", "2").status, 201);
    assert_eq!(s.put_text("c", "3").status, 201);
    assert_eq!(s.delete("a").status, 204);
    assert_eq!(s.terminate().code(), Some(0));

    // After a restart, the line names the file, seq 4 and 2 keys.
    let s = Server::start(dir.path(), &[]);
    assert_eq!(
        s.base.strip_prefix("http://127.0.0.1:").map(|p| p != "0"),
        Some(true)
    );
    let lines = s.stdout.lock().expect("stdout lines").clone();
    let line = lines
        .iter()
        .find(|l| l.contains("recover"))
        .unwrap_or_else(|| panic!("no recovery line: {lines:?}"));
    assert!(line.contains("snapshot-"), "no file named: {line}");
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(numbers.contains(&4), "seq 4 missing: {line}");
    assert!(numbers.contains(&2), "2 keys missing: {line}");
    assert_eq!(s.get("/kv/c").text(), "3");
}

#[test]
fn sigterm_and_sigint_exit_0_after_a_final_snapshot() {
    for (name, sig) in [("SIGTERM", Signal::TERM), ("SIGINT", Signal::INT)] {
        let dir = temp_dir();
        let cwd = temp_dir();
        let mut cmd = command();
        // No checkpoint before shutdown: only the final snapshot (or the log) holds the write.
        cmd.args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--checkpoint-log-bytes",
            "1000000000",
        ])
        .arg("--data-dir")
        .arg(dir.path());
        let s = Spawned::start(cmd, cwd.path());
        assert!(s.pid() > 0);
        assert_eq!(call(&s.base, "PUT", "/kv/k", Some(name.as_bytes())).0, 201);
        let status = s.stop(sig);
        assert_eq!(status.code(), Some(0), "{name}: {status:?}");

        let again = Server::start(dir.path(), &[]);
        assert_eq!(
            again.get("/kv/k").text(),
            name,
            "{name}: the write was lost"
        );
    }
}
