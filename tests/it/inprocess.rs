//! In-process HTTP tests (issue 8, item 6): what needs no process (routing, status codes,
//! headers, auth) is checked against the same `twinkv::configure` and `twinkv::observe` the
//! server runs, through `actix_web::test`, over a real [`Engine`] on a temporary data dir.
//! One test runs `twinkv::server::serve` itself on a listener this test bound, and stops it
//! through the shutdown future it was given.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::App;
use clap::Parser;
use serde_json::{json, Value};
use twinkv::engine::Settings;
use twinkv::{AppState, Durability, Engine, Limits};

/// An engine on a fresh data dir (snapshots every 10 ms) and the state a server builds from
/// it, as `server::run_http` does.
struct Fixture {
    engine: Engine,
    state: web::Data<AppState>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(auth_token: Option<&str>) -> Fixture {
        let dir = crate::util::temp_dir();
        let engine =
            Engine::open(dir.path(), &Settings::new(Durability::Async)).expect("open the engine");
        let state = web::Data::new(AppState::new(
            &engine,
            Limits::default(),
            auth_token.map(str::to_string),
            Durability::Async,
        ));
        Fixture {
            engine,
            state,
            _dir: dir,
        }
    }

    /// Stops the writer and the snapshot thread in order, as the server does.
    fn close(self) {
        drop(self.state);
        self.engine.close().expect("a clean close");
    }
}

/// The app exactly as the server builds it for one worker: state, that worker's reader, the
/// middleware, the routes.
macro_rules! app {
    ($fixture:expr) => {
        test::init_service(
            App::new()
                .app_data($fixture.state.clone())
                .app_data($fixture.engine.store.readers().reader())
                .wrap(from_fn(twinkv::observe))
                .configure(twinkv::configure),
        )
        .await
    };
}

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `Twinkv-Seq`, which must be present and a number.
    fn seq(&self) -> u64 {
        self.header("twinkv-seq")
            .unwrap_or_else(|| panic!("no Twinkv-Seq on {self:?}"))
            .parse()
            .expect("Twinkv-Seq is a number")
    }

    /// Asserts `status` and a JSON error body `{"error": "..."}`; returns the message.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert!(
            self.content_type().starts_with("application/json"),
            "{self:?}"
        );
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {v}"))
            .to_string()
    }

    /// The methods of `Allow`.
    fn allow(&self) -> BTreeSet<String> {
        self.header("allow")
            .unwrap_or_else(|| panic!("no Allow on {self:?}"))
            .split(',')
            .map(|m| m.trim().to_string())
            .collect()
    }
}

async fn send<S, R, B>(app: &S, req: R) -> Reply
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = test::read_body(res).await;
    Reply {
        status,
        headers,
        body,
    }
}

fn req(method: Method, path: &str) -> TestRequest {
    TestRequest::default().method(method).uri(path)
}

fn put_text(path: &str, text: &str) -> TestRequest {
    req(Method::PUT, path).set_payload(text.to_string())
}

fn put_json(path: &str, v: &Value) -> TestRequest {
    req(Method::PUT, path)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(v.to_string())
}

fn batch(v: &Value) -> TestRequest {
    req(Method::POST, "/kv")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(v.to_string())
}

#[actix_web::test]
async fn an_unknown_route_is_a_json_404_and_a_wrong_method_a_json_405_with_allow() {
    let f = Fixture::new(None);
    let app = app!(f);
    for path in ["/", "/nope", "/kvx", "/kv2/a", "/health/x", "/snapshots"] {
        let r = send(&app, req(Method::GET, path).to_request()).await;
        r.error(404);
    }
    // (method, path, methods Allow must list). HEAD may be listed too: only the wrong method
    // must be absent.
    let cases: [(Method, &str, &[&str]); 6] = [
        (Method::PATCH, "/kv/a", &["GET", "PUT", "POST", "DELETE"]),
        (
            Method::OPTIONS,
            "/kv/a/b",
            &["GET", "PUT", "POST", "DELETE"],
        ),
        (Method::PUT, "/kv", &["GET", "POST"]),
        (Method::DELETE, "/health", &["GET"]),
        (Method::POST, "/metrics", &["GET"]),
        (Method::DELETE, "/snapshot", &["GET", "POST"]),
    ];
    for (method, path, allowed) in cases {
        let r = send(&app, req(method.clone(), path).to_request()).await;
        r.error(405);
        let allow = r.allow();
        for m in allowed {
            assert!(
                allow.contains(*m),
                "{method} {path}: Allow {allow:?} lacks {m}"
            );
        }
        assert!(
            !allow.contains(method.as_str()),
            "{method} {path}: {allow:?}"
        );
    }
    drop(app);
    f.close();
}

