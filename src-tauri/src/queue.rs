//! The run queue and its triggers: why a run is wanted, whether it may start, and what
//! waits behind it. One run at a time; any number of manual requests during a run make
//! exactly one more run; a scheduled request during a run is covered by it; while paused
//! only the user's own requests run. It knows nothing of the engine, the tray or the page:
//! the scheduler hands it the run to make, the tray and the state only call it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

/// Why a run is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Shortly after start.
    Startup,
    /// The period elapsed.
    Interval,
    /// A synced file changed.
    FilesChanged,
    /// A configured drive was mounted.
    DriveMounted,
    /// The user asked.
    Manual,
}

impl Trigger {
    /// Whether the user asked: such runs happen while paused and queue behind a running one.
    pub fn is_manual(self) -> bool {
        self == Trigger::Manual
    }
}

/// What a request for a run was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Nothing runs: the caller runs now.
    Start,
    /// A run is in progress; one more will follow it.
    Queued,
    /// A run is in progress and this request is covered by it.
    Dropped,
    /// Scheduled runs are paused and this request is not the user's.
    Paused,
}

/// What became of a run request; `T` is what one run returns (the scheduler's is the
/// engine's report or its error).
#[derive(Debug, Clone)]
pub enum RunRequest<T> {
    /// This call made the run (perhaps more than once, for requests queued meanwhile);
    /// what the last one returned.
    Ran(T),
    /// A run is in progress; one more follows it.
    Queued,
    /// Not run: paused, or a run in progress covers it.
    Skipped(&'static str),
}

/// Whether a run is in progress and whether one more waits behind it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Slots {
    running: bool,
    pending: bool,
}

/// The app's one run queue: the run slots, the paused flag, and where triggers go.
#[derive(Debug, Default)]
pub struct RunQueue {
    slots: Mutex<Slots>,
    paused: AtomicBool,
    triggers: Mutex<Option<UnboundedSender<Trigger>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the queue down with it: the data is plain values.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RunQueue {
    /// A request; `queue_if_busy` for manual ones (a scheduled tick during a run is moot).
    /// Ignores the paused flag: see [`RunQueue::admit`].
    pub fn request(&self, queue_if_busy: bool) -> Admission {
        let mut slots = lock(&self.slots);
        if !slots.running {
            slots.running = true;
            Admission::Start
        } else if queue_if_busy {
            // Any number of clicks during one run make exactly one more run.
            slots.pending = true;
            Admission::Queued
        } else {
            Admission::Dropped
        }
    }

    /// A request for `trigger`: refused while paused unless the user asked, else
    /// [`RunQueue::request`], queueing behind a running run only if the user asked.
    pub fn admit(&self, trigger: Trigger) -> Admission {
        if !trigger.is_manual() && self.is_paused() {
            return Admission::Paused;
        }
        self.request(trigger.is_manual())
    }

    /// The running run ended: whether to run again (a request was queued meanwhile). When
    /// not, the queue is free.
    pub fn finish(&self) -> bool {
        let mut slots = lock(&self.slots);
        if slots.pending {
            slots.pending = false;
            true
        } else {
            slots.running = false;
            false
        }
    }

    /// Whether a run is in progress.
    pub fn is_running(&self) -> bool {
        lock(&self.slots).running
    }

    /// Whether scheduled runs are paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pauses or resumes scheduled runs (a run in progress goes on). The app sets it from its
    /// pause settings ([`crate::state::AppState::apply_pause`], at every poll of the
    /// scheduler): pause through those, not here.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Makes the runs for a request that was told [`Admission::Start`]: `run` once, then
    /// once more for each time a request was queued meanwhile; frees the queue at the end.
    /// Returns what the last run returned.
    pub async fn run_admitted<T, F, Fut>(&self, mut run: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            let last = run().await;
            if !self.finish() {
                return last;
            }
        }
    }

