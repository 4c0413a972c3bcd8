//! The reconciler's decision, pure: (object facts, revisions, health, clock) -> actions and the
//! status to write. Everything with I/O lives in `controller`; this is where the rules are.
//!
//! Rules, in the order they apply:
//! 1. The object's spec is recorded as a revision: a new spec gets the next number; a spec equal
//!    to an older revision reuses it, renumbered to the latest (as Deployments do), with a fresh
//!    start time. A spec put back by a rollback carries the `Restore` that did it.
//! 2. A `tollgate.dev/rollback-to` request restores that revision's spec.
//! 3. The current attempt is judged: healthy (held for the settle time) -> Ready; health says
//!    failed, or the progress deadline (from the attempt's recorded start) passed -> Failed.
//! 4. A failed attempt rolls back to the newest other revision that was healthy, unless it was
//!    itself a restore (never loop), automatic rollback is off, a restore was already refused,
//!    or there is nothing healthy to go back to; then the phase is Failed.
//! 5. History is pruned to `revisionHistoryLimit`, never dropping the current or last healthy.

use std::time::Duration;

use jiff::Timestamp;
use tollgate_engine::rollout::Rollout;

use crate::health::Health;
use crate::revisions::{Outcome, Restore, RevisionRecord};
use crate::status::{DesiredCondition, DesiredStatus, PROGRESSING, Phase, READY, ROLLED_BACK};

/// What the decision needs to know about the object and the world.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub generation: i64,
    /// The object's spec and its hash.
    pub spec: &'a serde_json::Value,
    pub spec_hash: &'a str,
    /// Name the revision of a spec never seen before gets.
    pub new_revision_name: &'a str,
    /// The `Restore` marker the last rollback left on the object, if it is still there.
    pub restore_marker: Option<Restore>,
    /// The `tollgate.dev/rollback-to` annotation, verbatim.
    pub rollback_to: Option<&'a str>,
    /// `tollgate.dev/auto-rollback: "false"` on the object.
    pub auto_rollback_disabled: bool,
    pub revisions: &'a [RevisionRecord],
    pub health: &'a Health,
    pub rollout: &'a Rollout,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a revision for the object's current spec.
    CreateRevision(RevisionRecord),
    /// Rewrite an existing revision's number and bookkeeping.
    UpdateRevision(RevisionRecord),
    /// Put `spec` of revision `to` back on the object (resourceVersion precondition), leaving
    /// `restore` as the marker for the next round.
    RestoreSpec {
        to: RevisionRecord,
        restore: Restore,
    },
    /// Remove the `tollgate.dev/rollback-to` annotation.
    ClearRollbackRequest,
    /// Remove the restore marker the last rollback left on the object.
    ClearRestoreMarker,
    DeleteRevisions(Vec<String>),
    /// A Warning Event on the object.
    Warn {
        reason: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: DesiredStatus,
    /// When to look again even if nothing changes (the deadline, the end of the settle time).
    pub requeue_after: Option<Duration>,
    /// One word for logs and metrics.
    pub summary: &'static str,
}

/// How long health must hold after an attempt starts before it counts: the resource's operator
/// needs a moment to act on a new spec, and a workload that was healthy a moment before the
/// change must not make the change look healthy.
pub fn settle_seconds(rollout: &Rollout) -> u64 {
    (rollout.progress_deadline_seconds / 10).clamp(1, 10)
}

pub fn decide(input: &Input<'_>) -> Decision {
    let mut actions = Vec::new();
    let mut revisions = input.revisions.to_vec();
    let current_idx = record_current(input, &mut revisions, &mut actions);
    if input.restore_marker.is_some() {
        actions.push(Action::ClearRestoreMarker);
    }
    if let Some(text) = input.rollback_to
        && let Some(decision) = manual_rollback(input, text, &revisions, current_idx, &mut actions)
    {
        return decision;
    }

    let judged = judge(input, &mut revisions[current_idx]);
    if let Some(update) = judged.update {
        push_update(&mut actions, update);
    }
    let current = revisions[current_idx].clone();
    let (phase, ready, summary, requeue_after) = match judged.verdict {
        Verdict::Ready(message) => (Phase::Ready, Ready::yes("Healthy", message), "ready", None),
        Verdict::Waiting {
            phase,
            reason,
            message,
            recheck,
        } => (
            phase,
            Ready::no(reason, message),
            "progressing",
            Some(recheck),
        ),
        Verdict::Degraded {
            phase,
            reason,
            message,
        } => (phase, Ready::no(reason, message), "degraded", None),
        Verdict::Failed { reason, message } => match rollback_target(input, &current, &revisions) {
            Ok(to) => {
                let restore = Restore {
                    from: current.number,
                    to: to.number,
                    manual: false,
                };
                actions.push(Action::RestoreSpec {
                    to: to.clone(),
                    restore,
                });
                let message = format!("{message}; rolling back to revision {}", to.number);
                let status = status(
                    input,
                    &revisions,
                    &current,
                    Phase::Progressing,
                    Ready::no(reason, message),
                );
                return Decision {
                    actions,
                    status,
                    requeue_after: None,
                    summary: "rollback",
                };
            }
            Err(why) => (
                Phase::Failed,
                Ready::no(reason, format!("{message}; {why}")),
                "failed",
                None,
            ),
        },
    };
    prune(input, &revisions, &current, &mut actions);
    Decision {
        status: status(input, &revisions, &current, phase, ready),
        actions,
        requeue_after,
        summary,
    }
}

