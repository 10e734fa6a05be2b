//! The cycle's bounded parallelism: a small persistent pool for work that may outlive a cycle
//! (inspecting new binaries: it cannot be interrupted, so the cycle waits for it only so long and
//! picks the result up later), and a scoped fan-out for work bounded by its own budget (reading
//! processes). Both have a fixed number of threads and bounded queues, and stop taking work once
//! the agent is stopping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Threads for reading processes: the machine's parallelism, at least 2, at most 4.
pub fn read_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// A fixed set of worker threads running `work` on submitted jobs; at most `threads + queue` jobs
/// are submitted and not yet received at any time (so neither channel grows without bound and a
/// worker never blocks on sending its result). Dropping the pool lets idle workers exit; a busy
/// one finishes its job first (nobody waits for it).
pub struct Pool<J, R> {
    jobs: SyncSender<J>,
    results: Receiver<R>,
    in_flight: usize,
    capacity: usize,
}

impl<J: Send + 'static, R: Send + 'static> Pool<J, R> {
    /// Starts `threads` workers named `name`. Workers skip jobs once `stop` is set.
    pub fn new(
        name: &str,
        threads: usize,
        queue: usize,
        stop: Arc<AtomicBool>,
        work: impl Fn(J) -> R + Send + Sync + 'static,
    ) -> std::io::Result<Pool<J, R>> {
        let threads = threads.max(1);
        let capacity = threads + queue;
        // Room for every job `try_submit` accepts, even before a worker takes one.
        let (jobs, job_rx) = mpsc::sync_channel::<J>(capacity);
        let (result_tx, results) = mpsc::sync_channel::<R>(capacity);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let work = Arc::new(work);
        for i in 0..threads {
            let (job_rx, result_tx, work, stop) = (
                job_rx.clone(),
                result_tx.clone(),
                work.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => match rx.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        },
                        Err(_) => return,
                    };
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if result_tx.send(work(job)).is_err() {
                        return;
                    }
                })?;
        }
        Ok(Pool {
            jobs,
            results,
            in_flight: 0,
            capacity,
        })
    }

    /// Submits `job` unless `threads + queue` jobs are already pending (then it is handed back).
    pub fn try_submit(&mut self, job: J) -> Result<(), J> {
        if self.in_flight >= self.capacity {
            return Err(job);
        }
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => Err(j),
        }
    }

    /// A finished job's result, waiting for one until `deadline` at the latest.
    pub fn recv_until(&mut self, deadline: Instant) -> Option<R> {
        if self.in_flight == 0 {
            return None;
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.results.recv_timeout(wait) {
            Ok(r) => {
                self.in_flight -= 1;
                Some(r)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Jobs submitted whose results were not received yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Runs `f` on every item with at most `threads` threads at once (the calling thread waits), each
/// taking the next item when done with one, so one slow item holds back only its own thread. Items
/// not started when `stop` is set are skipped.
pub fn for_each_bounded<T: Send>(
    items: Vec<T>,
    threads: usize,
    stop: &AtomicBool,
    f: impl Fn(T) + Sync,
) {
    let threads = threads.max(1).min(items.len());
    let next = Mutex::new(items.into_iter());
    let take = || -> Option<T> {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        next.lock().ok()?.next()
    };
    if threads <= 1 {
        while let Some(item) = take() {
            f(item);
        }
        return;
    }
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(item) = take() {
                    f(item);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A slow job occupies one worker; the quick jobs submitted after it finish on the other one
    /// meanwhile. No more than `threads + queue` jobs are accepted at once.
    #[test]
    fn pool_is_bounded_and_a_slow_job_holds_back_only_its_worker() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut pool = Pool::new("test", 2, 2, stop, |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        })
        .unwrap();
        pool.try_submit(3000).unwrap();
        for _ in 0..3 {
            pool.try_submit(10).unwrap();
        }
        assert_eq!(pool.try_submit(10), Err(10), "4 pending: the pool is full");
        let t0 = Instant::now();
        let mut quick = 0;
        while quick < 3 {
            let r = pool
                .recv_until(t0 + Duration::from_secs(2))
                .expect("quick jobs finish while the slow one runs");
            assert_eq!(r, 10);
            quick += 1;
        }
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert_eq!(pool.in_flight(), 1);
        // Room again; the slow job is still running and is received later.
        pool.try_submit(5).unwrap();
        assert_eq!(
            pool.recv_until(Instant::now() + Duration::from_secs(2)),
            Some(5)
        );
        assert_eq!(
            pool.recv_until(Instant::now() + Duration::from_secs(10)),
            Some(3000)
        );
        assert_eq!(pool.in_flight(), 0);
        assert_eq!(
            pool.recv_until(Instant::now() + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn bounded_fan_out_caps_concurrency_and_stops() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        for_each_bounded((0..12).collect::<Vec<u32>>(), 3, &stop, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Item 0 is slow: the other eleven go through the two other threads meanwhile.
            std::thread::sleep(Duration::from_millis(if i == 0 { 600 } else { 20 }));
            running.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 12);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t0.elapsed()
        );

        // Once stopping, items not started are skipped.
        let done = AtomicUsize::new(0);
        for_each_bounded((0..100).collect::<Vec<u32>>(), 2, &stop, |_| {
            if done.fetch_add(1, Ordering::SeqCst) == 3 {
                stop.store(true, Ordering::SeqCst);
            }
        });
        assert!(done.load(Ordering::SeqCst) < 10);
    }
}
