//! A crowd of watch clients, for measuring what open watchers cost the server: opens N SSE
//! streams on `/watch?prefix=P` and reads (and drops) whatever arrives, on one thread, until
//! the time is up; then prints how many bytes and streams it saw.
//!
//! `benches/watchers.sh` runs it beside wrk. By hand:
//! `cargo bench --bench watchers -- 127.0.0.1:PORT 1000 k 30` (address, watchers, prefix,
//! seconds). Only ever connects to the address given, which must be a loopback address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 4 {
        // `cargo bench` with no arguments runs every bench: nothing to do here.
        eprintln!("usage: watchers ADDR N PREFIX SECONDS");
        return;
    }
    let addr: SocketAddr = args[0].parse().expect("ADDR is IP:PORT");
    assert!(addr.ip().is_loopback(), "only loopback addresses");
    let n: usize = args[1].parse().expect("N");
    let prefix = args[2].clone();
    let secs: u64 = args[3].parse().expect("SECONDS");
    let bytes = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for _ in 0..n {
            let (bytes, open, prefix) = (Arc::clone(&bytes), Arc::clone(&open), prefix.clone());
            tokio::spawn(async move {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    return;
                };
                let req = format!("GET /watch?prefix={prefix} HTTP/1.1\r\nHost: x\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() {
                    return;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    bytes.fetch_add(k as u64, Ordering::Relaxed);
                }
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
    });
    println!(
        "watchers: {} of {n} still open, {} bytes read",
        open.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed)
    );
}