/// The Ready condition as decided.
struct Ready {
    status: bool,
    reason: &'static str,
    message: String,
}

impl Ready {
    fn yes(reason: &'static str, message: String) -> Self {
        Self {
            status: true,
            reason,
            message,
        }
    }

    fn no(reason: &'static str, message: String) -> Self {
        Self {
            status: false,
            reason,
            message,
        }
    }
}

/// Finds or records the revision of the object's spec (rule 1); returns its index.
fn record_current(
    input: &Input<'_>,
    revisions: &mut Vec<RevisionRecord>,
    actions: &mut Vec<Action>,
) -> usize {
    let newest = revisions.iter().map(|r| r.number).max().unwrap_or(0);
    let fresh_attempt = |record: &mut RevisionRecord| {
        record.number = newest + 1;
        record.started_at = input.now;
        record.outcome = Outcome::Pending;
        record.failure = None;
        record.failure_reason = None;
        record.rollback_denied = None;
        record.restore = input.restore_marker;
    };
    match revisions.iter().position(|r| r.hash == input.spec_hash) {
        Some(idx) if revisions[idx].number == newest => {
            // Already the latest; a restore marker left by a crash before it was cleared still
            // belongs to this attempt.
            if let Some(marker) = input.restore_marker
                && revisions[idx].restore != Some(marker)
                && revisions[idx].outcome == Outcome::Pending
            {
                revisions[idx].restore = Some(marker);
                actions.push(Action::UpdateRevision(revisions[idx].clone()));
            }
            idx
        }
        Some(idx) => {
            fresh_attempt(&mut revisions[idx]);
            actions.push(Action::UpdateRevision(revisions[idx].clone()));
            idx
        }
        None => {
            let mut record = RevisionRecord {
                name: input.new_revision_name.to_string(),
                number: 0,
                hash: input.spec_hash.to_string(),
                spec: input.spec.clone(),
                started_at: input.now,
                outcome: Outcome::Pending,
                failure: None,
                failure_reason: None,
                restore: None,
                rollback_denied: None,
            };
            fresh_attempt(&mut record);
            actions.push(Action::CreateRevision(record.clone()));
            revisions.push(record);
            revisions.len() - 1
        }
    }
}

/// Rule 2. Returns a decision when a restore was started; otherwise the request is answered
/// (cleared, with a Warning when it cannot be honoured) and the normal flow continues.
fn manual_rollback(
    input: &Input<'_>,
    text: &str,
    revisions: &[RevisionRecord],
    current_idx: usize,
    actions: &mut Vec<Action>,
) -> Option<Decision> {
    actions.push(Action::ClearRollbackRequest);
    let current = &revisions[current_idx];
    let target = text
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| revisions.iter().find(|r| r.number == n));
    let Some(to) = target else {
        let known: Vec<String> = revisions.iter().map(|r| r.number.to_string()).collect();
        actions.push(Action::Warn {
            reason: "RollbackFailed",
            message: format!(
                "tollgate.dev/rollback-to {text:?} names no revision (known: {})",
                known.join(", ")
            ),
        });
        return None;
    };
    if to.number == current.number {
        return None;
    }
    let restore = Restore {
        from: current.number,
        to: to.number,
        manual: true,
    };
    actions.push(Action::RestoreSpec {
        to: to.clone(),
        restore,
    });
    let message = format!(
        "manual rollback from revision {} to revision {} requested",
        current.number, to.number
    );
    Some(Decision {
        status: status(
            input,
            revisions,
            current,
            Phase::Progressing,
            Ready::no("RollingBack", message),
        ),
        actions: std::mem::take(actions),
        requeue_after: None,
        summary: "manual-rollback",
    })
}

