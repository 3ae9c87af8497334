//! The coordinator's loop against a scheduler stand-in: retries, reattachment, the bound and
//! cancellation, without a cluster (the real one is exercised by `tests/slurm.rs`).

use std::path::Path;
use std::sync::Mutex;

use super::slurm::*;
use super::work::*;

/// A scheduler whose tasks run when the queue is read: one task per read, writing an empty
/// output, except that tasks listed in `fail_once` fail on their first run.
#[derive(Default)]
struct Fake {
    wd: Option<WorkDir>,
    digests: Vec<String>,
    queue: Mutex<Vec<Task>>,
    submitted: Mutex<Vec<Vec<usize>>>,
    fail_once: Mutex<Vec<usize>>,
    always_fail: Vec<usize>,
    cancelled: Mutex<bool>,
    never_run: bool,
    /// Queue reads that fail before the queue answers again.
    unanswered: Mutex<u32>,
}

impl Scheduler for Fake {
    fn submit(&self, _: &str, _: &Path, indices: &[usize]) -> Result<String, ClusterError> {
        let mut s = self.submitted.lock().unwrap();
        s.push(indices.to_vec());
        let job = format!("{}", 100 + s.len());
        self.queue
            .lock()
            .unwrap()
            .extend(indices.iter().map(|&index| Task {
                job: job.clone(),
                index,
                state: "PENDING".into(),
            }));
        Ok(job)
    }

    fn active(&self, _: &str) -> Result<Vec<Task>, ClusterError> {
        {
            let mut u = self.unanswered.lock().unwrap();
            if *u > 0 {
                *u -= 1;
                return Err(ClusterError::Scheduler {
                    command: "squeue".into(),
                    message: "Socket timed out on send/recv operation".into(),
                });
            }
        }
        let mut q = self.queue.lock().unwrap();
        if !self.never_run && !q.is_empty() {
            let t = q.remove(0);
            let mut f = self.fail_once.lock().unwrap();
            if let Some(p) = f.iter().position(|&i| i == t.index) {
                f.remove(p);
            } else if !self.always_fail.contains(&t.index) {
                let wd = self.wd.as_ref().unwrap();
                wd.put_output(&self.digests[t.index], &[]).unwrap();
            }
        }
        Ok(q.clone())
    }

    fn cancel(&self, _: &str) -> Result<(), ClusterError> {
        *self.cancelled.lock().unwrap() = true;
        self.queue.lock().unwrap().clear();
        Ok(())
    }

    fn ended(&self, job: &str, index: usize) -> Option<String> {
        Some(format!("FAILED {job}_{index} (exit code 0:9)"))
    }
}

fn setup(n: usize) -> (tempfile::TempDir, WorkDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let wd = WorkDir::open(dir.path()).unwrap();
    let digests = (0..n).map(|i| format!("{i:032x}")).collect();
    (dir, wd, digests)
}

fn config() -> SlurmConfig {
    SlurmConfig {
        poll_ms: 10,
        ..SlurmConfig::default()
    }
}

fn worker() -> WorkerCommand {
    WorkerCommand {
        program: "lim".into(),
        args: vec![],
    }
}

fn ledger(wd: &WorkDir, digests: &[String]) -> Vec<LedgerEntry> {
    read_ledger(
        &wd.root()
            .join("jobs")
            .join(format!("{}.ledger", batch_name(wd.root(), digests))),
    )
}

#[test]
fn every_shard_runs_once_and_outputs_come_back_in_order() {
    let (_d, wd, digests) = setup(5);
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        ..Fake::default()
    };
    let mut seen = Vec::new();
    let out = run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| None,
        &mut |p| {
            seen.push(p.done);
        },
    )
    .unwrap();
    let inputs: Vec<&str> = out.iter().map(|o| o.input.as_str()).collect();
    assert_eq!(
        inputs,
        digests.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(*fake.submitted.lock().unwrap(), vec![vec![0, 1, 2, 3, 4]]);
    assert_eq!(seen.last(), Some(&5));
    let script = std::fs::read_to_string(
        wd.root()
            .join("jobs")
            .join(format!("{}.sh", batch_name(wd.root(), &digests))),
    )
    .unwrap();
    assert!(script.contains("worker --work-dir") && script.contains("$SLURM_ARRAY_TASK_ID"));
}

