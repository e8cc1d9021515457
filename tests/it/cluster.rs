//! Cluster mode (`--raft-addr`, `--node-id`): real nodes on loopback replicating through Raft,
//! and what clients are told under faults.
//!
//! - Three nodes agree on membership and leader; every answered write reads back the same, with
//!   the same ETag and `Twinkv-Seq`, on every node; followers redirect writes with 307 to the
//!   leader's address, path and query kept; a watch on a follower sees the leader's events.
//! - Killing the leader or a follower (SIGKILL) under a concurrent load loses no answered write;
//!   the restarted node catches up.
//! - Without a majority, nothing is answered 2xx; once nodes return, everything answered before
//!   is there and writes go on.
//! - A partitioned (test switch `data/raft/test-partition`) or stopped (SIGSTOP) leader answers
//!   no write; the others elect a new one; once healed it steps down and the three converge.
//! - A short random history of reads, writes and compare-and-sets across a leader kill and
//!   restart passes a per-key register check (and a long one with more faults, ignored by
//!   default). With reads on the restarted node while it catches up it does not: such a node
//!   serves stale linearizable reads (`restarted_node_serves_no_stale_linearizable_read` and
//!   `linearizable_history_short`, both ignored as that bug).
//! - Raft RPCs need the token; a non-loopback `--raft-addr` without one is refused; standalone,
//!   the `/cluster` routes are 404.
//!
//! Every wait is bounded by [`DEADLINE`] and fails with what it last saw; nothing asserts on
//! speed. A node keeps its API and Raft addresses across restarts (its peers know it by them):
//! its first start takes port 0 for both and later starts reuse what it printed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::{json, Value};

use crate::util::{call, encode, num, signal, temp_dir, Fixture, Resp, Server, SseStream};

/// The longest any one wait lasts before the test fails (a bound, not a measurement).
const DEADLINE: Duration = Duration::from_secs(20);

/// A client's bound on one request in the fault phases: a write that cannot be committed hangs,
/// and the client gives up on it (its outcome is then unknown).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause between polls.
const POLL: Duration = Duration::from_millis(50);

/// An HTTP client that never follows redirects, so every 307 is seen.
fn client(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .build()
}

