//! Waiting on a connection and, beside it, on the few things that can end it early (a retirement
//! request, shutdown, the idle timer) — without polling those on every wake of the connection.
//!
//! A `tokio::select!` over all four polls every branch whenever the task wakes, and a
//! connection's task wakes for every request: in a callgrind profile of `/validate` at a steady
//! rate that was about 1.2k instructions a request (a clock read and a timer re-registration for
//! the sleep, a waker registration for each of the notify and the watch). Here the side future
//! is polled with a waker of its own, and only after that waker fired.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::future::Either;
use futures_util::task::AtomicWaker;

/// The side future's waker: remembers that it fired, then wakes the task.
struct SideWaker {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Whichever finishes first: `main`, polled on every wake, or `side`, polled on the first poll
/// and then only when something it waits on woke the task. `main` wins a tie.
pub async fn first_of<M, S>(
    mut main: Pin<&mut M>,
    mut side: Pin<&mut S>,
) -> Either<M::Output, S::Output>
where
    M: Future + ?Sized,
    S: Future + ?Sized,
{
    let side_waker = Arc::new(SideWaker {
        fired: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let waker = Waker::from(Arc::clone(&side_waker));
    poll_fn(|cx| {
        if let Poll::Ready(out) = main.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(out));
        }
        // Registered before the flag is read: a wake-up after the read then wakes this task.
        side_waker.task.register(cx.waker());
        if side_waker.fired.swap(false, Ordering::AcqRel)
            && let Poll::Ready(out) = side.as_mut().poll(&mut Context::from_waker(&waker))
        {
            return Poll::Ready(Either::Right(out));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::{Notify, mpsc};

    /// Pending until `notify` fires; counts its polls.
    async fn counted(polls: &AtomicUsize, notify: &Notify) -> &'static str {
        let mut notified = pin!(notify.notified());
        poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx)
        })
        .await;
        "side"
    }

    #[tokio::test]
    async fn the_side_is_polled_only_when_it_woke() {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let polls = AtomicUsize::new(0);
        let notify = Notify::new();
        // The main future wakes the task ten times (one message each) before it finishes.
        let main = pin!(async {
            let mut sum = 0;
            while let Some(n) = rx.recv().await {
                sum += n;
            }
            sum
        });
        let side = pin!(counted(&polls, &notify));
        let sender = tokio::spawn(async move {
            for n in 1..=10 {
                tokio::task::yield_now().await;
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        let out = first_of(main, side).await;
        assert!(matches!(out, Either::Left(55)), "{out:?}");
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled once, to register");
        sender.await.ok();
    }

    #[tokio::test]
    async fn the_side_wins_once_it_is_ready() {
        let polls = AtomicUsize::new(0);
        let notify = Notify::new();
        let main = pin!(std::future::pending::<()>());
        let side = pin!(counted(&polls, &notify));
        let waiting = first_of(main, side);
        let waking = async {
            tokio::task::yield_now().await;
            notify.notify_one();
        };
        let (out, ()) = tokio::join!(waiting, waking);
        assert!(matches!(out, Either::Right("side")), "{out:?}");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn the_main_future_wins_a_tie() {
        let polls = AtomicUsize::new(0);
        let notify = Notify::new();
        notify.notify_one();
        let out = first_of(pin!(async { "main" }), pin!(counted(&polls, &notify))).await;
        assert!(matches!(out, Either::Left("main")), "{out:?}");
        assert_eq!(polls.load(Ordering::Relaxed), 0);
    }
}
