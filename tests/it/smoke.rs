//! The harness itself: a server starts, answers, and stops cleanly.

use crate::util::{temp_dir, Server};

#[test]
fn starts_answers_and_stops_cleanly() {
    let dir = temp_dir();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.get("/health").json()["status"], "ok");
    assert_eq!(s.put_text("k", "v").status, 201);
    assert_eq!(s.get("/kv/k").text(), "v");
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
}