    /// Admits `trigger` and, if it may start, makes its runs ([`RunQueue::run_admitted`]);
    /// `started` is called once, after admission and before the first run.
    pub async fn run<T, F, Fut>(
        &self,
        trigger: Trigger,
        started: impl FnOnce(),
        run: F,
    ) -> RunRequest<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        match self.admit(trigger) {
            Admission::Start => {}
            Admission::Queued => return RunRequest::Queued,
            Admission::Dropped => return RunRequest::Skipped("a run is in progress"),
            Admission::Paused => return RunRequest::Skipped("paused"),
        }
        started();
        RunRequest::Ran(self.run_admitted(run).await)
    }

    /// Where triggers will be delivered from now on (the scheduler's loop listens here);
    /// a previous listener hears no more.
    pub fn listen(&self) -> UnboundedReceiver<Trigger> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.triggers) = Some(tx);
        rx
    }

    /// Asks for a run for `trigger` through the listener (no-op before anyone listens, or
    /// once the listener is gone).
    pub fn trigger(&self, trigger: Trigger) {
        if let Some(tx) = lock(&self.triggers).as_ref() {
            let _ = tx.send(trigger);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn one_run_at_a_time_and_one_more_for_any_clicks_during_it() {
        let q = RunQueue::default();
        assert_eq!(q.request(true), Admission::Start);
        assert!(q.is_running());
        assert_eq!(q.request(true), Admission::Queued);
        assert_eq!(q.request(true), Admission::Queued);
        assert_eq!(q.request(false), Admission::Dropped);
        assert!(q.finish(), "the queued run follows");
        assert!(q.is_running());
        assert!(!q.finish(), "only one more");
        assert!(!q.is_running());
        assert_eq!(q.request(false), Admission::Start);
    }

    #[test]
    fn a_scheduled_tick_during_a_run_is_dropped() {
        let q = RunQueue::default();
        assert_eq!(q.request(false), Admission::Start);
        assert_eq!(q.request(false), Admission::Dropped);
        assert!(!q.finish());
        assert!(!q.is_running());
    }

    const SCHEDULED: [Trigger; 4] = [
        Trigger::Startup,
        Trigger::Interval,
        Trigger::FilesChanged,
        Trigger::DriveMounted,
    ];

    /// Runs `q.run(first)` where each run asks `during(run number)` for more requests and
    /// returns its number; gives what `run` returned and how many runs were made.
    fn drive(
        q: &RunQueue,
        first: Trigger,
        during: impl Fn(usize) -> Vec<Trigger>,
    ) -> (RunRequest<usize>, usize, Vec<Vec<Admission>>) {
        let runs = Cell::new(0);
        let told = std::cell::RefCell::new(Vec::new());
        let started = Cell::new(false);
        let result = tauri::async_runtime::block_on(q.run(
            first,
            || started.set(true),
            || {
                runs.set(runs.get() + 1);
                let n = runs.get();
                assert!(n <= 10, "runs without end");
                assert!(q.is_running(), "run {n} holds the queue");
                let admissions = during(n).into_iter().map(|t| q.admit(t)).collect();
                told.borrow_mut().push(admissions);
                async move { n }
            },
        ));
        assert_eq!(
            started.get(),
            runs.get() > 0,
            "started once, before running"
        );
        (result, runs.get(), told.into_inner())
    }

    #[test]
    fn clicks_during_a_run_coalesce_into_one_more_run_and_ticks_into_none() {
        let q = RunQueue::default();
        let (result, runs, told) = drive(&q, Trigger::Interval, |n| match n {
            1 => vec![
                Trigger::Manual,
                Trigger::Interval,
                Trigger::Manual,
                Trigger::FilesChanged,
                Trigger::Manual,
            ],
            _ => vec![],
        });
        assert!(matches!(result, RunRequest::Ran(2)), "{result:?}");
        assert_eq!(
            runs, 2,
            "three clicks during the first run: exactly one more run"
        );
        use Admission::*;
        assert_eq!(told[0], vec![Queued, Dropped, Queued, Dropped, Queued]);
        assert!(!q.is_running(), "the queue is free after the last run");
        assert_eq!(
            q.admit(Trigger::Interval),
            Start,
            "and the next tick starts"
        );
    }

    #[test]
    fn a_click_during_the_queued_run_makes_one_more_again() {
        let q = RunQueue::default();
        let (result, runs, _) = drive(&q, Trigger::Manual, |n| match n {
            1 | 2 => vec![Trigger::Manual],
            _ => vec![Trigger::Interval],
        });
        assert!(matches!(result, RunRequest::Ran(3)), "{result:?}");
        assert_eq!(runs, 3);
        assert!(!q.is_running());
    }

    #[test]
    fn no_request_starts_a_second_run_while_one_runs() {
        let q = RunQueue::default();
        assert_eq!(q.admit(Trigger::Startup), Admission::Start);
        for t in SCHEDULED {
            let (result, runs, _) = drive(&q, t, |_| vec![]);
            assert!(
                matches!(result, RunRequest::Skipped("a run is in progress")),
                "{t:?}: {result:?}"
            );
            assert_eq!(runs, 0, "{t:?}");
        }
        let (result, runs, _) = drive(&q, Trigger::Manual, |_| vec![]);
        assert!(matches!(result, RunRequest::Queued), "{result:?}");
        assert_eq!(runs, 0, "queued, not run beside the running one");
        assert!(q.finish(), "the queued run follows the running one");
        assert!(!q.finish());
    }

    #[test]
    fn paused_only_the_users_requests_run() {
        let q = RunQueue::default();
        q.set_paused(true);
        for t in SCHEDULED {
            assert_eq!(q.admit(t), Admission::Paused, "{t:?}");
            let (result, runs, _) = drive(&q, t, |_| vec![]);
            assert!(
                matches!(result, RunRequest::Skipped("paused")),
                "{result:?}"
            );
            assert_eq!(runs, 0, "{t:?} while paused");
        }
        assert!(!q.is_running(), "a refused request holds nothing");
        // Ticks during a manual run while paused are refused, not dropped as covered.
        let (result, runs, told) = drive(&q, Trigger::Manual, |_| vec![Trigger::Interval]);
        assert!(matches!(result, RunRequest::Ran(1)), "{result:?}");
        assert_eq!((runs, told), (1, vec![vec![Admission::Paused]]));
        q.set_paused(false);
        let (result, runs, _) = drive(&q, Trigger::Interval, |_| vec![]);
        assert!(matches!(result, RunRequest::Ran(1)), "{result:?}");
        assert_eq!(runs, 1, "resumed: a tick runs again");
    }

    #[test]
    fn triggers_reach_the_listener_in_order_and_none_before_it_listens() {
        let q = RunQueue::default();
        q.trigger(Trigger::Manual);
        let mut rx = q.listen();
        q.trigger(Trigger::FilesChanged);
        q.trigger(Trigger::Manual);
        assert_eq!(rx.try_recv().ok(), Some(Trigger::FilesChanged));
        assert_eq!(rx.try_recv().ok(), Some(Trigger::Manual));
        assert!(
            rx.try_recv().is_err(),
            "the one sent before listening is gone"
        );
        let mut rx2 = q.listen();
        q.trigger(Trigger::DriveMounted);
        assert_eq!(rx2.try_recv().ok(), Some(Trigger::DriveMounted));
        assert!(
            rx.try_recv().is_err(),
            "the previous listener hears no more"
        );
        drop(rx2);
        q.trigger(Trigger::Manual);
    }
}
