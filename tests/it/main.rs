//! The one integration-test binary: every module starts the real `twinkv` binary through the
//! `util` harness and talks to it over HTTP on loopback.

mod api;
mod cli;
mod crash;
mod faults;
mod hostile;
mod inprocess;
mod model;
mod outside;
mod recovery;
mod smoke;
mod soak;
mod torture;
mod util;