#[derive(Debug)]
enum Verdict {
    Ready(String),
    Waiting {
        phase: Phase,
        reason: &'static str,
        message: String,
        recheck: Duration,
    },
    /// This attempt failed (rule 3); rule 4 decides what follows.
    Failed {
        reason: &'static str,
        message: String,
    },
    /// A revision that was healthy lost its health: reported, never rolled back.
    Degraded {
        phase: Phase,
        reason: &'static str,
        message: String,
    },
}

struct Judged {
    verdict: Verdict,
    update: Option<RevisionRecord>,
}

/// Rule 3 for the current attempt; marks the revision when its outcome becomes known.
fn judge(input: &Input<'_>, current: &mut RevisionRecord) -> Judged {
    // Milliseconds: whole seconds would let a change that started at x.99 s "settle" 10 ms later.
    let elapsed = elapsed_millis(input.now, current.started_at);
    let settle = settle_seconds(input.rollout) * 1000;
    let deadline_seconds = input.rollout.progress_deadline_seconds;
    let deadline = deadline_seconds * 1000;
    let mark = |current: &mut RevisionRecord, outcome, failure: Option<(&str, String)>| {
        let (reason, failure) =
            failure.map_or((None, None), |(r, f)| (Some(r.to_string()), Some(f)));
        let changed = current.outcome != outcome || current.failure != failure;
        current.outcome = outcome;
        current.failure = failure;
        current.failure_reason = reason;
        changed.then(|| current.clone())
    };
    match (input.health, current.outcome) {
        (Health::Healthy(message), _)
            if current.outcome == Outcome::Healthy || elapsed >= settle =>
        {
            Judged {
                update: mark(current, Outcome::Healthy, None),
                verdict: Verdict::Ready(message.clone()),
            }
        }
        (health, Outcome::Healthy) => Judged {
            verdict: Verdict::Degraded {
                phase: if matches!(health, Health::Failed { .. }) {
                    Phase::Failed
                } else {
                    Phase::Progressing
                },
                reason: "Unhealthy",
                message: format!(
                    "revision {} was healthy but is not now: {}",
                    current.number,
                    health.message()
                ),
            },
            update: None,
        },
        (_, Outcome::Failed) => Judged {
            verdict: Verdict::Failed {
                reason: match current.failure_reason.as_deref() {
                    Some("ProgressDeadlineExceeded") => "ProgressDeadlineExceeded",
                    Some("HealthCheckFailed") => "HealthCheckFailed",
                    _ => "RevisionFailed",
                },
                message: current
                    .failure
                    .clone()
                    .unwrap_or_else(|| format!("revision {} failed", current.number)),
            },
            update: None,
        },
        (Health::Failed { message, since }, _) if reported_during(*since, current) => {
            let failure = format!(
                "revision {} failed its health check: {message}",
                current.number
            );
            Judged {
                update: mark(
                    current,
                    Outcome::Failed,
                    Some(("HealthCheckFailed", failure.clone())),
                ),
                verdict: Verdict::Failed {
                    reason: "HealthCheckFailed",
                    message: failure,
                },
            }
        }
        (health, _) if elapsed >= deadline => {
            let failure = format!(
                "revision {} did not become healthy within {deadline_seconds}s: {}",
                current.number,
                health.message()
            );
            Judged {
                update: mark(
                    current,
                    Outcome::Failed,
                    Some(("ProgressDeadlineExceeded", failure.clone())),
                ),
                verdict: Verdict::Failed {
                    reason: "ProgressDeadlineExceeded",
                    message: failure,
                },
            }
        }
        (health, _) => {
            let until_settled = settle.saturating_sub(elapsed);
            let recheck = if matches!(health, Health::Healthy(_)) {
                until_settled
            } else {
                deadline - elapsed
            };
            let (phase, reason) = match health {
                Health::Missing(_) => (Phase::Pending, "Pending"),
                _ => (Phase::Progressing, "Progressing"),
            };
            let message = match health {
                Health::Failed { message, .. } => format!(
                    "waiting for revision {} to be taken up; the health source still reports \
                     an earlier attempt: {message}",
                    current.number
                ),
                other => other.message().to_string(),
            };
            Judged {
                verdict: Verdict::Waiting {
                    phase,
                    reason,
                    message,
                    recheck: Duration::from_millis(recheck.max(1)),
                },
                update: None,
            }
        }
    }
}

