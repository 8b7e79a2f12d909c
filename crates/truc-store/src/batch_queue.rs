//! Requests from many writers to one thread that serves them in batches (a flush, an
//! `fdatasync`), waking that thread only when it has something to do.
//!
//! A channel wakes its receiver on every message. Under load that is a thread switch and a
//! `futex` call per request, though the thread only needs to wake when a batch is due: when
//! a request that may not wait arrives while it sleeps with nothing due, when the last
//! writer it is gathering for has asked, or when a request is due before the time it set
//! itself. So the queue keeps what the thread waits for beside the requests, under one
//! lock, and a writer wakes it only if its request (or its leaving) changes that.
//!
//! Writers announce themselves ([`BatchQueue::announce`]) before the work that precedes
//! their request; a batch that becomes due while any are announced waits a moment (its
//! gather time) for them, so that one flush serves them too.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A queue of requests of type `T`, each due at an instant, served in batches by one thread.
pub(crate) struct BatchQueue<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

struct State<T> {
    requests: Vec<T>,
    /// The earliest instant any queued request is due at.
    due: Option<Instant>,
    /// Writers announced and not yet asked or gone.
    announced: usize,
    closed: bool,
    /// What the serving thread waits for, while it waits.
    waiting: Waiting,
    /// Times a writer woke the thread (read by tests).
    wakes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Waiting {
    /// It is not waiting: it looks at the queue before it next waits.
    No,
    /// For a first request.
    Request,
    /// Until the earliest queued request is due, at this instant.
    Due(Instant),
    /// A batch is due; for the announced writers, until the end of its gather time.
    Writers,
}

/// A writer announced to a [`BatchQueue`]: while it exists, a due batch waits (a moment)
/// for its request. Given to [`BatchQueue::push`] with the request, or dropped if the
/// writer does not ask after all.
pub(crate) struct Announced<T> {
    queue: Option<Arc<BatchQueue<T>>>,
}

impl<T> Drop for Announced<T> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            let mut state = queue.lock();
            let wake = state.leave();
            drop(state);
            if wake {
                queue.wake.notify_one();
            }
        }
    }
}

impl<T> State<T> {
    /// One announced writer leaves; whether the thread should wake for it.
    fn leave(&mut self) -> bool {
        self.announced = self.announced.saturating_sub(1);
        let wake = self.announced == 0 && self.waiting == Waiting::Writers;
        self.wake_if(wake)
    }

    /// Marks the thread woken if `wake`; returns `wake`.
    fn wake_if(&mut self, wake: bool) -> bool {
        if wake {
            // Woken once: later writers need not wake it again.
            self.waiting = Waiting::No;
            self.wakes += 1;
        }
        wake
    }
}

impl<T> BatchQueue<T> {
    /// An empty, open queue.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(BatchQueue {
            state: Mutex::new(State {
                requests: Vec::new(),
                due: None,
                announced: 0,
                closed: false,
                waiting: Waiting::No,
                wakes: 0,
            }),
            wake: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state is consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Announces a writer that will push a request soon.
    pub(crate) fn announce(self: &Arc<Self>) -> Announced<T> {
        self.lock().announced += 1;
        Announced {
            queue: Some(self.clone()),
        }
    }