/// Sends a request and follows up to three 307s (each `Location` must be on 127.0.0.1).
/// Returns the last answer and the `IP:PORT` that gave it.
fn follow(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(Resp, String), String> {
    let mut url = url.to_string();
    for _ in 0..3 {
        let r = call(agent, method, &url, headers, body)?;
        if r.status != 307 {
            return Ok((r, host_of(&url)));
        }
        let loc = r
            .header("location")
            .ok_or_else(|| format!("a 307 from {url} without Location"))?
            .to_string();
        assert!(
            loc.starts_with("http://127.0.0.1:"),
            "a redirect off loopback: {loc}"
        );
        url = loc;
    }
    let r = call(agent, method, &url, headers, body)?;
    Ok((r, host_of(&url)))
}

/// `IP:PORT` of an `http://IP:PORT/...` URL.
fn host_of(url: &str) -> String {
    url.strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// A transport error without its URL, for summaries.
fn transport(e: &str) -> String {
    match e.split_once(": ") {
        Some((url, rest)) if url.starts_with("http://") => rest.to_string(),
        _ => e.to_string(),
    }
}

/// The version in a response's `ETag: "<n>"`.
fn etag_version(r: &Resp) -> Option<u64> {
    r.header("etag")?
        .strip_prefix('"')?
        .strip_suffix('"')?
        .parse()
        .ok()
}

/// The response's `Twinkv-Seq`.
fn seq_of(r: &Resp) -> Option<u64> {
    r.header("twinkv-seq")?.parse().ok()
}

/// Polls `f` every [`POLL`] until it returns `Ok`; fails naming `what` and the last `Err`
/// after [`DEADLINE`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: not within {DEADLINE:?}; last: {e}")
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// A deterministic generator, so a failing run can be replayed from its printed seed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes and clusters

/// One cluster node: its data dir and addresses outlive its processes.
struct Node {
    id: u64,
    dir: tempfile::TempDir,
    /// The API address, `127.0.0.1:PORT`.
    addr: String,
    /// The Raft address, `127.0.0.1:PORT`.
    raft_addr: String,
    server: Option<Server>,
    /// What earlier runs printed on stderr.
    past_stderr: String,
}

impl Node {
    /// Starts a node on port 0 for both listeners, with `extra` flags.
    fn start(id: u64, extra: &[&str]) -> Node {
        let dir = temp_dir();
        let id_text = id.to_string();
        let mut args = vec!["--raft-addr", "127.0.0.1:0", "--node-id", &id_text];
        args.extend_from_slice(extra);
        let server = Server::start(dir.path(), &args);
        let raft_addr =
            raft_line(&server).unwrap_or_else(|| panic!("node {id} printed no `raft on` line"));
        let addr = server.addr().to_string();
        Node {
            id,
            dir,
            addr,
            raft_addr,
            server: Some(server),
            past_stderr: String::new(),
        }
    }

    /// Starts the node again on its data dir and addresses. A port may linger in use for a
    /// moment after a kill; that is retried until [`DEADLINE`].
    fn restart(&mut self) {
        assert!(self.server.is_none(), "node {} is running", self.id);
        let id = self.id.to_string();
        let args = ["--raft-addr", &self.raft_addr, "--node-id", &id];
        let deadline = Instant::now() + DEADLINE;
        loop {
            match Server::try_start_at(self.dir.path(), &self.addr, &args) {
                Ok(s) => {
                    assert_eq!(raft_line(&s).as_deref(), Some(self.raft_addr.as_str()));
                    self.server = Some(s);
                    return;
                }
                Err((_, err)) if err.contains("in use") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err((status, err)) => panic!("node {id} did not restart ({status:?}): {err}"),
            }
        }
    }

    /// SIGKILL, keeping what it printed on stderr.
    fn kill(&mut self) {
        let s = self
            .server
            .take()
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        let err = Arc::clone(&s.stderr);
        s.kill();
        thread::sleep(Duration::from_millis(20));
        self.past_stderr.push_str(&err.lock().unwrap());
    }

    fn pid(&self) -> u32 {
        self.server.as_ref().expect("running").pid()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET /cluster`, or `None` when the node does not answer 200.
    fn status(&self, agent: &ureq::Agent) -> Option<Value> {
        let r = call(agent, "GET", &self.url("/cluster"), &[], None).ok()?;
        (r.status == 200).then(|| r.json())
    }

    /// Turns the test-only partition switch on or off.
    fn partition(&self, on: bool) {
        let p = self.dir.path().join("raft").join("test-partition");
        if on {
            std::fs::write(&p, b"").expect("create raft/test-partition");
        } else {
            std::fs::remove_file(&p).expect("remove raft/test-partition");
        }
    }

    /// Everything the node printed on stderr, over all its runs.
    fn stderr(&self) -> String {
        let mut s = self.past_stderr.clone();
        if let Some(srv) = &self.server {
            s.push_str(&srv.stderr.lock().unwrap());
        }
        s
    }
}

/// The address in a server's `raft on IP:PORT` line.
fn raft_line(s: &Server) -> Option<String> {
    s.stdout
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.strip_prefix("raft on "))
        .map(|a| a.trim().to_string())
}

/// Nodes `1..=n`, made one cluster.
struct Cluster {
    nodes: Vec<Node>,
    /// For writes, membership changes and listings.
    admin: ureq::Agent,
    /// For `GET /cluster` polls.
    probe: ureq::Agent,
}

/// Every key under a prefix with its value and version.
type Listing = BTreeMap<String, (Value, u64)>;

impl Cluster {
    /// Starts `n` nodes, initialises node 1 and adds the others through it.
    fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Like [`Cluster::start`], every node with `extra` flags.
    fn start_with(n: u64, extra: &[&str]) -> Cluster {
        let nodes: Vec<Node> = (1..=n).map(|id| Node::start(id, extra)).collect();
        let c = Cluster {
            nodes,
            admin: client(Duration::from_secs(30)),
            probe: client(Duration::from_secs(2)),
        };
        let r = call(&c.admin, "POST", &c.node(1).url("/cluster/init"), &[], None)
            .expect("POST /cluster/init");
        assert_eq!(r.status, 200, "POST /cluster/init: {}", r.text());
        c.wait_leader(&[1]);
        for id in 2..=n {
            let body =
                json!({"id": id, "addr": c.node(id).addr, "raft_addr": c.node(id).raft_addr});
            let r = call(
                &c.admin,
                "POST",
                &c.node(1).url("/cluster/nodes"),
                &[("Content-Type", "application/json")],
                Some(body.to_string().as_bytes()),
            )
            .expect("POST /cluster/nodes");
            assert_eq!(r.status, 200, "adding node {id}: {}", r.text());
        }
        c.wait_leader(&c.ids());
        c
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Every node's API address, in id order (for client threads).
    fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The leader every node of `ids` names, when they agree, it is one of them, and it says
    /// it leads.
    fn agreed_leader(&self, ids: &[u64]) -> Result<u64, String> {
        let mut leader = None;
        for &id in ids {
            let s = self
                .node(id)
                .status(&self.probe)
                .ok_or_else(|| format!("node {id} gives no GET /cluster answer"))?;
            let l = s["leader"]
                .as_u64()
                .ok_or_else(|| format!("node {id} knows no leader: {s}"))?;
            match leader {
                Some(x) if x != l => {
                    return Err(format!("nodes disagree: {x}, and {l} for node {id}"))
                }
                _ => leader = Some(l),
            }
            if l == id && s["state"] != "leader" {
                return Err(format!("node {id} is named leader but says {s}"));
            }
        }
        let l = leader.ok_or("no nodes")?;
        if !ids.contains(&l) {
            return Err(format!("the leader named, {l}, is not among {ids:?}"));
        }
        Ok(l)
    }

    /// Waits for the nodes of `ids` to agree on a leader among them.
    fn wait_leader(&self, ids: &[u64]) -> u64 {
        wait_for(&format!("nodes {ids:?} agree on a leader"), || {
            self.agreed_leader(ids)
        })
    }

    /// Whether the nodes of `ids` agree on a leader and have all applied the same index and
    /// seq, which is everything the leader has committed.
    fn converged(&self, ids: &[u64]) -> Result<(), String> {
        let leader = self.agreed_leader(ids)?;
        let mut seen = Vec::new();
        for &id in ids {
            let s = self
                .node(id)
                .status(&self.probe)
                .ok_or_else(|| format!("node {id} gives no GET /cluster answer"))?;
            seen.push((
                id,
                num(&s, "applied_index"),
                num(&s, "seq"),
                num(&s, "commit_index"),
            ));
        }
        let (_, applied, seq, _) = seen[0];
        let commit = seen.iter().find(|s| s.0 == leader).map(|s| s.3);
        if seen.iter().all(|s| s.1 == applied && s.2 == seq) && commit == Some(applied) {
            Ok(())
        } else {
            Err(format!(
                "(id, applied_index, seq, commit_index) differ: {seen:?}"
            ))
        }
    }

    fn wait_converged(&self, ids: &[u64]) {
        wait_for(&format!("nodes {ids:?} converge"), || self.converged(ids))
    }

    /// A write through whichever of `ids` leads: follows 307s, and retries after a 503 or a
    /// transport failure until [`DEADLINE`]. For phases where every node of `ids` is up.
    fn write(&self, ids: &[u64], method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        self.write_with(ids, method, path, &[], body)
    }

    fn write_with(
        &self,
        ids: &[u64],
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut i = 0;
        wait_for(&format!("{method} {path} is answered"), || {
            i += 1;
            let node = match self.agreed_leader(ids) {
                Ok(l) => self.node(l),
                Err(_) => self.node(ids[i % ids.len()]),
            };
            match follow(&self.admin, method, &node.url(path), headers, body) {
                Ok((r, _)) if r.status == 503 || r.status == 307 => {
                    Err(format!("{} {}", r.status, r.text()))
                }
                Ok((r, _)) => Ok(r),
                Err(e) => Err(e),
            }
        })
    }

    /// Every key under `prefix` on node `id`, read with `consistency`.
    fn listing(&self, id: u64, prefix: &str, consistency: &str) -> Result<Listing, String> {
        let path = format!(
            "/kv?prefix={}&values=true&limit=10000&consistency={consistency}",
            encode(prefix)
        );
        let r = call(&self.admin, "GET", &self.node(id).url(&path), &[], None)?;
        if r.status != 200 {
            return Err(format!(
                "GET {path} on node {id}: {} {}",
                r.status,
                r.text()
            ));
        }
        let page = r.json();
        assert!(
            page["next"].is_null(),
            "more than one page: {}",
            page["next"]
        );
        Ok(page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| {
                let key = item["key"].as_str().expect("key").to_string();
                (key, (item["value"].clone(), num(item, "version")))
            })
            .collect())
    }

    /// Waits until every node of `ids` holds the same listing under `prefix` (stale reads, so
    /// each node's own copy), and returns it.
    fn wait_same_listing(&self, ids: &[u64], prefix: &str) -> Listing {
        wait_for(&format!("nodes {ids:?} hold the same {prefix:?}"), || {
            let first = self.listing(ids[0], prefix, "stale")?;
            for &id in &ids[1..] {
                let other = self.listing(id, prefix, "stale")?;
                if other != first {
                    return Err(format!(
                        "node {id} differs from node {}: {}",
                        ids[0],
                        listing_diff(&first, &other)
                    ));
                }
            }
            Ok(first)
        })
    }

    /// Every node's stderr, for failure messages.
    fn stderrs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} stderr ---\n{}", n.id, tail(&n.stderr(), 3000)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last `n` bytes of `s` (at a char boundary).
fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// The first few keys on which two listings differ.
fn listing_diff(a: &Listing, b: &Listing) -> String {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(5)
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect();
    diffs.join("; ")
}

/// A watch stream on `node`, which must accept it.
fn watch(node: &Node, query: &str) -> SseStream {
    SseStream::open(&node.url(&format!("/watch{query}")), &[], DEADLINE)
        .unwrap_or_else(|(code, body)| panic!("watch {query}: {code} {body}"))
}

/// The next data event of `w`: its id and data.
fn change(w: &mut SseStream) -> (Option<String>, Value) {
    let e = w.change().expect("the watch stream ended");
    (e.id, e.data.expect("a data event has data"))
}

// ---------------------------------------------------------------------------------------------
// 1. Replication

/// A follower cut off while the leader builds Raft snapshots and purges its log falls behind
/// the log: on healing it receives the leader's image. It cannot say which keys changed on the
/// way, so its watch streams end with `reset`; then it holds every write.
#[test]
fn a_lagging_follower_receives_the_image_and_its_watchers_are_reset() {
    let mut c = Cluster::start_with(3, &["--raft-snapshot-entries", "20"]);
    let all = c.ids();
    let leader = c.wait_leader(&all);
    let lagging = *all.iter().find(|&&i| i != leader).expect("a follower");
    let rest: Vec<u64> = all.iter().copied().filter(|&i| i != lagging).collect();
    let mut watch = watch(c.node(lagging), "?prefix=lag/&consistency=stale");
    c.node(lagging).partition(true);
    for i in 0..100 {
        let r = c.write(&rest, "PUT", &format!("/kv/lag/{i:03}"), Some(b"v"));
        assert_eq!(r.status, 201, "PUT lag/{i:03}: {}", r.text());
    }
    c.node(lagging).partition(false);
    watch.until_event("reset", DEADLINE);
    c.wait_converged(&all);
    let listing = c.wait_same_listing(&all, "lag/");
    assert_eq!(listing.len(), 100, "{listing:?}");
    // The image it received is in a slot file, with the Raft state it is a snapshot of.
    let images: Vec<Value> = ["snapshot-a.json", "snapshot-b.json"]
        .iter()
        .filter_map(|n| std::fs::read_to_string(c.node(lagging).dir.path().join(n)).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .collect();
    let received = images
        .iter()
        .find(|doc| doc["data"]["lag/000"] == json!("v"))
        .unwrap_or_else(|| panic!("no slot image holds the received keys: {images:?}"));
    let raft = &received["raft"];
    assert!(
        raft["last_log_id"]["index"].as_u64().unwrap_or(0) >= 20,
        "the image records its last Raft entry: {raft}"
    );
    let members = raft["last_membership"]["membership"]["nodes"]
        .as_object()
        .unwrap_or_else(|| panic!("the image records the membership: {raft}"));
    assert_eq!(members.len(), 3, "{raft}");
    // The leader purged entries the snapshot holds: whole segments went, the point it reached
    // is kept, and every node's log still reads as sound. The follower, killed and restarted,
    // starts from the image and the purge point it kept, and catches up.
    let raft_of = |node: &Node| -> Value {
        let id = node.id;
        let dir = node.dir.path().to_str().expect("UTF-8").to_string();
        let (code, out, err) = crate::util::inspect(&["--json", &dir]);
        assert_eq!(code, 0, "inspect on node {id}: {err}\n{out}");
        let doc: Value = serde_json::from_str(&out).expect("inspect --json");
        for s in doc["log"].as_array().expect("log") {
            assert_eq!(s["valid"], true, "node {id}: {s}");
        }
        doc["raft"].clone()
    };
    let on_leader = raft_of(c.node(leader))["log"].clone();
    assert!(num(&on_leader, "purged_through") > 0, "{on_leader}");
    c.node_mut(lagging).kill();
    let r = c.write(&rest, "PUT", "/kv/lag/after-restart", Some(b"v"));
    assert_eq!(r.status, 201, "{}", r.text());
    c.node_mut(lagging).restart();
    c.wait_converged(&all);
    assert_eq!(c.wait_same_listing(&all, "lag/").len(), 101);
    let raft = raft_of(c.node(lagging));
    let lagged = &raft["log"];
    assert!(lagged["error"].is_null(), "{lagged}");
    // inspect names the slot image a start loads as the Raft snapshot, with its Raft state.
    let snapshot = &raft["snapshot"];
    assert!(
        snapshot["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("snapshot-a.json") || p.ends_with("snapshot-b.json")),
        "{snapshot}"
    );
    assert!(num(snapshot, "last_log_index") >= 20, "{snapshot}");
    assert_eq!(
        snapshot["members"].as_array().map(Vec::len),
        Some(3),
        "{snapshot}"
    );
    assert!(
        c.node(lagging)
            .dir
            .path()
            .join("raft")
            .join("purged.json")
            .exists(),
        "the follower's log starts after the image it received: {lagged}"
    );
}

/// openraft counts entries, and one entry is a whole batch: a node also takes a Raft snapshot
/// once the log since the last one outgrows `--checkpoint-log-bytes` (and the image), as a
/// standalone server checkpoints, and reports those bytes in `GET /snapshot`.
#[test]
fn a_raft_snapshot_is_also_due_by_the_log_s_size() {
    let c = Cluster::start_with(3, &["--checkpoint-log-bytes", "20000"]);
    let all = c.ids();
    let leader = c.wait_leader(&all);
    let value = "v".repeat(1000);
    for i in 0..40 {
        let r = c.write(
            &all,
            "PUT",
            &format!("/kv/big/{i:02}"),
            Some(value.as_bytes()),
        );
        assert_eq!(r.status, 201, "PUT big/{i:02}: {}", r.text());
    }
    // 40 entries, far from the 50 000 of --raft-snapshot-entries, but 40 KB of log.
    let image = wait_for("a Raft snapshot by size on the leader", || {
        let r = call(&c.admin, "GET", &c.node(leader).url("/snapshot"), &[], None)
            .map_err(|e| e.to_string())?;
        let doc = r.json();
        match doc["file"].as_str() {
            Some(f) if num(&doc, "snapshot_seq") >= 20 => Ok((f.to_string(), doc)),
            _ => Err(format!("no image yet: {doc}")),
        }
    });
    let (file, status) = image;
    assert!(
        num(&status, "log_bytes") < 20_000,
        "the log's bytes count from the new image: {status}"
    );
    let text = std::fs::read_to_string(&file).expect("read the slot image");
    let doc: Value = serde_json::from_str(&text).expect("the slot image is JSON as it stands");
    assert!(
        doc["raft"]["last_log_id"]["index"].as_u64().unwrap_or(0) >= 20,
        "{}",
        doc["raft"]
    );
    assert_eq!(doc["data"]["big/00"], json!(value));
}

/// The log is kept back to the older slot image, as standalone: a node whose newest image is
/// damaged starts from the older one and the log after it (openraft alone would have purged
/// part of that log), then catches up.
#[test]
fn a_node_whose_newest_image_is_damaged_starts_from_the_older_and_the_log() {
    let mut c = Cluster::start_with(3, &["--raft-snapshot-entries", "20"]);
    let all = c.ids();
    let leader = c.wait_leader(&all);
    for i in 0..120 {
        let r = c.write(&all, "PUT", &format!("/kv/o/{i:03}"), Some(b"v"));
        assert_eq!(r.status, 201, "PUT o/{i:03}: {}", r.text());
    }
    c.wait_converged(&all);
    let node = *all.iter().find(|&&i| i != leader).expect("a follower");
    c.node_mut(node).kill();
    let slots: Vec<std::path::PathBuf> = ["snapshot-a.json", "snapshot-b.json"]
        .iter()
        .map(|n| c.node(node).dir.path().join(n))
        .collect();
    let images: Vec<(u64, u64, &std::path::PathBuf)> = slots
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("both slots hold an image");
            let doc: Value = serde_json::from_str(&text).expect("a valid image");
            (
                num(&doc, "seq"),
                num(&doc["raft"]["last_log_id"], "index"),
                p,
            )
        })
        .collect();
    let (newest, older) = if images[0] > images[1] {
        (&images[0], &images[1])
    } else {
        (&images[1], &images[0])
    };
    assert!(
        newest.1 > older.1 + 10,
        "the two images are far enough apart for openraft to purge past the older: {images:?}"
    );
    // A flipped byte in the newest image's data: its checksum fails.
    let mut bytes = std::fs::read(newest.2).expect("read the newest image");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(newest.2, bytes).expect("damage the newest image");
    let rest: Vec<u64> = all.iter().copied().filter(|&i| i != node).collect();
    let r = c.write(&rest, "PUT", "/kv/o/while-down", Some(b"v"));
    assert_eq!(r.status, 201, "{}", r.text());
    c.node_mut(node).restart();
    c.wait_converged(&all);
    assert_eq!(c.wait_same_listing(&all, "o/").len(), 121);
}

/// In `sync` every node applies only entries its own log has flushed: each reports every seq it
/// applied as durable (`durable_seq` in `GET /snapshot`), the followers as the leader.
#[test]
fn durable_seq_follows_what_each_node_applied_in_sync() {
    let c = Cluster::start_with(3, &["--durability", "sync"]);
    let all = c.ids();
    c.wait_leader(&all);
    for i in 0..10 {
        let r = c.write(&all, "PUT", &format!("/kv/d/{i}"), Some(b"v"));
        assert_eq!(r.status, 201, "PUT d/{i}: {}", r.text());
    }
    c.wait_converged(&all);
    for &id in &all {
        let doc = wait_for(&format!("node {id}'s durable_seq reaches its seq"), || {
            let r = call(&c.admin, "GET", &c.node(id).url("/snapshot"), &[], None)
                .map_err(|e| e.to_string())?;
            let doc = r.json();
            if num(&doc, "seq") >= 10 && num(&doc, "durable_seq") == num(&doc, "seq") {
                Ok(doc)
            } else {
                Err(doc.to_string())
            }
        });
        assert_eq!(num(&doc, "seq"), 10, "node {id}: {doc}");
    }
}

/// What a key should hold: its value and version, or absent.
type Model = BTreeMap<String, Option<(Value, u64)>>;

/// Checks a 2xx PUT answer (status, ETag, body, `Twinkv-Seq`); returns its version.
fn put_version(r: &Resp, status: u16, key: &str) -> u64 {
    assert_eq!(r.status, status, "PUT {key}: {}", r.text());
    let v = etag_version(r).unwrap_or_else(|| panic!("PUT {key}: no ETag in {:?}", r.headers));
    assert_eq!(r.json(), json!({"key": key, "version": v}));
    assert_eq!(seq_of(r), Some(v), "PUT {key}: Twinkv-Seq");
    v
}

#[test]
fn three_nodes_replicate() {
    let c = Cluster::start(3);
    let all = c.ids();
    let leader = c.wait_leader(&all);
    let want: Vec<Value> = all
        .iter()
        .map(|&i| {
            let n = c.node(i);
            json!({"id": i, "addr": n.addr, "raft_addr": n.raft_addr, "voter": true})
        })
        .collect();
    for &id in &all {
        let s = c.node(id).status(&c.probe).expect("GET /cluster");
        assert_eq!(num(&s, "id"), id, "{s}");
        assert_eq!(s["leader"], leader, "node {id}: {s}");
        let state = if id == leader { "leader" } else { "follower" };
        assert_eq!(s["state"], state, "node {id}: {s}");
        assert!(num(&s, "term") >= 1, "{s}");
        for field in ["commit_index", "applied_index", "seq"] {
            num(&s, field);
        }
        let mut members = s["members"].as_array().expect("members").clone();
        members.sort_by_key(|m| num(m, "id"));
        assert_eq!(members, want, "the members node {id} sees");
    }
    let follower = *all.iter().find(|&&i| i != leader).expect("a follower");
    let (l, f) = (c.node(leader), c.node(follower));
    let ag = &c.admin;

    // Watches on the leader and a follower, open before the writes.
    let mut w_leader = watch(l, "?prefix=r%2F");
    let mut w_follower = watch(f, "?prefix=r%2F");

    let mut model = Model::new();
    // The changes the watches should see: (seq, key, type).
    let mut events: Vec<(u64, String, &str)> = Vec::new();
    let mut last = 0;
    let on_leader = |method: &str, key: &str, headers: &[(&str, &str)], body: Option<&[u8]>| {
        call(
            ag,
            method,
            &l.url(&format!("/kv/{}", encode(key))),
            headers,
            body,
        )
        .unwrap_or_else(|e| panic!("{method} {key} on the leader: {e}"))
    };

    for i in 0..40 {
        let key = format!("r/k{i:02}");
        let value = format!("v{i}");
        let v = put_version(
            &on_leader("PUT", &key, &[], Some(value.as_bytes())),
            201,
            &key,
        );
        assert!(v > last, "versions grow: {v} after {last}");
        last = v;
        model.insert(key.clone(), Some((json!(value), v)));
        events.push((v, key, "put"));
    }
    let doc = json!({"n": 1, "list": [1, 2], "s": "text"});
    let r = on_leader(
        "PUT",
        "r/json",
        &[("Content-Type", "application/json")],
        Some(doc.to_string().as_bytes()),
    );
    last = put_version(&r, 201, "r/json");
    model.insert("r/json".into(), Some((doc, last)));
    events.push((last, "r/json".into(), "put"));

    let r = on_leader("PUT", "r/k00", &[], Some(b"v0-again"));
    last = put_version(&r, 200, "r/k00");
    model.insert("r/k00".into(), Some((json!("v0-again"), last)));
    events.push((last, "r/k00".into(), "put"));

    let r = on_leader("DELETE", "r/k01", &[], None);
    assert_eq!(r.status, 204, "DELETE r/k01: {}", r.text());
    let s = seq_of(&r).expect("Twinkv-Seq on a DELETE");
    assert_eq!(s, last + 1);
    last = s;
    model.insert("r/k01".into(), None);
    events.push((last, "r/k01".into(), "delete"));

    let batch = json!({
        "put": {"r/b0": "x0", "r/b1": "x1", "r/b2": {"j": 2}, "r/b3": [3]},
        "delete": ["r/k02"],
    });
    let r = call(
        ag,
        "POST",
        &l.url("/kv"),
        &[("Content-Type", "application/json")],
        Some(batch.to_string().as_bytes()),
    )
    .expect("POST /kv");
    assert_eq!(r.status, 200, "batch: {}", r.text());
    let s = num(&r.json(), "seq");
    assert_eq!(seq_of(&r), Some(s));
    assert!(s > last);
    for (k, v) in batch["put"].as_object().unwrap() {
        model.insert(k.clone(), Some((v.clone(), s)));
        events.push((s, k.clone(), "put"));
    }
    model.insert("r/k02".into(), None);
    events.push((s, "r/k02".into(), "delete"));

    // Compare-and-set: the current version wins, a stale one gets 412 with the current ETag.
    let k03 = model["r/k03"].as_ref().unwrap().1;
    let tag = format!("\"{k03}\"");
    let r = on_leader("PUT", "r/k03", &[("If-Match", &tag)], Some(b"cas-1"));
    last = put_version(&r, 200, "r/k03");
    model.insert("r/k03".into(), Some((json!("cas-1"), last)));
    events.push((last, "r/k03".into(), "put"));
    let r = on_leader("PUT", "r/k03", &[("If-Match", &tag)], Some(b"cas-2"));
    assert_eq!(r.status, 412, "a stale If-Match: {}", r.text());
    assert_eq!(
        etag_version(&r),
        Some(last),
        "the 412 carries the current ETag"
    );
    let r = on_leader("DELETE", "r/k04", &[("If-Match", "\"999999\"")], None);
    assert_eq!(r.status, 412, "DELETE with a wrong If-Match: {}", r.text());

    // A write to a follower: 307 to the leader's address, path and query as sent; nothing
    // applied until it is followed.
    let path = "/kv/r%2Fvia-follower?ttl=600";
    let r = call(ag, "PUT", &f.url(path), &[], Some(b"redirected")).expect("PUT on a follower");
    assert_eq!(r.status, 307, "PUT on a follower: {}", r.text());
    assert_eq!(r.header("location"), Some(l.url(path).as_str()));
    let r = call(
        ag,
        "GET",
        &l.url("/kv/r%2Fvia-follower?consistency=linearizable"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 404, "a 307 applied nothing");
    let (r, at) = follow(ag, "PUT", &f.url(path), &[], Some(b"redirected")).unwrap();
    assert_eq!(at, l.addr);
    last = put_version(&r, 201, "r/via-follower");
    assert!(r.header("twinkv-expires-at").is_none());
    model.insert("r/via-follower".into(), Some((json!("redirected"), last)));
    events.push((last, "r/via-follower".into(), "put"));

    let r = call(ag, "DELETE", &f.url("/kv/r%2Fk05"), &[], None).unwrap();
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some(l.url("/kv/r%2Fk05").as_str()));
    let (r, _) = follow(ag, "DELETE", &f.url("/kv/r%2Fk05"), &[], None).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    last = seq_of(&r).unwrap();
    model.insert("r/k05".into(), None);
    events.push((last, "r/k05".into(), "delete"));

    let body = json!({"put": {"r/via-batch": "b"}}).to_string();
    let r = call(ag, "POST", &f.url("/kv"), &[], Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some(l.url("/kv").as_str()));
    let (r, _) = follow(ag, "POST", &f.url("/kv"), &[], Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    last = num(&r.json(), "seq");
    model.insert("r/via-batch".into(), Some((json!("b"), last)));
    events.push((last, "r/via-batch".into(), "put"));

    // Every answered write, read back linearizably on every node at once.
    for &id in &all {
        let n = c.node(id);
        for (key, want) in &model {
            let url = n.url(&format!("/kv/{}?consistency=linearizable", encode(key)));
            let r = call(ag, "GET", &url, &[], None).unwrap();
            match want {
                None => assert_eq!(r.status, 404, "node {id}: {key} was deleted"),
                Some((value, version)) => {
                    assert_eq!(r.status, 200, "node {id}: GET {key}: {}", r.text());
                    assert_eq!(etag_version(&r), Some(*version), "node {id}: {key}'s ETag");
                    let got = match value {
                        Value::String(_) => json!(r.text()),
                        _ => r.json(),
                    };
                    assert_eq!(&got, value, "node {id}: {key}'s value");
                }
            }
        }
    }

    // Stale reads converge on every node to the same keys, values and versions.
    let want: Listing = model
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    for &id in &all {
        wait_for(&format!("node {id}'s own copy"), || {
            let got = c.listing(id, "r/", "stale")?;
            if got == want {
                Ok(())
            } else {
                Err(listing_diff(&want, &got))
            }
        });
    }
    c.wait_converged(&all);
    for &id in &all {
        let r = call(
            ag,
            "GET",
            &c.node(id).url("/kv?prefix=r%2F&consistency=stale"),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(seq_of(&r), Some(last), "node {id}'s Twinkv-Seq");
        let s = c.node(id).status(&c.probe).unwrap();
        assert_eq!(num(&s, "seq"), last, "node {id}: {s}");
        let r = call(
            ag,
            "GET",
            &c.node(id).url("/kv/r%2Fk10?consistency=stale"),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(seq_of(&r), Some(last), "node {id}'s Twinkv-Seq on a GET");
    }

    // The watch on the follower saw what the one on the leader saw, ids included.
    let from_leader: Vec<(Option<String>, Value)> =
        (0..events.len()).map(|_| change(&mut w_leader)).collect();
    let from_follower: Vec<(Option<String>, Value)> =
        (0..events.len()).map(|_| change(&mut w_follower)).collect();
    assert_eq!(from_follower, from_leader, "the follower's watch differs");
    let mut seen: Vec<(u64, String, String)> = from_leader
        .iter()
        .map(|(_, d)| {
            (
                num(d, "seq"),
                d["key"].as_str().unwrap().to_string(),
                d["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want_events: Vec<(u64, String, String)> = events
        .into_iter()
        .map(|(s, k, t)| (s, k, t.to_string()))
        .collect();
    want_events.sort();
    assert_eq!(seen, want_events);
    for (id, d) in &from_leader {
        let id = id.as_deref().expect("every event has an id");
        let seq = num(d, "seq").to_string();
        assert!(
            id == seq || id.starts_with(&format!("{seq}.")),
            "id {id} for seq {seq}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Kills under load

/// What one load client sent and was told.
#[derive(Debug, Default)]
struct ClientLog {
    /// Per key, every value sent for it (answered or not).
    sent: BTreeMap<String, Vec<String>>,
    /// Writes answered 2xx: key, value, version.
    answered: Vec<(String, String, u64)>,
    /// Answers that are neither 2xx, 307 nor 503.
    unexpected: Vec<String>,
    /// Attempts that failed (503, transport errors, timeouts).
    failed: u64,
}

/// Client threads writing distinct keys `<tag>-c<client>-k<n>` to whichever node leads.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    handles: Vec<thread::JoinHandle<ClientLog>>,
}

impl Load {
    fn start(addrs: Vec<String>, clients: usize, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let handles = (0..clients)
            .map(|c| {
                let (stop, answered, addrs) =
                    (Arc::clone(&stop), Arc::clone(&answered), addrs.clone());
                let tag = tag.to_string();
                thread::spawn(move || load_client(c, &tag, &addrs, &stop, &answered))
            })
            .collect();
        Load {
            stop,
            answered,
            handles,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits until `more` writes beyond now have been answered.
    fn wait_more(&self, more: u64, when: &str, c: &Cluster) {
        let target = self.answered() + more;
        let deadline = Instant::now() + DEADLINE;
        while self.answered() < target {
            assert!(
                Instant::now() < deadline,
                "{when}: only {} of {target} writes answered within {DEADLINE:?}\n{}",
                self.answered(),
                c.stderrs()
            );
            thread::sleep(POLL);
        }
    }

    fn stop(self) -> Vec<ClientLog> {
        self.stop.store(true, Ordering::Relaxed);
        self.handles
            .into_iter()
            .map(|h| h.join().expect("a load client panicked"))
            .collect()
    }
}

fn load_client(
    c: usize,
    tag: &str,
    addrs: &[String],
    stop: &AtomicBool,
    answered: &AtomicU64,
) -> ClientLog {
    let agent = client(CLIENT_TIMEOUT);
    let mut log = ClientLog::default();
    let mut hint = c % addrs.len();
    let (mut i, mut attempt) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{tag}-c{c}-k{i:05}");
        let value = format!("{key}-a{attempt}");
        log.sent.entry(key.clone()).or_default().push(value.clone());
        let url = format!("http://{}/kv/{key}", addrs[hint]);
        match follow(&agent, "PUT", &url, &[], Some(value.as_bytes())) {
            Ok((r, at)) if r.status == 200 || r.status == 201 => {
                let v = etag_version(&r).expect("an ETag on a 2xx PUT");
                assert_eq!(r.json()["version"], v, "{}", r.text());
                log.answered.push((key, value, v));
                answered.fetch_add(1, Ordering::Relaxed);
                hint = addrs.iter().position(|a| *a == at).unwrap_or(hint);
                (i, attempt) = (i + 1, 0);
            }
            Ok((r, _)) if r.status == 503 || r.status == 307 => {
                if r.status == 503 {
                    assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                }
                log.failed += 1;
                attempt += 1;
                hint = (hint + 1) % addrs.len();
                thread::sleep(Duration::from_millis(50));
            }
            Ok((r, _)) => {
                log.unexpected
                    .push(format!("PUT {key}: {} {}", r.status, r.text()));
                attempt += 1;
            }
            Err(_) => {
                log.failed += 1;
                attempt += 1;
                hint = (hint + 1) % addrs.len();
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    log
}

/// Every answered write is on every node of `ids` (its value at its version, or a later value
/// the same client sent for that key), every node holds the same, and nothing unsent appears.
fn check_answered(c: &Cluster, ids: &[u64], tag: &str, logs: &[ClientLog]) {
    let unexpected: Vec<&String> = logs.iter().flat_map(|l| &l.unexpected).collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let held = c.wait_same_listing(ids, &format!("{tag}-"));
    let mut versions = BTreeSet::new();
    let mut sent: BTreeMap<&String, &Vec<String>> = BTreeMap::new();
    for log in logs {
        sent.extend(log.sent.iter());
    }
    for (key, value, version) in logs.iter().flat_map(|l| &l.answered) {
        assert!(
            versions.insert(*version),
            "two answered writes share version {version}"
        );
        let (got, at) = held.get(key).unwrap_or_else(|| {
            panic!(
                "the answered write {key}={value} (version {version}) is lost\n{}",
                c.stderrs()
            )
        });
        if at == version {
            assert_eq!(got, &json!(value), "{key} at version {version}");
        } else {
            assert!(
                at > version,
                "{key}: version {at} is older than the answered {version}"
            );
            assert!(
                sent[key].iter().any(|s| got == &json!(s)),
                "{key}: {got} was never sent"
            );
        }
    }
    for (key, (got, _)) in &held {
        let values = sent
            .get(key)
            .unwrap_or_else(|| panic!("{key} was never written"));
        assert!(
            values.iter().any(|s| got == &json!(s)),
            "{key}: {got} was never sent"
        );
    }
}

/// Kills one node (the leader or a follower) under a load, restarts it, and checks that no
/// answered write is lost and that it caught up.
fn kill_under_load(c: &mut Cluster, tag: &str, kill_leader: bool) {
    let all = c.ids();
    let leader = c.wait_leader(&all);
    let victim = if kill_leader {
        leader
    } else {
        *all.iter().find(|&&i| i != leader).expect("a follower")
    };
    let load = Load::start(c.addrs(), 3, tag);
    load.wait_more(50, "before the kill", c);
    c.node_mut(victim).kill();
    let survivors: Vec<u64> = all.iter().copied().filter(|&i| i != victim).collect();
    let now_leads = c.wait_leader(&survivors);
    if !kill_leader {
        assert_eq!(now_leads, leader, "a follower's death moved the leadership");
    }
    load.wait_more(50, &format!("with node {victim} down"), c);
    c.node_mut(victim).restart();
    load.wait_more(30, &format!("after node {victim} restarted"), c);
    let logs = load.stop();
    let failed: u64 = logs.iter().map(|l| l.failed).sum();
    let answered: usize = logs.iter().map(|l| l.answered.len()).sum();
    eprintln!("{tag}: {answered} writes answered, {failed} attempts failed");
    // The restarted node catches up: same applied index and seq as the leader.
    c.wait_converged(&all);
    check_answered(c, &all, tag, &logs);
    // Its own copy (a stale read, on it alone) shows every answered write.
    let own = c.listing(victim, &format!("{tag}-"), "stale").unwrap();
    for (key, _, version) in logs.iter().flat_map(|l| &l.answered) {
        assert!(
            own.get(key).is_some_and(|(_, v)| v >= version),
            "node {victim} after its restart lacks {key}"
        );
    }
}

#[test]
fn leader_killed_under_load_loses_no_answered_write() {
    let mut c = Cluster::start(3);
    kill_under_load(&mut c, "lead", true);
    // And a follower, on the same cluster.
    kill_under_load(&mut c, "foll", false);
    // Each node's Raft log is its `data/log`, killed twice or not, and `inspect` reads it.
    for &id in &c.ids() {
        raft_log_files(c.node(id), &["lead-", "foll-"]);
    }
    // A node's data dir started without cluster mode is refused, and left as it was: the node
    // then restarts in cluster mode and catches up.
    let all = c.ids();
    let leader = c.wait_leader(&all);
    let victim = *all.iter().find(|&&i| i != leader).expect("a follower");
    c.node_mut(victim).kill();
    let dir = c.node(victim).dir.path().to_path_buf();
    match Server::try_start(&dir, &[]) {
        Ok(_) => panic!("a standalone start on node {victim}'s data dir was accepted"),
        Err((_, err)) => assert!(
            err.contains("this data dir holds a cluster node's Raft log")
                && err.contains("start it with --node-id and --raft-addr"),
            "{err}"
        ),
    }
    let r = c.write(&[leader], "PUT", "/kv/after-refusal", Some(b"v"));
    assert_eq!(r.status, 201, "{}", r.text());
    c.node_mut(victim).restart();
    c.wait_converged(&all);
    raft_log_files(c.node(victim), &["lead-", "foll-", "after-refusal"]);
}

/// Checks that `node`'s Raft log is in `data/log/` as Raft records: every complete line is a
/// JSON object with `index`, `term`, `leader` and `crc32c` and no `seq`, indexes run on with
/// no gap from the index each segment is named by, and the writes hold keys starting with
/// each of `prefixes`. Then `twinkv inspect --json` on its data dir exits 0 and lists every
/// segment as valid Raft records.
fn raft_log_files(node: &Node, prefixes: &[&str]) {
    let log = node.dir.path().join("log");
    let mut names: Vec<String> = std::fs::read_dir(&log)
        .expect("data/log")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "node {}: no segments in {log:?}",
        node.id
    );
    let mut keys = BTreeSet::new();
    let mut next: Option<u64> = None;
    for name in &names {
        let first: u64 = name
            .trim_end_matches(".jsonl")
            .parse()
            .expect("a segment name");
        if let Some(n) = next {
            assert_eq!(first, n, "node {}: segment {name} leaves a gap", node.id);
        }
        let text = std::fs::read_to_string(log.join(name)).expect("a segment");
        let mut expected = first;
        // A node that runs may be writing its last line: only complete lines are read.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("node {}: {name}: {e}: {line}", node.id));
            assert_eq!(
                num(&v, "index"),
                expected,
                "node {}: {name}: {line}",
                node.id
            );
            for field in ["term", "leader"] {
                num(&v, field);
            }
            assert!(v["crc32c"].is_string(), "{line}");
            assert!(v.get("seq").is_none(), "a Raft record has no seq: {line}");
            for w in v["writes"].as_array().expect("writes") {
                if let Some(k) = w["put"].as_str() {
                    keys.insert(k.to_string());
                }
                if let Some(puts) = w["batch"]["put"].as_object() {
                    keys.extend(puts.keys().cloned());
                }
            }
            expected += 1;
        }
        next = Some(expected);
    }
    for p in prefixes {
        assert!(
            keys.iter().any(|k| k.starts_with(p)),
            "node {}: no write of a key starting {p:?} in its log",
            node.id
        );
    }
    let dir = node.dir.path().to_str().expect("UTF-8");
    let (code, out, err) = crate::util::inspect(&["--json", dir]);
    assert_eq!(code, 0, "inspect on node {}: {err}\n{out}", node.id);
    let doc: Value = serde_json::from_str(&out).expect("inspect --json");
    let segments = doc["log"].as_array().expect("log");
    assert_eq!(segments.len(), names.len(), "{out}");
    for s in segments {
        assert_eq!(s["valid"], true, "node {}: {s}", node.id);
        assert_eq!(s["raft"], true, "node {}: {s}", node.id);
        assert!(s["first_seq"].is_null(), "{s}");
    }
    let raft = &doc["raft"]["log"];
    assert!(num(raft, "entries") > 0, "{raft}");
    assert!(raft["error"].is_null(), "{raft}");
    assert!(num(&doc, "log_raft_records") > 0, "{out}");
}

// ---------------------------------------------------------------------------------------------
// 3. No majority

#[test]
fn majority_lost_answers_nothing_then_recovers() {
    let mut c = Cluster::start(3);
    let all = c.ids();
    let leader = c.wait_leader(&all);
    let mut before = BTreeMap::new();
    for i in 0..20 {
        let key = format!("m-before-{i:02}");
        let value = format!("value {i}");
        let r = c.write(&all, "PUT", &format!("/kv/{key}"), Some(value.as_bytes()));
        before.insert(key.clone(), (value, put_version(&r, 201, &key)));
    }
    // Both followers die: the leader is left alone.
    let followers: Vec<u64> = all.iter().copied().filter(|&i| i != leader).collect();
    for &id in &followers {
        c.node_mut(id).kill();
    }
    let survivor = c.node(leader);
    let outcomes: Vec<(String, Result<u16, String>)> = thread::scope(|s| {
        let threads: Vec<_> = (0..3)
            .map(|t| {
                s.spawn(move || {
                    let agent = client(Duration::from_secs(2));
                    let until = Instant::now() + Duration::from_secs(4);
                    let mut out = Vec::new();
                    let mut i = 0;
                    while Instant::now() < until {
                        let key = format!("m-during-{t}-{i}");
                        let r = call(
                            &agent,
                            "PUT",
                            &survivor.url(&format!("/kv/{key}")),
                            &[],
                            Some(b"x"),
                        );
                        out.push((key, r.map(|r| r.status)));
                        i += 1;
                        thread::sleep(Duration::from_millis(100));
                    }
                    out
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert!(!outcomes.is_empty());
    for (key, outcome) in &outcomes {
        // An error is a timeout or a broken connection: never answered.
        if let Ok(status) = outcome {
            assert!(
                *status == 503 || *status == 307,
                "PUT {key} without a majority got {status}"
            );
        }
    }
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    for (_, o) in &outcomes {
        let what = match o {
            Ok(status) => status.to_string(),
            Err(e) => transport(e),
        };
        *summary.entry(what).or_default() += 1;
    }
    eprintln!("writes without a majority: {summary:?}");
    // A linearizable read cannot be confirmed either; a stale one answers from the local copy.
    let agent = client(CLIENT_TIMEOUT);
    let r = call(
        &agent,
        "GET",
        &survivor.url("/kv/m-before-00?consistency=linearizable"),
        &[],
        None,
    );
    if let Ok(r) = &r {
        assert_eq!(
            r.status,
            503,
            "a linearizable read without a majority: {}",
            r.text()
        );
        assert!(r.header("retry-after").is_some());
    }
    let r = call(
        &agent,
        "GET",
        &survivor.url("/kv/m-before-00?consistency=stale"),
        &[],
        None,
    )
    .expect("a stale read answers at once");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), before["m-before-00"].0);

    for &id in &followers {
        c.node_mut(id).restart();
    }
    c.wait_leader(&all);
    for &id in &all {
        for (key, (value, version)) in &before {
            let url = c
                .node(id)
                .url(&format!("/kv/{key}?consistency=linearizable"));
            let r = wait_for(&format!("node {id} reads {key}"), || {
                match call(&c.admin, "GET", &url, &[], None) {
                    Ok(r) if r.status == 503 => Err(r.text()),
                    Ok(r) => Ok(r),
                    Err(e) => Err(e),
                }
            });
            assert_eq!(
                r.status,
                200,
                "node {id}: {key} after the outage: {}",
                r.text()
            );
            assert_eq!(&r.text(), value);
            assert_eq!(etag_version(&r), Some(*version));
        }
    }
    for i in 0..5 {
        let key = format!("m-after-{i}");
        let r = c.write(&all, "PUT", &format!("/kv/{key}"), Some(b"again"));
        let v = put_version(&r, 201, &key);
        for &id in &all {
            let url = c.node(id).url(&format!("/kv/{key}"));
            let r = call(&c.admin, "GET", &url, &[], None).unwrap();
            assert_eq!(r.status, 200, "node {id}: {key}: {}", r.text());
            assert_eq!(etag_version(&r), Some(v));
        }
    }
    c.wait_converged(&all);
    c.wait_same_listing(&all, "m-");
}

// ---------------------------------------------------------------------------------------------
// 4. A partitioned or stopped leader

/// Threads writing `<tag>-<t>-<i>` to one node until `stop`, following no redirect; returns
/// every key with its status (or the transport error).
fn write_to_until(addr: &str, tag: &str, stop: &AtomicBool) -> Vec<(String, Result<u16, String>)> {
    thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|t| {
                s.spawn(move || {
                    let agent = client(Duration::from_secs(2));
                    let mut out = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{tag}-{t}-{i}");
                        let url = format!("http://{addr}/kv/{key}");
                        let r = call(&agent, "PUT", &url, &[], Some(b"old"));
                        out.push((key, r.map(|r| r.status)));
                        i += 1;
                        thread::sleep(Duration::from_millis(100));
                    }
                    out
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
}

/// Cuts the leader off with `cut`, checks that it answers no write while the others elect a
/// new leader and take writes, heals it with `heal`, and checks that the three converge on one
/// history holding every write the new leader answered and none the old one was sent.
fn isolate_leader(c: &Cluster, tag: &str, cut: impl FnOnce(&Node), heal: impl FnOnce(&Node)) {
    let all = c.ids();
    let old = c.wait_leader(&all);
    let others: Vec<u64> = all.iter().copied().filter(|&i| i != old).collect();
    let stop = AtomicBool::new(false);
    let old_addr = c.node(old).addr.clone();
    let mut answered = BTreeMap::new();
    let sent_to_old = thread::scope(|s| {
        cut(c.node(old));
        let writer = s.spawn(|| write_to_until(&old_addr, &format!("{tag}-old"), &stop));
        let new = c.wait_leader(&others);
        assert_ne!(new, old);
        // Nor can it confirm a linearizable read.
        let url = c.node(old).url("/kv/x?consistency=linearizable");
        if let Ok(r) = call(&client(CLIENT_TIMEOUT), "GET", &url, &[], None) {
            assert_eq!(
                r.status,
                503,
                "a linearizable read on the cut-off leader: {}",
                r.text()
            );
        }
        for i in 0..20 {
            let key = format!("{tag}-new-{i:02}");
            let r = c.write(&others, "PUT", &format!("/kv/{key}"), Some(b"new"));
            answered.insert(key.clone(), put_version(&r, 201, &key));
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    assert!(!sent_to_old.is_empty());
    for (key, outcome) in &sent_to_old {
        if let Ok(status) = outcome {
            assert!(
                *status == 503 || *status == 307,
                "PUT {key} to the cut-off leader got {status}"
            );
        }
    }
    heal(c.node(old));
    let leader = c.wait_leader(&all);
    assert_ne!(leader, old, "the healed old leader leads again");
    let s = c.node(old).status(&c.probe).unwrap();
    assert_eq!(s["state"], "follower", "the old leader after healing: {s}");
    c.wait_converged(&all);
    let held = c.wait_same_listing(&all, &format!("{tag}-"));
    for (key, version) in &answered {
        assert_eq!(
            held.get(key),
            Some(&(json!("new"), *version)),
            "{key}, answered by the new leader"
        );
    }
    let stray: Vec<&String> = held.keys().filter(|k| !answered.contains_key(*k)).collect();
    assert!(
        stray.is_empty(),
        "writes sent only to the cut-off leader were applied: {stray:?}"
    );
}

#[test]
fn partitioned_leader_answers_no_write() {
    let c = Cluster::start(3);
    isolate_leader(&c, "p", |n| n.partition(true), |n| n.partition(false));

    // The same with the leader stopped (SIGSTOP) for about three seconds instead.
    isolate_leader(
        &c,
        "s",
        |n| signal(n.pid(), Signal::STOP),
        |n| {
            thread::sleep(Duration::from_millis(500));
            signal(n.pid(), Signal::CONT)
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Linearizable histories

/// Keys the history clients share.
const HISTORY_KEYS: usize = 3;

#[derive(Debug, Clone)]
enum Kind {
    Read,
    Put { value: String },
    Cas { value: String, expected: u64 },
}

#[derive(Debug, Clone)]
enum Outcome {
    /// A read's 200 (version, value) or 404 (`None`); a write's 2xx version.
    Done(Option<(u64, String)>),
    /// A CAS's 412: not applied, and the key was not at the version expected.
    Refused,
    /// Definitely not applied: never sent (no connection), or a redirect never followed to an
    /// answer.
    NotSent,
    /// No answer, or 503: a write may or may not have been applied; a read tells nothing.
    Unknown(String),
}

/// One operation of a history. `node` (where it was sent) is for violation reports.
#[derive(Debug, Clone)]
struct Op {
    client: usize,
    key: usize,
    kind: Kind,
    node: String,
    start: Duration,
    end: Duration,
    outcome: Outcome,
}

/// One history client: random linearizable GETs on random nodes, PUTs and If-Match CASes
/// (with the last version it saw) to random nodes, following 307s.
fn history_client(
    client_no: usize,
    seed: u64,
    addrs: &[String],
    readable: &[AtomicBool],
    t0: Instant,
    stop: &AtomicBool,
) -> Vec<Op> {
    let mut rng = Rng(seed.wrapping_mul(client_no as u64 * 2 + 1) | 1);
    let agent = client(CLIENT_TIMEOUT);
    let mut known: [Option<u64>; HISTORY_KEYS] = [None; HISTORY_KEYS];
    let mut ops = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.below(HISTORY_KEYS as u64) as usize;
        let roll = rng.below(10);
        n += 1;
        let value = format!("c{client_no}-{n}");
        let kind = match (roll, known[key]) {
            (0..=4, _) => Kind::Read,
            (5..=7, _) | (_, None) => Kind::Put { value },
            (_, Some(expected)) => Kind::Cas { value, expected },
        };
        // Reads go to a node marked readable (any, if none is); writes to any node.
        let pool: Vec<usize> = (0..addrs.len())
            .filter(|&i| !matches!(kind, Kind::Read) || readable[i].load(Ordering::Relaxed))
            .collect();
        let node = match pool.len() {
            0 => addrs[rng.below(addrs.len() as u64) as usize].clone(),
            n => addrs[pool[rng.below(n as u64) as usize]].clone(),
        };
        let start = t0.elapsed();
        let outcome = match &kind {
            Kind::Read => {
                let url = format!("http://{node}/kv/h{key}?consistency=linearizable");
                match call(&agent, "GET", &url, &[], None) {
                    Ok(r) if r.status == 200 => {
                        let v = etag_version(&r).expect("a 200 GET has an ETag");
                        known[key] = Some(v);
                        Outcome::Done(Some((v, r.text())))
                    }
                    Ok(r) if r.status == 404 => Outcome::Done(None),
                    Ok(r) if r.status == 503 => Outcome::Unknown("503".into()),
                    Ok(r) => panic!("GET h{key} on {node}: {} {}", r.status, r.text()),
                    Err(e) => Outcome::Unknown(transport(&e)),
                }
            }
            Kind::Put { value } | Kind::Cas { value, .. } => {
                let tag;
                let mut headers = Vec::new();
                if let Kind::Cas { expected, .. } = &kind {
                    tag = format!("\"{expected}\"");
                    headers.push(("If-Match", tag.as_str()));
                }
                let url = format!("http://{node}/kv/h{key}");
                match follow(&agent, "PUT", &url, &headers, Some(value.as_bytes())) {
                    Ok((r, _)) if r.status == 200 || r.status == 201 => {
                        let v = etag_version(&r).expect("a 2xx PUT has an ETag");
                        known[key] = Some(v);
                        Outcome::Done(Some((v, value.clone())))
                    }
                    Ok((r, _)) if r.status == 412 && matches!(kind, Kind::Cas { .. }) => {
                        // Its ETag may name a write no one read back: learn versions from
                        // reads and answered writes only.
                        known[key] = None;
                        Outcome::Refused
                    }
                    Ok((r, _)) if r.status == 307 => Outcome::NotSent,
                    Ok((r, _)) if r.status == 503 => Outcome::Unknown("503".into()),
                    Ok((r, _)) => panic!("PUT h{key} via {node}: {} {}", r.status, r.text()),
                    // No connection, so nothing sent (a redirect's target is refused too).
                    Err(e) if e.contains("Connect error") => Outcome::NotSent,
                    Err(e) => Outcome::Unknown(transport(&e)),
                }
            }
        };
        ops.push(Op {
            client: client_no,
            key,
            kind,
            node,
            start,
            end: t0.elapsed(),
            outcome,
        });
        thread::sleep(Duration::from_millis(rng.below(10)));
    }
    ops
}

/// The value a write op sent.
fn sent_value(op: &Op) -> Option<&str> {
    match &op.kind {
        Kind::Read => None,
        Kind::Put { value } | Kind::Cas { value, .. } => Some(value),
    }
}

/// Checks a history against a register per key (no deletes). Returns every violation.
fn check_history(ops: &[Op]) -> Vec<String> {
    let mut bad = Vec::new();
    // Every write by its (unique) value.
    let by_value: BTreeMap<&str, &Op> = ops
        .iter()
        .filter_map(|o| sent_value(o).map(|v| (v, o)))
        .collect();
    // Versions of successful writes: unique.
    let mut version_of: BTreeMap<&str, u64> = BTreeMap::new();
    let mut value_at: BTreeMap<u64, &str> = BTreeMap::new();
    for o in ops {
        if let (Some(value), Outcome::Done(Some((v, _)))) = (sent_value(o), &o.outcome) {
            if let Some(other) = value_at.insert(*v, value) {
                bad.push(format!("version {v} answered for both {other} and {value}"));
            }
            version_of.insert(value, *v);
        }
    }
    // Reads: each returns a value some write sent, at that write's version.
    for r in ops.iter().filter(|o| matches!(o.kind, Kind::Read)) {
        let Outcome::Done(Some((v, value))) = &r.outcome else {
            continue;
        };
        let Some(w) = by_value.get(value.as_str()) else {
            bad.push(format!("read of a value never written: {r:?}"));
            continue;
        };
        if w.key != r.key {
            bad.push(format!(
                "read {value} on h{} but it was written to h{}",
                r.key, w.key
            ));
        }
        if w.start > r.end {
            bad.push(format!(
                "read {value} before its write began: {r:?} / {w:?}"
            ));
        }
        match &w.outcome {
            Outcome::Refused | Outcome::NotSent => {
                bad.push(format!("read a value never applied: {r:?} / {w:?}"))
            }
            Outcome::Done(_) | Outcome::Unknown(_) => {}
        }
        match version_of.get(value.as_str()) {
            Some(known) if known != v => bad.push(format!(
                "{value} read at version {v}, written at {known}: {r:?}"
            )),
            Some(_) => {}
            None => {
                // An unanswered write, seen applied: its version is what reads say.
                if let Some(other) = value_at.get(v).filter(|o| **o != value.as_str()) {
                    bad.push(format!("version {v} read as {value} and as {other}"));
                }
                version_of.insert(w_value(w), *v);
                value_at.insert(*v, w_value(w));
            }
        }
    }
    for key in 0..HISTORY_KEYS {
        let on: Vec<&Op> = ops.iter().filter(|o| o.key == key).collect();
        // (end, version) of every op known to have applied or observed a version.
        let observed: Vec<(Duration, u64, &Op)> = on
            .iter()
            .filter_map(|o| match &o.outcome {
                Outcome::Done(Some((v, _))) => Some((o.end, *v, *o)),
                _ => None,
            })
            .collect();
        for o in &on {
            // No op begun after another ended may see an older version than it did.
            let floor = observed
                .iter()
                .filter(|(end, _, _)| *end < o.start)
                .max_by_key(|(_, v, _)| *v);
            match (&o.kind, &o.outcome, floor) {
                (Kind::Read, Outcome::Done(None), Some((_, v, by))) => bad.push(format!(
                    "h{key} read as absent after version {v} was seen: {o:?} after {by:?}"
                )),
                (_, Outcome::Done(Some((v, _))), Some((_, fv, by))) if v < fv => {
                    let what = if matches!(o.kind, Kind::Read) {
                        "read"
                    } else {
                        "written"
                    };
                    bad.push(format!(
                        "h{key} {what} at version {v} after version {fv} was seen: {o:?} after {by:?}"
                    ))
                }
                _ => {}
            }
        }
        // Applied versions of this key, known so far.
        let applied: BTreeSet<u64> = on
            .iter()
            .filter_map(|o| sent_value(o).and_then(|v| version_of.get(v)).copied())
            .collect();
        for o in &on {
            let Kind::Cas { expected, .. } = &o.kind else {
                continue;
            };
            match &o.outcome {
                Outcome::Done(Some((v, _))) => {
                    if expected >= v {
                        bad.push(format!("CAS from {expected} answered version {v}: {o:?}"));
                    } else if let Some(between) = applied.range(expected + 1..*v).next() {
                        bad.push(format!(
                            "CAS from {expected} to {v} succeeded though version {between} came between: {o:?}"
                        ));
                    } else if !applied.contains(expected) {
                        bad.push(format!(
                            "CAS from {expected}, a version h{key} never had: {o:?}"
                        ));
                    }
                }
                Outcome::Refused => {
                    // Something must have moved the key past `expected` (or may have).
                    let moved = on.iter().any(|w| {
                        !std::ptr::eq(*w, *o)
                            && w.start < o.end
                            && match (&w.kind, &w.outcome) {
                                (Kind::Read, _) => false,
                                (_, Outcome::Done(Some((v, _)))) => v > expected,
                                (_, Outcome::Unknown(_)) => sent_value(w)
                                    .and_then(|v| version_of.get(v))
                                    .is_none_or(|v| v > expected),
                                _ => false,
                            }
                    });
                    if !moved {
                        bad.push(format!(
                            "CAS from {expected} refused, but nothing moved h{key} past it: {o:?}"
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    bad
}

fn w_value(w: &Op) -> &str {
    sent_value(w).expect("a write")
}

/// The checker itself, on made-up histories: a clean one passes, and each kind of violation
/// is caught.
#[test]
fn history_checker_catches_violations() {
    let ms = Duration::from_millis;
    let op = |key, kind, start, end, outcome| Op {
        client: 0,
        key,
        kind,
        node: String::new(),
        start: ms(start),
        end: ms(end),
        outcome,
    };
    let put = |value: &str| Kind::Put {
        value: value.into(),
    };
    let cas = |value: &str, expected| Kind::Cas {
        value: value.into(),
        expected,
    };
    let done = |v, value: &str| Outcome::Done(Some((v, value.into())));
    let clean = vec![
        op(0, Kind::Read, 0, 1, Outcome::Done(None)),
        op(0, put("a"), 2, 3, done(5, "a")),
        op(0, Kind::Read, 4, 5, done(5, "a")),
        op(0, put("b"), 4, 9, Outcome::Unknown("timed out".into())),
        op(0, Kind::Read, 10, 11, done(7, "b")),
        op(0, cas("c", 7), 12, 13, done(8, "c")),
        op(0, cas("d", 7), 14, 15, Outcome::Refused),
        op(0, Kind::Read, 16, 17, done(8, "c")),
    ];
    assert_eq!(check_history(&clean), Vec::<String>::new());
    let cases: Vec<(&str, Vec<Op>)> = vec![
        (
            "stale read",
            vec![
                op(0, put("a"), 0, 1, done(3, "a")),
                op(0, put("b"), 2, 3, done(5, "b")),
                op(0, Kind::Read, 4, 5, done(3, "a")),
            ],
        ),
        (
            "absent after a write",
            vec![
                op(0, put("a"), 0, 1, done(3, "a")),
                op(0, Kind::Read, 2, 3, Outcome::Done(None)),
            ],
        ),
        (
            "a value never written",
            vec![op(0, Kind::Read, 0, 1, done(3, "zz"))],
        ),
        (
            "a refused write read back",
            vec![
                op(0, cas("a", 1), 0, 1, Outcome::Refused),
                op(0, Kind::Read, 2, 3, done(4, "a")),
            ],
        ),
        (
            "a write never sent read back",
            vec![
                op(0, put("a"), 0, 1, Outcome::NotSent),
                op(0, Kind::Read, 2, 3, done(4, "a")),
            ],
        ),
        (
            "a version twice",
            vec![
                op(0, put("a"), 0, 1, done(3, "a")),
                op(1, put("b"), 0, 1, done(3, "b")),
            ],
        ),
        (
            "a CAS over a newer version",
            vec![
                op(0, put("a"), 0, 1, done(3, "a")),
                op(0, put("b"), 2, 3, done(5, "b")),
                op(0, cas("c", 3), 4, 5, done(6, "c")),
            ],
        ),
        (
            "a CAS refused though the key was at its version",
            vec![
                op(0, put("a"), 0, 1, done(3, "a")),
                op(0, cas("b", 3), 2, 3, Outcome::Refused),
            ],
        ),
        (
            "writes out of real-time order",
            vec![
                op(0, put("a"), 0, 1, done(6, "a")),
                op(0, put("b"), 2, 3, done(4, "b")),
            ],
        ),
    ];
    for (what, ops) in cases {
        assert!(!check_history(&ops).is_empty(), "{what} passed the checker");
    }
}

/// Runs history clients against `c` while `faults` runs on this thread; then checks the
/// history and that every node converged on the same registers. `faults` may mark nodes
/// unreadable (by index, id - 1): reads then go to the others.
fn history(
    c: &mut Cluster,
    clients: usize,
    faults: impl FnOnce(&mut Cluster, &mut Rng, &[AtomicBool]),
) {
    let mut rng = Rng::seeded();
    let seed = rng.0;
    eprintln!("history seed {seed}");
    let addrs = c.addrs();
    let readable: Vec<AtomicBool> = addrs.iter().map(|_| AtomicBool::new(true)).collect();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let ops: Vec<Op> = thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let (addrs, readable, stop) = (&addrs, &readable, &stop);
                s.spawn(move || history_client(i, seed, addrs, readable, t0, stop))
            })
            .collect();
        faults(c, &mut rng, &readable);
        stop.store(true, Ordering::Relaxed);
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("a history client panicked"))
            .collect()
    });
    let count = |f: fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    eprintln!(
        "history: {} ops, {} reads answered, {} writes answered, {} CAS refused, {} not sent, {} unknown",
        ops.len(),
        count(|o| matches!((&o.kind, &o.outcome), (Kind::Read, Outcome::Done(_)))),
        count(|o| !matches!(o.kind, Kind::Read) && matches!(o.outcome, Outcome::Done(_))),
        count(|o| matches!(o.outcome, Outcome::Refused)),
        count(|o| matches!(o.outcome, Outcome::NotSent)),
        count(|o| matches!(o.outcome, Outcome::Unknown(_))),
    );
    let mut per_node: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &ops {
        let e = per_node.entry(o.node.as_str()).or_default();
        e.0 += 1;
        match &o.outcome {
            Outcome::Done(_) => e.1 += 1,
            Outcome::Unknown(why) => *reasons.entry(why.as_str()).or_default() += 1,
            Outcome::Refused | Outcome::NotSent => {}
        }
    }
    eprintln!("history: (sent, answered) per node {per_node:?}; unknown outcomes {reasons:?}");
    let bad = check_history(&ops);
    assert!(
        bad.is_empty(),
        "seed {seed}: {} violations, the first: {:#?}\n{}",
        bad.len(),
        &bad[..bad.len().min(10)],
        c.stderrs()
    );
    let all = c.ids();
    c.wait_leader(&all);
    c.wait_converged(&all);
    let held = c.wait_same_listing(&all, "h");
    // What every node ends with is the last answered write or later.
    for key in 0..HISTORY_KEYS {
        let last = ops
            .iter()
            .filter(|o| o.key == key && !matches!(o.kind, Kind::Read))
            .filter_map(|o| match &o.outcome {
                Outcome::Done(Some((v, _))) => Some(*v),
                _ => None,
            })
            .max();
        if let Some(last) = last {
            let (_, v) = held
                .get(&format!("h{key}"))
                .unwrap_or_else(|| panic!("h{key} is gone"));
            assert!(*v >= last, "h{key} ends at {v}, before the answered {last}");
        }
    }
    for i in 0..clients {
        assert!(ops.iter().any(|o| o.client == i), "client {i} did nothing");
    }
}

impl Cluster {
    /// Waits until node `id` has applied everything the leader of the cluster had committed
    /// when this was called (the node may still lag what was committed since).
    fn wait_caught_up(&self, id: u64) {
        let all = self.ids();
        let target = wait_for("the leader's commit index", || {
            let l = self.agreed_leader(&all)?;
            let s = self.node(l).status(&self.probe).ok_or("no status")?;
            Ok(num(&s, "commit_index"))
        });
        wait_for(&format!("node {id} applies up to {target}"), || {
            let s = self.node(id).status(&self.probe).ok_or("no status")?;
            let applied = num(&s, "applied_index");
            if applied >= target {
                Ok(())
            } else {
                Err(format!("applied {applied}"))
            }
        })
    }
}

/// The short history's fault: kill -9 the leader after 3 s, restart it a second after a new
/// leader is elected, go on for 2 s more. With `hold_reads`, reads stay off the killed node
/// from the kill until it has caught up after its restart.
fn kill_and_restart_leader(c: &mut Cluster, readable: &[AtomicBool], hold_reads: bool) {
    let all = c.ids();
    thread::sleep(Duration::from_secs(3));
    let leader = c.wait_leader(&all);
    if hold_reads {
        readable[(leader - 1) as usize].store(false, Ordering::Relaxed);
    }
    c.node_mut(leader).kill();
    let rest: Vec<u64> = all.iter().copied().filter(|&i| i != leader).collect();
    c.wait_leader(&rest);
    thread::sleep(Duration::from_secs(1));
    c.node_mut(leader).restart();
    c.wait_leader(&all);
    if hold_reads {
        c.wait_caught_up(leader);
        readable[(leader - 1) as usize].store(true, Ordering::Relaxed);
    }
    thread::sleep(Duration::from_secs(2));
}

/// Reads on every node at any time, the restarted one included while it catches up.
#[test]
fn linearizable_history_short() {
    let mut c = Cluster::start(3);
    history(&mut c, 4, |c, _, readable| {
        kill_and_restart_leader(c, readable, false)
    });
}

/// As `linearizable_history_short`, but reads keep off the killed leader from its kill until
/// it has caught up after its restart (writes still go to it), which steers clear of the bug
/// that test is ignored for; everything else is checked the same.
#[test]
fn linearizable_history_short_reads_after_catch_up() {
    let mut c = Cluster::start(3);
    history(&mut c, 4, |c, _, readable| {
        kill_and_restart_leader(c, readable, true)
    });
}

/// A node restarted after missing writes must not answer a linearizable read from an older
/// state: no write happens after the restart, so every 200 must carry the last version.
/// Alternates a killed leader and a killed follower. Before the fix a round reproduced a
/// stale read about half the time: the writer answered openraft's apply before it published
/// the applied writes to readers, so a read released by the applied index could still see the
/// previous state (a catching-up node applies large chunks, which widened that window).
#[test]
fn restarted_node_serves_no_stale_linearizable_read() {
    let mut c = Cluster::start(3);
    let all = c.ids();
    let mut stale = Vec::new();
    for round in 0..6 {
        let leader = c.wait_leader(&all);
        let victim = if round % 2 == 0 {
            leader
        } else {
            *all.iter().find(|&&i| i != leader).expect("a follower")
        };
        c.node_mut(victim).kill();
        let rest: Vec<u64> = all.iter().copied().filter(|&i| i != victim).collect();
        c.wait_leader(&rest);
        let mut last = 0;
        for i in 0..300 {
            let r = c.write(
                &rest,
                "PUT",
                "/kv/x",
                Some(format!("r{round}-{i}").as_bytes()),
            );
            last = put_version(&r, if round == 0 && i == 0 { 201 } else { 200 }, "x");
        }
        c.node_mut(victim).restart();
        let url = c.node(victim).url("/kv/x?consistency=linearizable");
        let t0 = Instant::now();
        let found: Vec<String> = thread::scope(|s| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let agent = client(Duration::from_secs(12));
                        let mut found = Vec::new();
                        while t0.elapsed() < Duration::from_secs(2) {
                            let Ok(r) = call(&agent, "GET", &url, &[], None) else {
                                continue;
                            };
                            if r.status == 200 && etag_version(&r) != Some(last) {
                                found.push(format!(
                                    "round {round} (node {victim}, {}): GET {url} at {:?} after the restart: \
                                     200 with ETag {:?} and value {:?}; the last write, answered before \
                                     the restart, is version {last}",
                                    if round % 2 == 0 { "was the leader" } else { "a follower" },
                                    t0.elapsed(),
                                    r.header("etag"),
                                    r.text()
                                ));
                            }
                        }
                        found
                    })
                })
                .collect();
            readers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect()
        });
        stale.extend(found);
        c.wait_converged(&all);
    }
    assert!(
        stale.is_empty(),
        "{} stale linearizable reads: {stale:#?}\n{}",
        stale.len(),
        c.stderrs()
    );
}

/// About two minutes of faults: leader and follower kills, partitions of the leader or a
/// follower, a stopped leader. Run with
/// `cargo test --test it cluster::linearizable_history_long -- --ignored --nocapture`.
#[test]
#[ignore = "about two minutes; run it by name with --ignored"]
fn linearizable_history_long() {
    let mut c = Cluster::start(3);
    history(&mut c, 4, |c, rng, readable| {
        let all = c.ids();
        let until = Instant::now() + Duration::from_secs(120);
        let mut round = 0;
        while Instant::now() < until {
            thread::sleep(Duration::from_millis(1000 + rng.below(2000)));
            let leader = c.wait_leader(&all);
            let follower = *all.iter().find(|&&i| i != leader).unwrap();
            let hold = Duration::from_millis(1000 + rng.below(3000));
            // Each kind in turn: kill the leader, kill a follower, partition the leader,
            // partition a follower, stop the leader.
            let fault = round % 5;
            round += 1;
            let victim = if matches!(fault, 1 | 3) {
                follower
            } else {
                leader
            };
            eprintln!("fault {fault} on node {victim} (leader {leader}) for {hold:?}");
            // Reads keep off the victim until it has caught up again: a node catching up
            // serves stale linearizable reads (the bug `linearizable_history_short` is
            // ignored for); this run looks for anything else.
            readable[(victim - 1) as usize].store(false, Ordering::Relaxed);
            match fault {
                0 | 1 => {
                    c.node_mut(victim).kill();
                    thread::sleep(hold);
                    c.node_mut(victim).restart();
                }
                2 | 3 => {
                    c.node(victim).partition(true);
                    thread::sleep(hold);
                    c.node(victim).partition(false);
                }
                _ => {
                    signal(c.node(victim).pid(), Signal::STOP);
                    thread::sleep(hold);
                    signal(c.node(victim).pid(), Signal::CONT);
                }
            }
            c.wait_leader(&all);
            c.wait_caught_up(victim);
            readable[(victim - 1) as usize].store(true, Ordering::Relaxed);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Auth on the Raft listener

#[test]
fn raft_rpcs_need_the_token() {
    let n = Node::start(1, &["--auth-token", "secret"]);
    let agent = client(Duration::from_secs(10));
    let raft = |path: &str| format!("http://{}{path}", n.raft_addr);
    let vote = json!({"vote": {"leader_id": {"term": 7, "node_id": 9}, "committed": false}, "last_log_id": null})
        .to_string();
    let append = json!({
        "vote": {"leader_id": {"term": 8, "node_id": 9}, "committed": true},
        "prev_log_id": null, "entries": [], "leader_commit": null,
    })
    .to_string();
    let wrong: [&[(&str, &str)]; 4] = [
        &[],
        &[("Authorization", "Bearer wrong")],
        &[("Authorization", "Basic c2VjcmV0")],
        &[("Authorization", "Bearer secret2")],
    ];
    for headers in wrong {
        for (path, body) in [
            ("/raft/vote", &vote),
            ("/raft/append", &append),
            ("/raft/snapshot", &vote),
            ("/raft/read-index", &vote),
        ] {
            let mut h = headers.to_vec();
            h.push(("Content-Type", "application/json"));
            let r = call(&agent, "POST", &raft(path), &h, Some(body.as_bytes()))
                .unwrap_or_else(|e| panic!("POST {path}: {e}"));
            r.assert_error(401);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
        }
    }
    // The API needs it too.
    for path in ["/cluster", "/kv/x", "/kv"] {
        let r = call(&agent, "GET", &n.url(path), &[], None).unwrap();
        r.assert_error(401);
    }
    // Nothing reached Raft: the term is still 0.
    let auth = [("Authorization", "Bearer secret")];
    let r = call(&agent, "GET", &n.url("/cluster"), &auth, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(num(&r.json(), "term"), 0, "{}", r.text());
    // With the token the same vote does reach Raft (so the 401s were the token's doing).
    let r = call(
        &agent,
        "POST",
        &raft("/raft/vote"),
        &[auth[0], ("Content-Type", "application/json")],
        Some(vote.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&agent, "GET", &n.url("/cluster"), &auth, None).unwrap();
    assert_eq!(num(&r.json(), "term"), 7, "{}", r.text());
}

#[test]
fn non_loopback_raft_addr_needs_a_token() {
    let dir = temp_dir();
    let args = ["--raft-addr", "0.0.0.0:0", "--node-id", "1"];
    match Server::try_start(dir.path(), &args) {
        Ok(s) => {
            s.kill();
            panic!("a node with --raft-addr 0.0.0.0:0 and no token started");
        }
        Err((status, err)) => {
            let status = status.expect("the server exits rather than hangs");
            assert!(!status.success(), "exit status {status:?}");
            assert!(err.contains("0.0.0.0:0"), "stderr names the address: {err}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Standalone

#[test]
fn cluster_routes_in_standalone_are_404() {
    let s = Fixture::start(&[]);
    let body = json!({"id": 2, "addr": "127.0.0.1:1", "raft_addr": "127.0.0.1:2"}).to_string();
    for (method, path, body) in [
        ("GET", "/cluster", None),
        ("POST", "/cluster/init", None),
        ("POST", "/cluster/nodes", Some(body.as_bytes())),
        ("DELETE", "/cluster/nodes/2", None),
    ] {
        let r = s.request(method, path, &[("Content-Type", "application/json")], body);
        let msg = r.assert_error(404);
        assert!(msg.contains("cluster"), "{method} {path}: {msg}");
    }
}

/// Bad membership requests get a 4xx and change nothing: a malformed or incomplete body, an id
/// of 0, addresses that are not `IP:PORT`, an unknown field, a bad id in the path; a second
/// `init` conflicts (409).
#[test]
fn bad_membership_requests_are_refused_and_change_nothing() {
    let c = Cluster::start(1);
    let url = c.node(1).url("/cluster/nodes");
    let json_ct = [("Content-Type", "application/json")];
    for body in [
        "",
        "not json",
        "{}",
        r#"{"id": 2}"#,
        r#"{"id": 0, "addr": "127.0.0.1:1", "raft_addr": "127.0.0.1:2"}"#,
        r#"{"id": -1, "addr": "127.0.0.1:1", "raft_addr": "127.0.0.1:2"}"#,
        r#"{"id": "2", "addr": "127.0.0.1:1", "raft_addr": "127.0.0.1:2"}"#,
        r#"{"id": 2, "addr": "localhost", "raft_addr": "127.0.0.1:2"}"#,
        r#"{"id": 2, "addr": "127.0.0.1:1", "raft_addr": "nowhere:x"}"#,
        r#"{"id": 2, "addr": "127.0.0.1:1", "raft_addr": "127.0.0.1:2", "voter": true}"#,
    ] {
        let r = call(&c.admin, "POST", &url, &json_ct, Some(body.as_bytes())).expect("POST");
        assert_eq!(r.status, 400, "POST /cluster/nodes {body:?}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{body:?}: {}", r.text());
    }
    for id in ["0", "x", "-3", "1.5", "%zz"] {
        let r = call(
            &c.admin,
            "DELETE",
            &c.node(1).url(&format!("/cluster/nodes/{id}")),
            &[],
            None,
        )
        .expect("DELETE");
        assert_eq!(r.status, 400, "DELETE /cluster/nodes/{id}: {}", r.text());
    }
    let r = call(&c.admin, "POST", &c.node(1).url("/cluster/init"), &[], None).expect("init");
    assert_eq!(r.status, 409, "a second init: {}", r.text());
    let status = c.node(1).status(&c.admin).expect("GET /cluster");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
}