/// Whether a failure reported at `since` concerns the attempt `current`. Sources stamp whole
/// seconds with the apiserver's clock, so only a later second than the attempt's start counts:
/// a Deployment cannot exceed its progress deadline in the second its change began, while a
/// restore routinely starts in the second the failure it answers was reported. (A source clock
/// behind the reconciler's only delays a failure to the policy's own deadline.)
fn reported_during(since: Option<Timestamp>, current: &RevisionRecord) -> bool {
    since.is_none_or(|t| t.as_second() > current.started_at.as_second())
}

fn elapsed_millis(now: Timestamp, since: Timestamp) -> u64 {
    u64::try_from(now.as_millisecond() - since.as_millisecond()).unwrap_or(0)
}

/// Rule 4: the revision to go back to, or why there is none.
fn rollback_target<'r>(
    input: &Input<'_>,
    current: &RevisionRecord,
    revisions: &'r [RevisionRecord],
) -> Result<&'r RevisionRecord, String> {
    if let Some(denied) = &current.rollback_denied {
        return Err(format!("the rollback was refused: {denied}"));
    }
    if let Some(restore) = current.restore {
        return Err(format!(
            "it was itself restored by a rollback from revision {}, so tollgate does not roll back again",
            restore.from
        ));
    }
    if !input.rollout.auto_rollback {
        return Err("automatic rollback is disabled by the policy".into());
    }
    if input.auto_rollback_disabled {
        return Err(
            "automatic rollback is disabled by the annotation tollgate.dev/auto-rollback".into(),
        );
    }
    revisions
        .iter()
        .filter(|r| r.number != current.number && r.outcome == Outcome::Healthy)
        .max_by_key(|r| r.number)
        .ok_or_else(|| "there is no healthy revision to roll back to".to_string())
}

/// Rule 5.
fn prune(
    input: &Input<'_>,
    revisions: &[RevisionRecord],
    current: &RevisionRecord,
    actions: &mut Vec<Action>,
) {
    let last_healthy = last_healthy(revisions);
    let is_protected =
        |r: &RevisionRecord| r.number == current.number || Some(r.number) == last_healthy;
    let protected = revisions.iter().filter(|r| is_protected(r)).count();
    let mut others: Vec<&RevisionRecord> = revisions.iter().filter(|r| !is_protected(r)).collect();
    others.sort_by_key(|r| std::cmp::Reverse(r.number));
    let slots = (input.rollout.revision_history_limit as usize).saturating_sub(protected);
    let doomed: Vec<String> = others.iter().skip(slots).map(|r| r.name.clone()).collect();
    if !doomed.is_empty() {
        actions.push(Action::DeleteRevisions(doomed));
    }
}

fn last_healthy(revisions: &[RevisionRecord]) -> Option<i64> {
    revisions
        .iter()
        .filter(|r| r.outcome == Outcome::Healthy)
        .map(|r| r.number)
        .max()
}

fn push_update(actions: &mut Vec<Action>, record: RevisionRecord) {
    for action in actions.iter_mut() {
        match action {
            Action::CreateRevision(r) | Action::UpdateRevision(r) if r.name == record.name => {
                *r = record;
                return;
            }
            _ => {}
        }
    }
    actions.push(Action::UpdateRevision(record));
}