    /// Queues `request`, due at `due`, from the writer `announced` (if it announced itself).
    /// Refused (given back) once the queue is closed.
    pub(crate) fn push(
        &self,
        request: T,
        due: Instant,
        announced: Option<Announced<T>>,
    ) -> Result<(), T> {
        let mut state = self.lock();
        let mut wake = false;
        if let Some(mut a) = announced {
            // It leaves here, under this lock, rather than in its drop.
            let of = a.queue.take();
            debug_assert!(of.is_some_and(|q| std::ptr::eq(&*q, self)));
            wake = state.leave();
        }
        if state.closed {
            drop(state);
            if wake {
                self.wake.notify_one();
            }
            return Err(request);
        }
        state.requests.push(request);
        state.due = Some(state.due.map_or(due, |d| d.min(due)));
        let needed = match state.waiting {
            Waiting::No => false,
            Waiting::Request => true,
            Waiting::Due(at) => due < at,
            // Due already: it wakes when the writers have asked, or at the end of its gather.
            Waiting::Writers => false,
        };
        wake |= state.wake_if(needed);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Closes the queue: requests already in it are served at once (without waiting for
    /// their due time or for announced writers); new ones are refused.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// For the serving thread, held while it serves: if it stops for any reason (a panic
    /// included), the queue is closed and the requests still in it are dropped, so that
    /// their writers hear it (a dropped answer channel) rather than wait forever.
    pub(crate) fn closed_on_exit(&self) -> ClosedOnExit<'_, T> {
        ClosedOnExit { queue: self }
    }

    /// Times a writer has woken the serving thread so far.
    #[cfg(test)]
    pub(crate) fn wakes(&self) -> u64 {
        self.lock().wakes
    }

    /// For the serving thread: waits for the next batch and takes it. A batch is due when its
    /// earliest request is; it is then taken once no writer is announced, or `gather` after
    /// it became due, whichever comes first. `None` once the queue is closed and empty.
    pub(crate) fn next_batch(&self, gather: Duration) -> Option<Vec<T>> {
        let mut state = self.lock();
        let mut gather_until: Option<Instant> = None;
        loop {
            state.waiting = Waiting::No;
            let Some(due) = state.due else {
                if state.closed {
                    return None;
                }
                state.waiting = Waiting::Request;
                state = self.wait(state, None);
                continue;
            };
            let now = Instant::now();
            if state.closed {
                break;
            }
            if due > now {
                state.waiting = Waiting::Due(due);
                state = self.wait(state, Some(due - now));
                continue;
            }
            let until = *gather_until.get_or_insert(now + gather);
            if state.announced == 0 || now >= until {
                break;
            }
            state.waiting = Waiting::Writers;
            state = self.wait(state, Some(until - now));
        }
        state.waiting = Waiting::No;
        state.due = None;
        Some(std::mem::take(&mut state.requests))
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State<T>>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State<T>> {
        match timeout {
            None => self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
            Some(t) => {
                self.wake
                    .wait_timeout(state, t)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        }
    }
}

/// Closes its queue and drops what it holds when dropped (see
/// [`BatchQueue::closed_on_exit`]).
pub(crate) struct ClosedOnExit<'a, T> {
    queue: &'a BatchQueue<T>,
}

impl<T> Drop for ClosedOnExit<'_, T> {
    fn drop(&mut self) {
        let left = {
            let mut state = self.queue.lock();
            state.closed = true;
            state.due = None;
            std::mem::take(&mut state.requests)
        };
        // Dropped outside the lock: dropping a request may wake its writer.
        drop(left);
        self.queue.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that a test relying on it passing would hang, not pass by chance.
    const FOREVER: Duration = Duration::from_secs(3600);

    /// Starts a serving thread; returns once it waits for a first request (at once if the
    /// queue is closed already).
    fn serve(
        queue: &Arc<BatchQueue<u32>>,
        gather: Duration,
    ) -> std::thread::JoinHandle<Vec<Vec<u32>>> {
        let server = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut batches = Vec::new();
                while let Some(batch) = queue.next_batch(gather) {
                    batches.push(batch);
                }
                batches
            })
        };
        if !queue.lock().closed {
            until_waiting(queue, |w| w == Waiting::Request);
        }
        server
    }

    /// The batches a serving thread took, once it has stopped (failing after a while if it
    /// never does).
    fn batches_of(server: std::thread::JoinHandle<Vec<Vec<u32>>>) -> Vec<Vec<u32>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the serving thread never stopped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        server.join().expect("server")
    }

    /// Waits until the serving thread waits as `what` says (a test whose thread never
    /// does fails after a while rather than hanging).
    fn until_waiting(queue: &BatchQueue<u32>, what: impl Fn(Waiting) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !what(queue.lock().waiting) {
            assert!(
                Instant::now() < deadline,
                "the serving thread never got there"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_due_batch_waits_for_announced_writers_and_is_taken_when_the_last_asks() {
        let queue = BatchQueue::new();
        let first = queue.announce();
        let second = queue.announce();
        let server = serve(&queue, FOREVER);
        assert!(queue.push(1, Instant::now(), None).is_ok());
        until_waiting(&queue, |w| w == Waiting::Writers);
        assert!(queue.push(2, Instant::now(), Some(first)).is_ok());
        // One writer is still announced: the thread was not woken.
        assert_eq!(queue.wakes(), 1, "only the first request woke it");
        assert!(queue.push(3, Instant::now(), Some(second)).is_ok());
        until_waiting(&queue, |w| w == Waiting::Request);
        queue.close();
        let batches = batches_of(server);
        assert_eq!(batches, vec![vec![1, 2, 3]]);
        assert_eq!(queue.wakes(), 2);
    }

    #[test]
    fn a_writer_that_leaves_without_asking_releases_the_batch() {
        let queue = BatchQueue::new();
        let writer = queue.announce();
        let server = serve(&queue, FOREVER);
        assert!(queue.push(7, Instant::now(), None).is_ok());
        until_waiting(&queue, |w| w == Waiting::Writers);
        drop(writer);
        until_waiting(&queue, |w| w == Waiting::Request);
        queue.close();
        assert_eq!(batches_of(server), vec![vec![7]]);
    }

    #[test]
    fn requests_that_may_wait_do_not_wake_the_thread_until_one_may_not() {
        let queue = BatchQueue::new();
        let server = serve(&queue, Duration::ZERO);
        let later = Instant::now() + FOREVER;
        assert!(queue.push(1, later, None).is_ok());
        until_waiting(&queue, |w| matches!(w, Waiting::Due(_)));
        for n in 2..100 {
            assert!(queue.push(n, later + Duration::from_secs(1), None).is_ok());
        }
        assert_eq!(queue.wakes(), 1, "later requests must not wake it");
        assert!(queue.push(100, Instant::now(), None).is_ok());
        until_waiting(&queue, |w| w == Waiting::Request);
        queue.close();
        let batches = batches_of(server);
        assert_eq!(batches, vec![(1..=100).collect::<Vec<_>>()]);
        assert_eq!(queue.wakes(), 2);
    }

    #[test]
    fn a_due_batch_is_taken_after_its_gather_time_even_with_writers_announced() {
        let queue = BatchQueue::new();
        let _writer = queue.announce();
        let server = serve(&queue, Duration::from_millis(1));
        assert!(queue.push(1, Instant::now(), None).is_ok());
        until_waiting(&queue, |w| w == Waiting::Request);
        queue.close();
        assert_eq!(batches_of(server), vec![vec![1]]);
    }

    #[test]
    fn closing_serves_what_is_queued_and_refuses_the_rest() {
        let queue = BatchQueue::new();
        assert!(queue.push(1, Instant::now() + FOREVER, None).is_ok());
        queue.close();
        assert_eq!(queue.push(2, Instant::now(), None), Err(2));
        // Served at once, not when due; then the thread stops.
        assert_eq!(batches_of(serve(&queue, FOREVER)), vec![vec![1]]);
    }

    #[test]
    fn closing_takes_a_batch_still_waiting_for_writers_at_once() {
        let queue = BatchQueue::new();
        let writer = queue.announce();
        let server = serve(&queue, FOREVER);
        assert!(queue.push(1, Instant::now(), None).is_ok());
        until_waiting(&queue, |w| w == Waiting::Writers);
        queue.close();
        assert_eq!(batches_of(server), vec![vec![1]]);
        // The writer that was still on its way is refused, and leaves cleanly.
        assert_eq!(queue.push(2, Instant::now(), Some(writer)), Err(2));
        assert_eq!(queue.lock().announced, 0);
    }

    #[test]
    fn a_serving_thread_that_stops_closes_the_queue_and_drops_what_it_holds() {
        let queue = BatchQueue::<Arc<()>>::new();
        let queued = Arc::new(());
        assert!(queue
            .push(queued.clone(), Instant::now() + FOREVER, None)
            .is_ok());
        let server = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let _closing = queue.closed_on_exit();
                panic!("a serving thread fails");
            })
        };
        assert!(server.join().is_err());
        assert_eq!(
            Arc::strong_count(&queued),
            1,
            "the queued request was dropped"
        );
        assert!(queue.push(queued.clone(), Instant::now(), None).is_err());
        assert_eq!(queue.next_batch(FOREVER), None);
    }
}
