//! Checkpoints on spare CPU only.
//!
//! Encoding a large map is one long burst of CPU (about 0.6 s at a million keys). On a core
//! the HTTP workers also need, the scheduler shares the core fairly between them, so requests
//! waited out the encoder's time slices. Since the log holds every write, an image is only a
//! checkpoint and nothing waits for it but `POST /snapshot`: so it is encoded on a thread of its
//! own at `SCHED_IDLE`, which runs only when no ordinary thread wants the core and which a
//! waking request thread preempts at once.
//!
//! A core kept busy without a pause would starve such a thread while the log grows, so its
//! patience is bounded: past it, the encoder stops at its next chunk and the caller writes the
//! image again at normal priority. (An unprivileged thread may enter `SCHED_IDLE` but not
//! leave it, hence a fresh attempt rather than a raise.)

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The error a [`Patient`] writer returns once its patience has run out.
#[derive(Debug, thiserror::Error)]
#[error("the checkpoint at idle priority ran out of patience")]
pub(super) struct OutOfPatience;

/// How often [`run`] looks at its `hurry` flag while the work goes on.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// Runs `work` on a new thread at idle priority (where the OS allows) and returns what it
/// returned, or `None` when no thread could be started (nothing was done). Past `patience`, or
/// once `hurry` is set (the server is stopping and wants its final image now), it sets the
/// flag `work` is handed, which `work` polls through a [`Patient`] writer to stop early:
/// [`gave_up`] then tells its error apart.
pub(super) fn run<T: Send>(
    patience: Duration,
    hurry: &AtomicBool,
    work: impl FnOnce(&AtomicBool) -> T + Send,
) -> Option<T> {
    let stop = AtomicBool::new(false);
    // Never sent on: dropped when the work ends, by returning or by a panic.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let joined = std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("twinkv-checkpoint".into())
            .spawn_scoped(s, || {
                let _done = done_tx;
                lower();
                work(&stop)
            });
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the checkpoint thread; writing at normal priority");
                return None;
            }
        };
        let deadline = std::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match done_rx.recv_timeout(left.min(LOOK_EVERY)) {
                Err(mpsc::RecvTimeoutError::Timeout)
                    if left > LOOK_EVERY && !hurry.load(Ordering::Relaxed) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                // The work has ended (its sender is gone).
                _ => break,
            }
        }
        Some(handle.join())
    });
    match joined {
        None => None,
        Some(Ok(out)) => Some(out),
        // Panic again on the calling thread, with the message, so its supervision records the
        // death from the panic hook (before anything the caller owns is dropped).
        Some(Err(payload)) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            panic!("the checkpoint thread panicked: {what}");
        }
    }
}

/// Whether `e` is a [`Patient`] writer's refusal: the work stopped early and counts for nothing.
pub(super) fn gave_up(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OutOfPatience>())
}

/// Puts the calling thread in `SCHED_IDLE`; where the OS refuses, it stays as it was.
fn lower() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            tracing::warn!(error = ?e, "cannot lower the checkpoint thread to idle priority");
        }
    }
}

/// A writer that fails with [`OutOfPatience`] once `stop` is set, so an encode that writes in
/// chunks stops within one chunk.
#[derive(Debug)]
pub(super) struct Patient<'a, W> {
    /// Where the bytes go.
    pub(super) inner: &'a mut W,
    /// Set by [`run`] when the patience is spent.
    pub(super) stop: &'a AtomicBool,
}

impl<W: Write> Write for Patient<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other(OutOfPatience));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_work_runs_at_idle_priority_and_the_caller_keeps_its_own() {
        use thread_priority::{
            thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
        };
        let before = thread_schedule_policy().expect("policy");
        let seen = run(Duration::from_secs(60), &AtomicBool::new(false), |_| {
            thread_schedule_policy()
        })
        .expect("the work ran")
        .expect("policy");
        assert_eq!(
            seen,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        assert_eq!(thread_schedule_policy().expect("policy"), before);
    }

    /// Writes until told to stop, as an encode of a map that never ends would; returns the
    /// error that stopped it.
    fn write_until_stopped(stop: &AtomicBool) -> io::Error {
        let mut sink = Vec::new();
        let mut w = Patient {
            inner: &mut sink,
            stop,
        };
        loop {
            if let Err(e) = w.write_all(b"chunk") {
                return e;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn past_its_patience_the_work_is_stopped_and_counts_for_nothing() {
        let out = run(
            Duration::from_millis(20),
            &AtomicBool::new(false),
            write_until_stopped,
        );
        let e = out.expect("the work ran");
        assert!(gave_up(&e), "{e}");
        assert!(!gave_up(&io::Error::other("a full disk")));
    }

    #[test]
    fn a_hurry_stops_the_work_long_before_its_patience() {
        let hurry = AtomicBool::new(false);
        let started = std::time::Instant::now();
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                hurry.store(true, Ordering::Relaxed);
            });
            run(Duration::from_secs(600), &hurry, write_until_stopped)
        });
        assert!(gave_up(&out.expect("the work ran")));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn work_done_within_its_patience_counts() {
        let out = run(Duration::from_secs(60), &AtomicBool::new(false), |stop| {
            let mut sink = Vec::new();
            Patient {
                inner: &mut sink,
                stop,
            }
            .write_all(b"image")
            .map(|()| sink)
        });
        assert_eq!(out.expect("the work ran").expect("written"), b"image");
    }

    #[test]
    #[should_panic(expected = "the checkpoint thread panicked: boom")]
    fn a_panic_in_the_work_is_raised_again_on_the_caller() {
        let _ = run(
            Duration::from_secs(60),
            &AtomicBool::new(false),
            |_| -> () { panic!("boom") },
        );
    }
}