fn status(
    input: &Input<'_>,
    revisions: &[RevisionRecord],
    current: &RevisionRecord,
    phase: Phase,
    ready: Ready,
) -> DesiredStatus {
    let progressing = match phase {
        Phase::Progressing | Phase::Pending => DesiredCondition {
            type_: PROGRESSING,
            status: true,
            reason: if ready.message.contains("rolling back") || ready.reason == "RollingBack" {
                "RollingBack"
            } else {
                "NewRevision"
            },
            message: format!("revision {} is rolling out", current.number),
        },
        Phase::Ready => DesiredCondition {
            type_: PROGRESSING,
            status: false,
            reason: "Complete",
            message: format!("revision {} is healthy", current.number),
        },
        Phase::Failed => DesiredCondition {
            type_: PROGRESSING,
            status: false,
            reason: "Failed",
            message: format!("revision {} failed", current.number),
        },
    };
    let rolled_back = match current.restore {
        Some(r) => DesiredCondition {
            type_: ROLLED_BACK,
            status: true,
            reason: if r.manual {
                "ManualRollback"
            } else {
                "RolledBack"
            },
            message: format!(
                "rolled back from revision {} to revision {} (now revision {})",
                r.from, r.to, current.number
            ),
        },
        None => DesiredCondition {
            type_: ROLLED_BACK,
            status: false,
            reason: "NoRollback",
            message: String::new(),
        },
    };
    DesiredStatus {
        observed_generation: input.generation,
        phase,
        current_revision: Some(current.number),
        last_healthy_revision: last_healthy(revisions),
        conditions: vec![
            DesiredCondition {
                type_: READY,
                status: ready.status,
                reason: ready.reason,
                message: ready.message,
            },
            progressing,
            rolled_back,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tollgate_engine::FieldPath;
    use tollgate_engine::rollout::{HealthRule, WorkloadKind};

    const DEADLINE: u64 = 60;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn rollout() -> Rollout {
        Rollout {
            health: HealthRule::Workload {
                kind: WorkloadKind::Deployment,
                name_from: FieldPath::parse("metadata.name").unwrap_or_default(),
            },
            progress_deadline_seconds: DEADLINE,
            revision_history_limit: 10,
            auto_rollback: true,
        }
    }

    fn rev(number: i64, hash: &str, outcome: Outcome, started: i64) -> RevisionRecord {
        RevisionRecord {
            name: format!("gw-{hash}"),
            number,
            hash: hash.into(),
            spec: json!({"image": hash}),
            started_at: at(started),
            outcome,
            failure: None,
            failure_reason: None,
            restore: None,
            rollback_denied: None,
        }
    }

    fn healthy() -> Health {
        Health::Healthy("all replicas available".into())
    }

    fn progressing() -> Health {
        Health::Progressing("1 of 2 updated replicas available".into())
    }

    /// A world in which the object's spec hashes to `hash`, at time `now`.
    struct World {
        spec: Value,
        hash: String,
        name: String,
        revisions: Vec<RevisionRecord>,
        health: Health,
        rollout: Rollout,
        now: Timestamp,
        marker: Option<Restore>,
        rollback_to: Option<String>,
        auto_rollback_disabled: bool,
    }

    impl World {
        fn new(hash: &str, revisions: Vec<RevisionRecord>, health: Health, now: i64) -> Self {
            Self {
                spec: json!({"image": hash}),
                hash: hash.into(),
                name: format!("gw-{hash}"),
                revisions,
                health,
                rollout: rollout(),
                now: at(now),
                marker: None,
                rollback_to: None,
                auto_rollback_disabled: false,
            }
        }

        fn decide(&self) -> Decision {
            decide(&Input {
                generation: 7,
                spec: &self.spec,
                spec_hash: &self.hash,
                new_revision_name: &self.name,
                restore_marker: self.marker,
                rollback_to: self.rollback_to.as_deref(),
                auto_rollback_disabled: self.auto_rollback_disabled,
                revisions: &self.revisions,
                health: &self.health,
                rollout: &self.rollout,
                now: self.now,
            })
        }
    }

    fn condition<'d>(decision: &'d Decision, type_: &str) -> &'d DesiredCondition {
        decision
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", decision.status))
    }

    /// Failed, nothing restored, and the Ready message says why.
    fn assert_failed_without_rollback(decision: &Decision, why: &str) {
        assert!(restores(decision).is_empty(), "{:?}", decision.actions);
        assert_eq!(decision.status.phase, Phase::Failed);
        let message = &condition(decision, READY).message;
        assert!(message.contains(why), "{message}");
    }

    fn restores(decision: &Decision) -> Vec<(i64, Restore)> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::RestoreSpec { to, restore } => Some((to.number, *restore)),
                _ => None,
            })
            .collect()
    }

    fn written(decision: &Decision) -> Vec<RevisionRecord> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateRevision(r) | Action::UpdateRevision(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_object_gets_its_first_revision_and_waits_for_health() {
        let d = World::new(
            "a",
            vec![],
            Health::Missing("Deployment gw not found".into()),
            0,
        )
        .decide();
        let created = written(&d);
        assert_eq!(created.len(), 1);
        assert_eq!((created[0].number, created[0].started_at), (1, at(0)));
        assert_eq!(created[0].spec, json!({"image": "a"}));
        assert!(matches!(d.actions[0], Action::CreateRevision(_)));
        assert_eq!(d.status.phase, Phase::Pending);
        assert_eq!(d.status.current_revision, Some(1));
        assert_eq!(d.status.observed_generation, 7);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(DEADLINE)));
        assert!(!condition(&d, READY).status);
        assert!(condition(&d, PROGRESSING).status);
    }

    #[test]
    fn health_counts_only_after_the_settle_time() {
        let settle = settle_seconds(&rollout()) as i64;
        let early = World::new(
            "a",
            vec![rev(1, "a", Outcome::Pending, 0)],
            healthy(),
            settle - 1,
        )
        .decide();
        assert_eq!(early.status.phase, Phase::Progressing);
        assert_eq!(early.requeue_after, Some(Duration::from_secs(1)));
        assert!(written(&early).is_empty());

        let ready = World::new(
            "a",
            vec![rev(1, "a", Outcome::Pending, 0)],
            healthy(),
            settle,
        )
        .decide();
        assert_eq!(ready.status.phase, Phase::Ready);
        assert_eq!(ready.status.last_healthy_revision, Some(1));
        assert_eq!(written(&ready)[0].outcome, Outcome::Healthy);
        let r = condition(&ready, READY);
        assert!(r.status && r.reason == "Healthy");
        assert_eq!(condition(&ready, PROGRESSING).reason, "Complete");
        assert!(!condition(&ready, ROLLED_BACK).status);
    }

    #[test]
    fn settling_is_measured_below_the_second() {
        let start = Timestamp::from_millisecond(1_800_000_000_990).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut world = World::new("a", vec![], healthy(), 0);
        world.revisions = vec![RevisionRecord {
            started_at: start,
            ..rev(1, "a", Outcome::Pending, 0)
        }];
        world.now = Timestamp::from_millisecond(1_800_000_001_010).unwrap_or(Timestamp::UNIX_EPOCH);
        let d = world.decide();
        assert_eq!(
            d.status.phase,
            Phase::Progressing,
            "20 ms is not a settled second"
        );
        let settle_ms = settle_seconds(&rollout()) * 1000;
        assert_eq!(d.requeue_after, Some(Duration::from_millis(settle_ms - 20)));
    }

    #[test]
    fn a_new_spec_starts_a_new_revision_with_its_own_deadline() {
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Pending, 100),
        ];
        // The user edits again while revision 2 is still progressing.
        let d = World::new("c", revisions, progressing(), 150).decide();
        let created = written(&d);
        assert_eq!((created[0].number, created[0].started_at), (3, at(150)));
        assert_eq!(d.status.phase, Phase::Progressing);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(DEADLINE)));
        assert!(restores(&d).is_empty());
    }

    #[test]
    fn an_identical_spec_reuses_its_revision_renumbered_to_the_latest() {
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Healthy, 100),
        ];
        let d = World::new("a", revisions, progressing(), 200).decide();
        let updated = written(&d);
        assert!(matches!(d.actions[0], Action::UpdateRevision(_)));
        assert_eq!(
            (
                updated[0].name.as_str(),
                updated[0].number,
                updated[0].started_at,
                updated[0].outcome
            ),
            ("gw-a", 3, at(200), Outcome::Pending)
        );
        assert_eq!(d.status.current_revision, Some(3));
        assert_eq!(d.status.last_healthy_revision, Some(2));
    }

    #[test]
    fn the_deadline_counts_from_the_recorded_start_and_then_rolls_back() {
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Pending, 100),
        ];
        // A restarted reconciler sees the same recorded start: one second short is still waiting.
        let waiting = World::new(
            "b",
            revisions.clone(),
            progressing(),
            100 + DEADLINE as i64 - 1,
        )
        .decide();
        assert_eq!(waiting.status.phase, Phase::Progressing);
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(1)));
        assert!(restores(&waiting).is_empty());

        let d = World::new("b", revisions, progressing(), 100 + DEADLINE as i64).decide();
        let marked = written(&d);
        assert_eq!(marked[0].outcome, Outcome::Failed);
        assert!(
            marked[0]
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("did not become healthy within 60s"))
        );
        assert_eq!(
            restores(&d),
            [(
                1,
                Restore {
                    from: 2,
                    to: 1,
                    manual: false
                }
            )]
        );
        assert_eq!(d.summary, "rollback");
        assert_eq!(condition(&d, READY).reason, "ProgressDeadlineExceeded");
        assert_eq!(condition(&d, PROGRESSING).reason, "RollingBack");
        // Marking the failure comes before the restore, so a new leader never retries blindly.
        let mark = d
            .actions
            .iter()
            .position(|a| matches!(a, Action::UpdateRevision(_)));
        let restore = d
            .actions
            .iter()
            .position(|a| matches!(a, Action::RestoreSpec { .. }));
        assert!(mark < restore);
    }

    #[test]
    fn a_failed_health_check_rolls_back_before_the_deadline() {
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Pending, 100),
        ];
        let d = World::new(
            "b",
            revisions,
            Health::failed("Deployment gw exceeded its progress deadline".into()),
            105,
        )
        .decide();
        assert_eq!(condition(&d, READY).reason, "HealthCheckFailed");
        assert_eq!(
            restores(&d),
            [(
                1,
                Restore {
                    from: 2,
                    to: 1,
                    manual: false
                }
            )]
        );
    }

    #[test]
    fn a_failure_reported_before_the_attempt_began_is_waited_out() {
        let failed_at = |second: i64| Health::Failed {
            message: "Deployment gw exceeded its progress deadline".into(),
            since: Some(at(second)),
        };
        // Revision 3 restored revision 1's spec at 170.4: the Deployment still shows the failure
        // of revision 2 (reported at 170) until the operator rewrites it.
        let mut restored = rev(3, "a", Outcome::Pending, 170);
        restored.started_at = at(170)
            .checked_add(jiff::SignedDuration::from_millis(400))
            .unwrap_or(at(170));
        let revisions = vec![rev(2, "b", Outcome::Failed, 100), restored];
        let d = World::new("a", revisions.clone(), failed_at(170), 171).decide();
        assert_eq!(d.status.phase, Phase::Progressing);
        assert!(
            condition(&d, READY)
                .message
                .contains("still reports an earlier attempt"),
            "{:?}",
            condition(&d, READY)
        );
        assert!(written(&d).is_empty(), "nothing marked failed");
        // Reported in a later second than the attempt began: this attempt's own failure.
        let d = World::new("a", revisions, failed_at(175), 176).decide();
        assert_eq!(d.status.phase, Phase::Failed);
        assert_eq!(condition(&d, READY).reason, "HealthCheckFailed");
    }

    #[test]
    fn a_restored_spec_is_recorded_as_such_and_reported() {
        let mut failed = rev(2, "b", Outcome::Failed, 100);
        failed.failure = Some("revision 2 did not become healthy".into());
        failed.failure_reason = Some("ProgressDeadlineExceeded".into());
        let revisions = vec![rev(1, "a", Outcome::Healthy, 0), failed];
        let mut world = World::new("a", revisions, progressing(), 170);
        world.marker = Some(Restore {
            from: 2,
            to: 1,
            manual: false,
        });
        let d = world.decide();
        let updated = written(&d);
        assert_eq!(
            (updated[0].number, updated[0].restore, updated[0].outcome),
            (
                3,
                Some(Restore {
                    from: 2,
                    to: 1,
                    manual: false
                }),
                Outcome::Pending
            )
        );
        assert!(d.actions.contains(&Action::ClearRestoreMarker));
        let rolled = condition(&d, ROLLED_BACK);
        assert!(rolled.status);
        assert_eq!(rolled.reason, "RolledBack");
        assert_eq!(
            rolled.message,
            "rolled back from revision 2 to revision 1 (now revision 3)"
        );
        // The restored revision lost its healthy mark until it proves itself again.
        assert_eq!(d.status.last_healthy_revision, None);

        let mut healthy_again = World::new("a", vec![updated[0].clone()], healthy(), 200).decide();
        healthy_again
            .actions
            .retain(|a| matches!(a, Action::UpdateRevision(_)));
        assert_eq!(healthy_again.status.phase, Phase::Ready);
        assert!(condition(&healthy_again, ROLLED_BACK).status);
    }

    #[test]
    fn a_restored_spec_that_fails_again_is_failed_without_another_rollback() {
        let mut restored = rev(3, "a", Outcome::Pending, 200);
        restored.restore = Some(Restore {
            from: 2,
            to: 1,
            manual: false,
        });
        let revisions = vec![rev(2, "b", Outcome::Failed, 100), restored];
        let d = World::new("a", revisions, progressing(), 200 + DEADLINE as i64).decide();
        assert!(restores(&d).is_empty());
        assert_eq!(d.status.phase, Phase::Failed);
        let ready = condition(&d, READY);
        assert!(
            ready
                .message
                .contains("restored by a rollback from revision 2"),
            "{}",
            ready.message
        );
        assert_eq!(condition(&d, PROGRESSING).reason, "Failed");
    }

    #[test]
    fn never_rolls_back_to_a_revision_that_failed() {
        let revisions = vec![
            rev(1, "a", Outcome::Failed, 0),
            rev(2, "b", Outcome::Pending, 100),
        ];
        let d = World::new("b", revisions, Health::failed("x".into()), 110).decide();
        assert_failed_without_rollback(&d, "no healthy revision to roll back to");
    }

    #[test]
    fn automatic_rollback_can_be_disabled_by_annotation_or_policy() {
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Pending, 100),
        ];
        let mut by_annotation = World::new("b", revisions.clone(), Health::failed("x".into()), 110);
        by_annotation.auto_rollback_disabled = true;
        let d = by_annotation.decide();
        assert_failed_without_rollback(&d, "tollgate.dev/auto-rollback");

        let mut by_policy = World::new("b", revisions, Health::failed("x".into()), 110);
        by_policy.rollout.auto_rollback = false;
        let d = by_policy.decide();
        assert!(restores(&d).is_empty());
        assert!(
            condition(&d, READY)
                .message
                .contains("disabled by the policy")
        );
    }

    #[test]
    fn a_refused_restore_is_failed_and_not_retried() {
        let mut current = rev(2, "b", Outcome::Failed, 100);
        current.rollback_denied =
            Some("admission webhook denied the request: spec.provider is immutable".into());
        let revisions = vec![rev(1, "a", Outcome::Healthy, 0), current];
        let d = World::new("b", revisions, progressing(), 300).decide();
        assert_failed_without_rollback(&d, "spec.provider is immutable");
    }

    #[test]
    fn a_failure_already_recorded_is_rolled_back_by_whoever_leads_next() {
        // The previous leader marked revision 2 failed and died before restoring.
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Failed, 100),
        ];
        let d = World::new("b", revisions, progressing(), 161).decide();
        assert_eq!(
            restores(&d),
            [(
                1,
                Restore {
                    from: 2,
                    to: 1,
                    manual: false
                }
            )]
        );
        assert!(
            written(&d).is_empty(),
            "nothing to re-mark: {:?}",
            d.actions
        );
    }

    #[test]
    fn manual_rollback_by_annotation() {
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Healthy, 100),
        ];
        let mut world = World::new("b", revisions.clone(), healthy(), 200);
        world.rollback_to = Some("1".into());
        let d = world.decide();
        assert!(d.actions.contains(&Action::ClearRollbackRequest));
        assert_eq!(
            restores(&d),
            [(
                1,
                Restore {
                    from: 2,
                    to: 1,
                    manual: true
                }
            )]
        );
        assert_eq!(d.summary, "manual-rollback");

        let mut same = World::new("b", revisions.clone(), healthy(), 200);
        same.rollback_to = Some("2".into());
        let d = same.decide();
        assert!(d.actions.contains(&Action::ClearRollbackRequest));
        assert!(restores(&d).is_empty());
        assert_eq!(d.status.phase, Phase::Ready);

        let mut unknown = World::new("b", revisions, healthy(), 200);
        unknown.rollback_to = Some("9".into());
        let d = unknown.decide();
        assert!(restores(&d).is_empty());
        assert!(d.actions.iter().any(|a| matches!(a, Action::Warn { reason: "RollbackFailed", message } if message.contains("known: 1, 2"))));
    }

    #[test]
    fn a_healthy_revision_that_degrades_is_reported_not_rolled_back() {
        let revisions = vec![
            rev(1, "a", Outcome::Healthy, 0),
            rev(2, "b", Outcome::Healthy, 100),
        ];
        let d = World::new("b", revisions, Health::failed("pods crash".into()), 5000).decide();
        assert!(restores(&d).is_empty());
        assert_eq!(d.status.phase, Phase::Failed);
        assert_eq!(condition(&d, READY).reason, "Unhealthy");
    }

    #[test]
    fn history_is_pruned_but_never_the_current_or_last_healthy() {
        let mut revisions = vec![rev(1, "r1", Outcome::Healthy, 0)];
        for n in 2..=6 {
            revisions.push(rev(n, &format!("r{n}"), Outcome::Failed, n * 100));
        }
        revisions.push(rev(7, "r7", Outcome::Pending, 700));
        let mut world = World::new("r7", revisions, progressing(), 710);
        world.rollout.revision_history_limit = 3;
        let d = world.decide();
        let deleted: Vec<String> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteRevisions(names) => Some(names.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(deleted, ["gw-r5", "gw-r4", "gw-r3", "gw-r2"]);
    }
}
