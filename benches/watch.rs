//! How soon a watcher hears of a write: the time from a PUT's answer to its event arriving on
//! an SSE stream, on an otherwise idle server run in-process (`twinkv::server::serve` on a
//! loopback listener, `async`, a temporary data dir). Prints p50, p99 and max of 2000 writes.
//!
//! Run with `cargo bench --bench watch`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use twinkv::cli::Cli;

const WRITES: usize = 2000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let cli = Cli::try_parse_from([
        "twinkv",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--workers",
        "1",
    ])
    .expect("flags");
    let config = twinkv::Config::from_args(&cli.serve).expect("config");
    let (stop_tx, stop_rx) = futures_channel();
    let server = std::thread::spawn(move || {
        twinkv::server::serve(&config, listener, async move {
            let _ = stop_rx.await;
        })
    });
    // Wait until it answers.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let base = format!("http://{addr}");
    for _ in 0..500 {
        if agent.get(&format!("{base}/health")).call().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A raw SSE client: the stream is chunked, so read lines and keep the `data:` ones.
    let mut sse = TcpStream::connect(addr).unwrap();
    sse.set_nodelay(true).unwrap();
    sse.write_all(b"GET /watch?prefix=w/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut lines = BufReader::new(sse.try_clone().unwrap());
    let mut line = String::new();
    // Skip the head and the opening comment.
    loop {
        line.clear();
        lines.read_line(&mut line).unwrap();
        if line.starts_with(": watching") {
            break;
        }
    }
    let mut writer = TcpStream::connect(addr).unwrap();
    writer.set_nodelay(true).unwrap();
    let mut reply = [0u8; 4096];
    let mut samples = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let body = "v";
        let req = format!(
            "PUT /kv/w/{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(req.as_bytes()).unwrap();
        // The answer is small and comes in one read.
        let n = writer.read(&mut reply).unwrap();
        assert!(n > 0 && reply.starts_with(b"HTTP/1.1 201"));
        let answered = Instant::now();
        loop {
            line.clear();
            lines.read_line(&mut line).unwrap();
            if line.starts_with("data: ") {
                break;
            }
        }
        samples.push(answered.elapsed());
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    samples.sort();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "watch event after the write's answer, {WRITES} writes: p50 {:?}, p99 {:?}, max {:?}",
        q(0.5),
        q(0.99),
        samples[samples.len() - 1]
    );
    let _ = stop_tx.send(());
    server.join().unwrap().expect("serve stops cleanly");
}

/// A one-shot channel whose receiver is a future serve can await.
fn futures_channel() -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    tokio::sync::oneshot::channel()
}