#[test]
fn a_failed_shard_is_resubmitted_alone_with_its_reason_recorded() {
    let (_d, wd, digests) = setup(4);
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        fail_once: Mutex::new(vec![2]),
        ..Fake::default()
    };
    let out = run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(
        *fake.submitted.lock().unwrap(),
        vec![vec![0, 1, 2, 3], vec![2]]
    );
    let failed: Vec<_> = ledger(&wd, &digests)
        .into_iter()
        .filter_map(|e| match e {
            LedgerEntry::Failed { index, reason, .. } => Some((index, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 2);
    assert!(failed[0].1.contains("FAILED 101_2"), "{}", failed[0].1);
}

#[test]
fn a_shard_that_keeps_failing_stops_the_batch_at_the_bound() {
    let (_d, wd, digests) = setup(3);
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        always_fail: vec![1],
        ..Fake::default()
    };
    let e = run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| None,
        &mut |_| {},
    )
    .unwrap_err();
    match e {
        ClusterError::Failed {
            index, attempts, ..
        } => {
            assert_eq!(index, 1);
            assert_eq!(attempts, 3, "one run and max_retries = 2 resubmissions");
        }
        other => panic!("{other}"),
    }
    assert_eq!(fake.submitted.lock().unwrap().len(), 3);
}

#[test]
fn a_restarted_coordinator_attaches_to_queued_work_and_submits_nothing_twice() {
    let (_d, wd, digests) = setup(4);
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        ..Fake::default()
    };
    // A first coordinator submitted everything, one shard finished, then it was killed.
    let first = Fake {
        never_run: true,
        ..Fake::default()
    };
    let killed = run_batch(
        &wd,
        &digests,
        &first,
        &config(),
        &worker(),
        &{
            let calls = Mutex::new(0);
            move || {
                let mut c = calls.lock().unwrap();
                *c += 1;
                (*c > 2).then(|| "killed".to_string())
            }
        },
        &mut |_| {},
    );
    assert!(matches!(killed, Err(ClusterError::Stopped(_))));
    // What the killed coordinator left in the queue is still there for the second one.
    *fake.queue.lock().unwrap() = (0..4)
        .map(|index| Task {
            job: "101".into(),
            index,
            state: "RUNNING".into(),
        })
        .collect();
    wd.put_output(&digests[0], &[]).unwrap();
    let out = run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.len(), 4);
    assert!(
        fake.submitted.lock().unwrap().is_empty(),
        "nothing resubmitted"
    );
}

#[test]
fn stopping_cancels_the_batch_and_leaves_nothing_queued() {
    let (_d, wd, digests) = setup(3);
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        never_run: true,
        ..Fake::default()
    };
    let polls = Mutex::new(0);
    let e = run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| {
            let mut p = polls.lock().unwrap();
            *p += 1;
            (*p > 3).then(|| "the deadline passed".to_string())
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("the deadline passed"), "{e}");
    assert!(*fake.cancelled.lock().unwrap());
    assert!(fake.queue.lock().unwrap().is_empty());
}

#[test]
fn array_specs_are_compact() {
    assert_eq!(array_spec(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    assert_eq!(array_spec(&[3]), "3");
}

#[test]
fn a_scheduler_that_stops_answering_for_a_while_does_not_fail_the_batch() {
    let (_d, wd, digests) = setup(2);
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        unanswered: Mutex::new(QUEUE_TRIES - 1),
        ..Fake::default()
    };
    let out = run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    // One read too many, and the batch fails with the scheduler's own words.
    let (_d, wd, digests) = setup(2);
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        unanswered: Mutex::new(QUEUE_TRIES),
        ..Fake::default()
    };
    let e = run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Socket timed out"), "{e}");
}

#[test]
fn a_work_directory_says_where_its_batches_stand() {
    let (_d, wd, digests) = setup(3);
    assert!(batches(wd.root(), None).is_empty());
    let fake = Fake {
        wd: Some(wd.clone()),
        digests: digests.clone(),
        fail_once: Mutex::new(vec![1]),
        ..Fake::default()
    };
    run_batch(
        &wd,
        &digests,
        &fake,
        &config(),
        &worker(),
        &|| None,
        &mut |_| {},
    )
    .unwrap();
    let b = batches(wd.root(), Some(&fake));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].name, batch_name(wd.root(), &digests));
    assert_eq!(
        (b[0].shards, b[0].submissions, b[0].failures, b[0].queued),
        (3, 2, 1, Some(0))
    );
}
