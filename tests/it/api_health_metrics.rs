//! `/health` and `/metrics`: the health document, and the series `/metrics` exports with
//! their counts.
//!
//! The rules every api test keeps, and the helpers they share, are in [`crate::api`].

use crate::api::{metric, JSON};
use crate::util::Fixture;

#[test]
fn health_is_ok() {
    let s = Fixture::start(&[]);
    let r = s.get("/health");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with(JSON)));
    assert_eq!(r.json()["status"], "ok");
}

#[test]
fn metrics_export_keys_seq_and_request_counts() {
    let s = Fixture::start(&[]);
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    // The Prometheus text format 0.0.4, which every Prometheus server reads.
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    assert!(!text.contains("# EOF"), "not OpenMetrics:\n{text}");
    for name in [
        "twinkv_keys",
        "twinkv_seq",
        "twinkv_durable_seq",
        "twinkv_snapshot_bytes",
        "twinkv_snapshot_duration_seconds",
        "twinkv_snapshot_failures_total",
        "twinkv_http_requests_total",
        "twinkv_log_bytes",
        "twinkv_log_fsyncs_total",
        "twinkv_log_fsync_duration_seconds",
        "twinkv_http_request_duration_seconds",
        "twinkv_watchers",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && !l.starts_with('#'))
                || text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
    assert_eq!(metric(&s, "twinkv_keys"), Some(0.0));
    assert_eq!(metric(&s, "twinkv_seq"), Some(0.0));

    let get_200 = r#"twinkv_http_requests_total{method="GET",status="200"}"#;
    let get_404 = r#"twinkv_http_requests_total{method="GET",status="404"}"#;
    let put_201 = r#"twinkv_http_requests_total{method="PUT",status="201"}"#;
    assert_eq!(metric(&s, get_404), None, "no 404 yet");

    // Between two scrapes: the first scrape itself and three GETs, all answered 200.
    let before = metric(&s, get_200).expect("earlier scrapes were GETs answered 200");
    for _ in 0..3 {
        assert_eq!(s.get("/health").status, 200);
    }
    let after = metric(&s, get_200).expect("GET 200 counted");
    assert_eq!(after - before, 4.0, "before {before}, after {after}");

    assert_eq!(s.put_text("a", "1").status, 201);
    assert_eq!(s.put_text("b", "2").status, 201);
    assert_eq!(s.put_text("b", "3").status, 200);
    s.get("/kv/absent").assert_error(404);
    s.get("/kv/absent").assert_error(404);
    assert_eq!(metric(&s, "twinkv_keys"), Some(2.0));
    assert_eq!(metric(&s, "twinkv_seq"), Some(3.0));
    assert_eq!(metric(&s, put_201), Some(2.0));
    assert_eq!(
        metric(
            &s,
            r#"twinkv_http_requests_total{method="PUT",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&s, get_404), Some(2.0));
    // Every counted request was timed too: the three PUTs, under their method.
    let put_timed = r#"twinkv_http_request_duration_seconds_count{method="PUT"}"#;
    assert_eq!(metric(&s, put_timed), Some(3.0));
    let put_fast = r#"twinkv_http_request_duration_seconds_bucket{method="PUT",le="10"}"#;
    assert_eq!(
        metric(&s, put_fast),
        Some(3.0),
        "a local PUT takes under 10 s"
    );
    let put_sum = r#"twinkv_http_request_duration_seconds_sum{method="PUT"}"#;
    assert!(metric(&s, put_sum).is_some_and(|t| t > 0.0 && t < 30.0));

    assert_eq!(s.delete("a").status, 204);
    assert_eq!(metric(&s, "twinkv_keys"), Some(1.0));
    assert_eq!(metric(&s, "twinkv_seq"), Some(4.0));
    assert_eq!(
        metric(
            &s,
            r#"twinkv_http_requests_total{method="DELETE",status="204"}"#
        ),
        Some(1.0)
    );
}
