//! The one integration-test binary: every module starts the real `twinkv` binary through the
//! `util` harness and talks to it over HTTP on loopback.

mod api;
mod api_batch;
mod api_concurrency;
mod api_form;
mod api_health_metrics;
mod api_keys;
mod api_kv;
mod api_limits;
mod api_listing;
mod api_routes;
mod cli;
mod cluster;
mod crash;
mod faults;
mod hostile;
mod hygiene;
mod inprocess;
mod layering;
mod logfiles;
mod model;
mod openapi;
mod outside;
mod recovery;
mod semantics;
mod smoke;
mod soak;
mod torture;
mod ttl;
mod util;
mod watch;