#[actix_web::test]
async fn single_key_writes_and_reads_answer_with_the_contract_statuses_and_headers() {
    let f = Fixture::new(None);
    let app = app!(f);

    let r = send(&app, put_text("/kv/a", "hello").to_request()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json(), json!({ "key": "a", "version": 1 }));
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.seq(), 1);
    let r = send(&app, put_text("/kv/a", "hello again").to_request()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({ "key": "a", "version": 2 }));
    assert_eq!(r.header("etag"), Some("\"2\""));

    // A string comes back as text, or as JSON when asked; any other value as JSON.
    let r = send(&app, req(Method::GET, "/kv/a").to_request()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "text/plain; charset=utf-8");
    assert_eq!(&r.body[..], b"hello again");
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(r.seq(), 2);
    let asked = req(Method::GET, "/kv/a").insert_header((header::ACCEPT, "application/json"));
    let r = send(&app, asked.to_request()).await;
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.json(), json!("hello again"));
    let r = send(
        &app,
        put_json("/kv/j", &json!({ "x": [1, 2] })).to_request(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = send(&app, req(Method::GET, "/kv/j").to_request()).await;
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.json(), json!({ "x": [1, 2] }));
    send(
        &app,
        put_json("/kv/bad", &json!(1))
            .set_payload("{nope")
            .to_request(),
    )
    .await
    .error(400);

    // HEAD: the same headers as GET (the HTTP/1 encoder drops the body on the wire, after
    // the service these tests call). A matching If-None-Match: 304.
    let r = send(&app, req(Method::HEAD, "/kv/a").to_request()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag"), Some("\"2\""));
    assert_eq!(r.content_type(), "text/plain; charset=utf-8");
    let fresh = req(Method::GET, "/kv/a").insert_header((header::IF_NONE_MATCH, "\"2\""));
    let r = send(&app, fresh.to_request()).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header("etag"), Some("\"2\""));

    // Preconditions.
    let stale = put_text("/kv/a", "x").insert_header((header::IF_MATCH, "\"1\""));
    send(&app, stale.to_request()).await.error(412);
    let create_only = put_text("/kv/a", "x").insert_header((header::IF_NONE_MATCH, "*"));
    send(&app, create_only.to_request()).await.error(412);
    let current = put_text("/kv/a", "third").insert_header((header::IF_MATCH, "\"2\""));
    assert_eq!(
        send(&app, current.to_request()).await.status,
        StatusCode::OK
    );

    // A form post stores a string; without `value` 400; another content type 415.
    let form = |body: &str, ctype: &str| {
        req(Method::POST, "/kv/f")
            .insert_header((header::CONTENT_TYPE, ctype.to_string()))
            .set_payload(body.to_string())
            .to_request()
    };
    let urlencoded = "application/x-www-form-urlencoded";
    let r = send(&app, form("value=a+b%21", urlencoded)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = send(&app, req(Method::GET, "/kv/f").to_request()).await;
    assert_eq!(&r.body[..], b"a b!");
    send(&app, form("other=1", urlencoded)).await.error(400);
    send(&app, form("value=1", "text/plain")).await.error(415);

    // Limits: a key over 1024 bytes 414, a value over 1 MiB 413.
    let long = format!("/kv/{}", "k".repeat(1025));
    send(&app, put_text(&long, "v").to_request())
        .await
        .error(414);
    let huge = "v".repeat(1024 * 1024 + 1);
    send(&app, put_text("/kv/huge", &huge).to_request())
        .await
        .error(413);

    // Delete: 204, then 404, and the key is gone.
    let r = send(&app, req(Method::DELETE, "/kv/a").to_request()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    send(&app, req(Method::DELETE, "/kv/a").to_request())
        .await
        .error(404);
    send(&app, req(Method::GET, "/kv/a").to_request())
        .await
        .error(404);
    drop(app);
    f.close();
}

#[actix_web::test]
async fn batches_and_listings_answer_with_the_contract_statuses_and_bodies() {
    let f = Fixture::new(None);
    let app = app!(f);

    let r = send(
        &app,
        batch(&json!({ "put": { "b/1": 1, "b/2": "two", "c": null }, "delete": ["nothing"] }))
            .to_request(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({ "seq": 1 }));
    assert_eq!(r.seq(), 1);
    // An empty batch changes nothing and returns the current seq.
    let r = send(&app, batch(&json!({})).to_request()).await;
    assert_eq!(r.json(), json!({ "seq": 1 }));
    // Bad bodies: 400, nothing applied.
    let bad = [
        json!({ "put": { "x": 1 }, "delete": ["x"] }),
        json!({ "put": [1] }),
        json!({ "unknown": 1 }),
        json!([]),
    ];
    for body in bad {
        send(&app, batch(&body).to_request()).await.error(400);
    }
    send(&app, batch(&json!({})).set_payload("{").to_request())
        .await
        .error(400);
    let r = send(&app, batch(&json!({ "delete": ["c"] })).to_request()).await;
    assert_eq!(r.json(), json!({ "seq": 2 }));

    let list = |path: &str| req(Method::GET, path).to_request();
    let r = send(&app, list("/kv")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.json(), json!({ "keys": ["b/1", "b/2"], "next": null }));
    assert_eq!(r.seq(), 2);
    let r = send(&app, list("/kv?prefix=b/&limit=1")).await;
    assert_eq!(r.json(), json!({ "keys": ["b/1"], "next": "b/1" }));
    let r = send(&app, list("/kv?prefix=b/&after=b/1")).await;
    assert_eq!(r.json(), json!({ "keys": ["b/2"], "next": null }));
    let r = send(&app, list("/kv?values=true&prefix=b/")).await;
    assert_eq!(
        r.json(),
        json!({ "items": [
            { "key": "b/1", "value": 1, "version": 1 },
            { "key": "b/2", "value": "two", "version": 1 },
        ], "next": null })
    );
    for bad in [
        "/kv?limit=0",
        "/kv?limit=10001",
        "/kv?limit=x",
        "/kv?values=maybe",
    ] {
        send(&app, list(bad)).await.error(400);
    }
    drop(app);
    f.close();
}

#[actix_web::test]
async fn every_kv_response_carries_twinkv_seq_errors_included() {
    let f = Fixture::new(None);
    let app = app!(f);
    let r = send(&app, put_text("/kv/a", "1").to_request()).await;
    assert_eq!(r.seq(), 1);
    let r = send(&app, batch(&json!({ "put": { "b": 2 } })).to_request()).await;
    assert_eq!(r.seq(), 2);

    // Whatever the status, a `/kv` answer says which state it was given against.
    let long = format!("/kv/{}", "k".repeat(1025));
    let cases: Vec<(u16, TestRequest)> = vec![
        (200, req(Method::GET, "/kv/a")),
        (200, req(Method::HEAD, "/kv/a")),
        (200, req(Method::GET, "/kv?prefix=")),
        (
            304,
            req(Method::GET, "/kv/a").insert_header((header::IF_NONE_MATCH, "\"1\"")),
        ),
        (404, req(Method::GET, "/kv/absent")),
        (404, req(Method::DELETE, "/kv/absent")),
        (400, req(Method::GET, "/kv/%ZZ")),
        (400, req(Method::GET, "/kv?limit=0")),
        (400, batch(&json!({ "put": 1 }))),
        (405, req(Method::PATCH, "/kv/a")),
        (405, req(Method::PUT, "/kv")),
        (
            412,
            put_text("/kv/a", "x").insert_header((header::IF_MATCH, "\"9\"")),
        ),
        (414, req(Method::GET, &long)),
        (
            415,
            req(Method::POST, "/kv/a").insert_header((header::CONTENT_TYPE, "text/plain")),
        ),
        (413, put_text("/kv/huge", &"v".repeat(1024 * 1024 + 1))),
    ];
    for (status, request) in cases {
        let r = send(&app, request.to_request()).await;
        assert_eq!(r.status.as_u16(), status, "{r:?}");
        assert_eq!(r.seq(), 2, "{r:?}");
    }
    // A write's answer carries the seq after it.
    let r = send(&app, req(Method::DELETE, "/kv/b").to_request()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.seq(), 3);
    drop(app);
    f.close();
}

#[actix_web::test]
async fn head_watch_checks_its_event_id_as_get_does() {
    let f = Fixture::new(None);
    let app = app!(f);
    let r = send(&app, put_text("/kv/a", "1").to_request()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    for method in [Method::GET, Method::HEAD] {
        // A signed or spaced number is not an event id, though `str::parse` would take it.
        for id in ["+0.0", "+1", "1.+0", "x"] {
            let r = send(
                &app,
                req(method.clone(), "/watch?key=a")
                    .insert_header(("last-event-id", id))
                    .to_request(),
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {id:?}: {r:?}");
        }
        for q in ["since=%2B1", "since=1.%2B0", "since=%201"] {
            let r = send(
                &app,
                req(method.clone(), &format!("/watch?{q}")).to_request(),
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {q}: {r:?}");
        }
    }
    let r = send(
        &app,
        req(Method::HEAD, "/watch?key=a")
            .insert_header(("last-event-id", "1.0"))
            .to_request(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.content_type(), "text/event-stream");
    assert!(r.body.is_empty(), "{r:?}");
    drop(app);
    f.close();
}

#[actix_web::test]
async fn with_a_token_every_request_but_get_health_needs_it() {
    let f = Fixture::new(Some("s3cret"));
    let app = app!(f);
    let with =
        |r: TestRequest, auth: &str| r.insert_header((header::AUTHORIZATION, auth.to_string()));

    for method in [Method::GET, Method::HEAD] {
        let r = send(&app, req(method, "/health").to_request()).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let guarded = [
        (Method::GET, "/kv/a"),
        (Method::PUT, "/kv/a"),
        (Method::DELETE, "/kv/a"),
        (Method::GET, "/kv"),
        (Method::POST, "/kv"),
        (Method::GET, "/metrics"),
        (Method::GET, "/snapshot"),
        (Method::POST, "/snapshot"),
        (Method::DELETE, "/health"),
        (Method::GET, "/nope"),
    ];
    for (method, path) in guarded {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("s3cret"),
        ] {
            let mut r = req(method.clone(), path);
            if let Some(a) = auth {
                r = with(r, a);
            }
            let r = send(&app, r.to_request()).await;
            r.error(401);
            let challenge = r.header("www-authenticate").unwrap_or("");
            assert!(challenge.starts_with("Bearer"), "{method} {path}: {r:?}");
        }
    }
    // Nothing was written by the refused requests.
    let ok = |r: TestRequest| with(r, "Bearer s3cret").to_request();
    send(&app, ok(req(Method::GET, "/kv/a"))).await.error(404);
    let r = send(&app, ok(put_text("/kv/a", "v"))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["version"], 1);
    let r = send(&app, ok(req(Method::GET, "/kv/a"))).await;
    assert_eq!(&r.body[..], b"v");
    let r = send(&app, ok(req(Method::GET, "/metrics"))).await;
    assert_eq!(r.status, StatusCode::OK);
    drop(app);
    f.close();
}

#[test]
fn serve_runs_on_a_given_listener_until_its_shutdown_future_resolves() {
    let dir = crate::util::temp_dir();
    let data = dir.path().to_str().expect("UTF-8 temp path");
    let cli = twinkv::cli::Cli::try_parse_from(["twinkv", "--data-dir", data, "--workers", "1"])
        .expect("flags parse");
    let config = twinkv::Config::from_args(&cli.serve).expect("a valid config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        twinkv::server::serve(&config, listener, async move {
            let _ = stopped.await;
        })
        .map_err(|e| twinkv::Chain(&e).to_string())
    });

    // The listener is bound already: a connection waits in its backlog until the server
    // accepts, so no wait for a `listening on` line is needed.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let r = agent
        .put(&format!("{base}/kv/greeting"))
        .send_string("hello")
        .expect("PUT");
    assert_eq!(r.status(), 201);
    let r = agent
        .get(&format!("{base}/kv/greeting"))
        .call()
        .expect("GET");
    assert_eq!(r.header("twinkv-seq"), Some("1"));
    assert_eq!(r.into_string().expect("body"), "hello");

    stop.send(())
        .expect("serve still waits on its shutdown future");
    let result = server.join().expect("serve did not panic");
    assert_eq!(result, Ok(()));
    // It stopped in order: the final snapshot holds the write.
    let engine = Engine::open(dir.path(), &Settings::new(Durability::Async))
        .expect("reopen the data dir: serve released its lock");
    let entry = engine.store.readers().reader().get("greeting");
    assert_eq!(
        entry.and_then(|e| e.text().map(|t| t.into_owned())),
        Some("hello".to_string())
    );
    engine.close().expect("a clean close");
}
