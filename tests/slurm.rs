//! `lim backtest --executor slurm` against a real single-node Slurm cluster on 127.0.0.1
//! (`tests/slurm/cluster.sh start DIR` prints the `SLURM_CONF` to give as
//! `LIM_TEST_SLURM_CONF`; `.ci/run` does both and stops the cluster afterwards), and
//! `lim research --executor slurm` killed and resumed, and `lim foundation pretrain` as a
//! Slurm job. One test,
//! in stages, because the stages kill processes by name and must not see each other's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    conf: String,
    cache: PathBuf,
}

impl Cluster {
    fn lim(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lim"));
        c.args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("SLURM_CONF", &self.conf)
            .env_remove("LIM_DATA");
        c
    }

    fn slurm(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn queued(&self, name: &str) -> usize {
        self.slurm("squeue", &["-h", "-r", &format!("--name={name}")])
            .lines()
            .count()
    }

    /// Completed tasks of job `name`, from the job completion records.
    fn completions(&self, name: &str) -> usize {
        self.slurm("sacct", &["-c", "-n", "-P", "-o", "JobName,State"])
            .lines()
            .filter(|l| l.starts_with(&format!("{name}|")))
            .count()
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "lim failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// 200 strategies over the bundled sample's US equities.
fn batch(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for op in ["ts_mean", "ts_sum", "ts_std", "ts_zscore"] {
        for field in ["close", "volume", "returns", "high", "low"] {
            for w in [3, 5, 10, 15, 20, 30, 40, 60, 120, 250] {
                lines.push(format!("{op}_{field}_{w} | rank({op}({field}, {w}))"));
            }
        }
    }
    assert_eq!(lines.len(), 200);
    let path = dir.join("batch.txt");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn slurm_args<'a>(batch: &'a str, work: &'a str, shards: &'a str) -> Vec<&'a str> {
    vec![
        "backtest",
        "--batch",
        batch,
        "--json",
        "--executor",
        "slurm",
        "--work-dir",
        work,
        "--shards",
        shards,
    ]
}

fn ledger(work: &Path) -> (String, String) {
    let entry = std::fs::read_dir(work.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ledger"))
        .expect("a ledger");
    let name = entry.file_stem().unwrap().to_string_lossy().into_owned();
    (name, std::fs::read_to_string(entry).unwrap())
}

fn outputs(work: &Path) -> usize {
    std::fs::read_dir(work.join("outputs"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "out")
            })
            .count()
        })
        .unwrap_or(0)
}

/// Waits for `child` (reading its output as it comes, so a full pipe cannot stall it).
fn wait(child: Child, limit: Duration) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the coordinator did not finish in {limit:?}"))
}

#[test]
fn backtests_on_slurm_match_local_survive_kills_and_stop_at_the_deadline() {
    let Ok(conf) = std::env::var("LIM_TEST_SLURM_CONF") else {
        eprintln!(
            "skipped: set LIM_TEST_SLURM_CONF (tests/slurm/cluster.sh start DIR prints it; .ci/run does it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        conf,
        cache: dir.path().join("cache"),
    };
    let batch = batch(dir.path());
    let b = batch.to_str().unwrap();
    let local = ok(&cluster
        .lim(&["backtest", "--batch", b, "--json"])
        .output()
        .unwrap());

    // 1. A 200-strategy sweep as an 8-task array job: the same report, byte for byte.
    let t = Instant::now();
    let w1 = dir.path().join("w1");
    let got = ok(&cluster
        .lim(&slurm_args(b, w1.to_str().unwrap(), "8"))
        .output()
        .unwrap());
    assert_eq!(
        got, local,
        "the Slurm run's report differs from the local one"
    );
    let (name, _) = ledger(&w1);
    eprintln!(
        "200 strategies in 8 shards: {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2. A worker killed by the test: its shard is retried, the report is still the same.
    let w2 = dir.path().join("w2");
    let child = cluster
        .lim(&slurm_args(b, w2.to_str().unwrap(), "10"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pattern = format!(
        "worker --work-dir {}",
        w2.canonicalize().unwrap_or(w2.clone()).display()
    );
    let start = Instant::now();
    let killed = loop {
        let pids = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        if let Some(pid) = String::from_utf8_lossy(&pids.stdout).lines().next() {
            Command::new("kill").args(["-9", pid]).status().unwrap();
            break pid.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no worker was seen running"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let got = ok(&wait(child, Duration::from_secs(120)));
    assert_eq!(got, local, "after a killed worker, the report differs");
    let (_, text) = ledger(&w2);
    assert!(
        text.contains("\"event\":\"failed\"") && text.matches("\"event\":\"submit\"").count() == 2,
        "worker {killed} was killed: its shard should have failed once and been resubmitted alone:\n{text}"
    );

    // 3. The coordinator killed with SIGKILL mid-sweep, then run again: it attaches to the
    //    queued and running tasks, submits nothing twice, and reports the same.
    let w3 = dir.path().join("w3");
    let args = slurm_args(b, w3.to_str().unwrap(), "40");
    let mut child = cluster
        .lim(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while outputs(&w3) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no shard finished"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (name3, _) = ledger(&w3);
    let left = cluster.queued(&name3);
    assert!(
        left > 0,
        "the sweep ended before the kill; it cannot test reattachment"
    );
    let got = ok(&cluster.lim(&args).output().unwrap());
    assert_eq!(got, local, "the resumed sweep's report differs");
    let (_, text) = ledger(&w3);
    assert_eq!(
        text.matches("\"event\":\"submit\"").count(),
        1,
        "resubmitted after the restart:\n{text}"
    );
    let start = Instant::now();
    while cluster.queued(&name3) > 0 {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        cluster.completions(&name3),
        40,
        "every shard ran exactly once"
    );
    eprintln!("killed with {left} tasks in the queue; resumed without resubmitting");

    // 4. A deadline: what is queued or running is cancelled, nothing is left in the queue.
    let w4 = dir.path().join("w4");
    let mut args = slurm_args(b, w4.to_str().unwrap(), "60");
    args.extend(["--deadline", "1s"]);
    let out = cluster.lim(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the deadline passed") && err.contains("nothing of it is left"),
        "{err}"
    );
    let (name4, _) = ledger(&w4);
    assert_eq!(
        cluster.queued(&name4),
        0,
        "jobs left in the queue after the deadline"
    );
    assert!(cluster.completions(&name) >= 8);

    // 5. A research run whose backtests run on the cluster, its coordinator killed with
    //    SIGKILL while a batch is out, then `lim resume`d: the report equals the local run's,
    //    and every shard of every batch ran exactly once.
    let goal = "trend in Chinese commodity futures";
    let local_store = dir.path().join("runs-local");
    let slurm_store = dir.path().join("runs-slurm");
    let ls = local_store.to_str().unwrap();
    let ss = slurm_store.to_str().unwrap();
    let local: serde_json::Value = serde_json::from_str(&ok(&cluster
        .lim(&["research", goal, "--json", "--store", ls])
        .output()
        .unwrap()))
    .unwrap();
    let id = local["run"].as_str().unwrap().to_string();
    let work = slurm_store.join(&id).join("work");
    let mut child = cluster
        .lim(&[
            "research",
            goal,
            "--json",
            "--store",
            ss,
            "--executor",
            "slurm",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the second batch (an iteration's backtests) has finished a shard.
    let start = Instant::now();
    while std::fs::read_dir(work.join("jobs"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "ledger")
            })
            .count()
        })
        .unwrap_or(0)
        < 2
        || outputs(&work) < 9
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the research run's batches did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let in_queue: usize = std::fs::read_dir(work.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ledger"))
        .map(|p| cluster.queued(&p.file_stem().unwrap().to_string_lossy()))
        .sum();
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("research coordinator killed with {in_queue} tasks in the queue");
    let resumed: serde_json::Value = serde_json::from_str(&ok(&cluster
        .lim(&[
            "resume",
            &id,
            "--json",
            "--store",
            ss,
            "--executor",
            "slurm",
        ])
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(
        resumed["summary"], local["summary"],
        "the resumed Slurm run's summary differs"
    );
    let report = |store: &Path| std::fs::read_to_string(store.join(&id).join("report.md")).unwrap();
    assert_eq!(report(&slurm_store), report(&local_store));
    let ledgers: Vec<PathBuf> = std::fs::read_dir(work.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ledger"))
        .collect();
    assert!(ledgers.len() >= 2);
    for l in &ledgers {
        let name = l.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(l).unwrap();
        assert_eq!(
            text.matches("\"event\":\"submit\"").count(),
            1,
            "{name} resubmitted:\n{text}"
        );
        let shards = std::fs::read_to_string(work.join("jobs").join(format!("{name}.list")))
            .unwrap()
            .lines()
            .count();
        let start = Instant::now();
        while cluster.queued(&name) > 0 {
            assert!(start.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            cluster.completions(&name),
            shards,
            "{name}: each shard once"
        );
    }
    // `lim runs` says where the run's batches stand.
    let runs: serde_json::Value =
        serde_json::from_str(&ok(&Command::new(env!("CARGO_BIN_EXE_lim"))
            .args(["runs", "--json", "--store", ss])
            .env("SLURM_CONF", &cluster.conf)
            .output()
            .unwrap()))
        .unwrap();
    let batches = runs[0]["cluster"].as_array().unwrap();
    assert_eq!(batches.len(), ledgers.len());
    assert!(
        batches
            .iter()
            .all(|b| b["queued"] == 0 && b["submissions"] == 1 && b["shards"].as_u64() > Some(0)),
        "{runs}"
    );
    eprintln!(
        "research: {} batches on Slurm, killed and resumed, report identical",
        ledgers.len()
    );

    // 6. Pretraining as a Slurm job with the resources asked: its checkpoints land in the
    //    shared models directory; run again, it finds the finished job and submits nothing.
    let (models, jobs) = (dir.path().join("models"), dir.path().join("jobs"));
    let pretrain = || {
        cluster
            .lim(&[
                "foundation",
                "pretrain",
                "--name",
                "p",
                "--datasets",
                "cn_futures_daily",
                "--cutoff",
                "2015-12-31",
                "--config",
                "tiny",
                "--steps",
                "6",
                "--batch",
                "8",
                "--checkpoint-every",
                "3",
                "--models-dir",
                models.to_str().unwrap(),
                "--executor",
                "slurm",
                "--cpus-per-task",
                "1",
                "--mem",
                "700M",
                "--job-dir",
                jobs.to_str().unwrap(),
                "--json",
            ])
            .output()
            .unwrap()
    };
    let summary: serde_json::Value = serde_json::from_str(&ok(&pretrain())).unwrap();
    assert_eq!(summary["name"], "p");
    assert_eq!(summary["steps"], 6);
    assert!(models.join("p").join("LATEST").is_file(), "no checkpoint");
    let (name, text) = ledger(&jobs);
    assert_eq!(text.matches("\"submit\"").count(), 1, "{text}");
    let job = text
        .lines()
        .find_map(|l| l.split("\"job\":\"").nth(1))
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let shown = cluster.slurm("scontrol", &["-o", "show", "job", &job]);
    assert!(
        shown.contains("MinMemoryNode=700M") && shown.contains("NumCPUs=1"),
        "{shown}"
    );
    let again: serde_json::Value = serde_json::from_str(&ok(&pretrain())).unwrap();
    assert_eq!(again, summary);
    let (_, text) = ledger(&jobs);
    assert_eq!(
        text.matches("\"submit\"").count(),
        1,
        "submitted twice: {text}"
    );
    assert_eq!(cluster.completions(&name), 1);

    // 9. Data-parallel pretraining: a job of two processes started by `srun`, which meet
    //    through the models directory and exchange gradients over loopback, trains the model
    //    one local process trains with the same shards (every step's loss, bit for bit).
    let dp = |name: &str, slurm: bool| {
        let mut args = vec![
            "foundation",
            "pretrain",
            "--name",
            name,
            "--datasets",
            "cn_futures_daily:2,us_futures_daily",
            "--cutoff",
            "2015-12-31",
            "--config",
            "tiny",
            "--steps",
            "6",
            "--batch",
            "16",
            "--shards",
            "2",
            "--models-dir",
            models.to_str().unwrap(),
            "--json",
        ];
        let jobs = dir.path().join("dp-jobs");
        let jobs = jobs.to_str().unwrap().to_string();
        if slurm {
            args.extend([
                "--executor",
                "slurm",
                "--ntasks",
                "2",
                "--cpus-per-task",
                "1",
            ]);
            args.extend(["--job-dir", jobs.as_str()]);
        }
        ok(&cluster.lim(&args).output().unwrap())
    };
    dp("dp-local", false);
    let summary: serde_json::Value = serde_json::from_str(&dp("dp", true)).unwrap();
    assert_eq!(summary["steps"], 6, "{summary}");
    let step_losses = |name: &str| {
        let latest = std::fs::read_to_string(models.join(name).join("LATEST")).unwrap();
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(models.join(name).join(latest.trim()).join("meta.json"))
                .unwrap(),
        )
        .unwrap();
        meta["state"]["losses"].clone()
    };
    assert_eq!(step_losses("dp"), step_losses("dp-local"));
    let (_, text) = ledger(&dir.path().join("dp-jobs"));
    let job = text
        .lines()
        .find_map(|l| l.split("\"job\":\"").nth(1))
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let shown = cluster.slurm("scontrol", &["-o", "show", "job", &job]);
    assert!(shown.contains("NumTasks=2"), "{shown}");
    let log = std::fs::read_dir(dir.path().join("dp-jobs").join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        log.contains("rank 0 of 2") && log.contains("rank 1 of 2"),
        "both processes trained: {log}"
    );
    eprintln!("data-parallel pretraining: 2 srun tasks, losses equal to one process's");

    // 10. The foundation evaluation grid as an array job, one task per seed: the cells land in
    //     the shared output directory, the table equals a local run's, and run again it
    //     submits nothing.
    let eval = |out: &str, slurm: bool| {
        let out = dir.path().join(out);
        let jobs = dir.path().join("eval-jobs");
        let mut args = vec![
            "foundation",
            "eval",
            "--grid",
            "vol:5",
            "--seeds",
            "2",
            "--config",
            "tiny",
            "--pretrain-steps",
            "8",
            "--finetune-steps",
            "4",
            "--batch",
            "16",
            "--models-dir",
            models.to_str().unwrap(),
            "--json",
            "--out",
            out.to_str().unwrap(),
        ];
        let jobs = jobs.to_str().unwrap().to_string();
        if slurm {
            args.extend(["--executor", "slurm", "--job-dir", jobs.as_str()]);
        }
        let v: serde_json::Value =
            serde_json::from_str(&ok(&cluster.lim(&args).output().unwrap())).unwrap();
        v
    };
    let here = eval("eval-local", false);
    let there = eval("eval-slurm", true);
    assert_eq!(
        there["rows"], here["rows"],
        "the grid on Slurm differs from the local one"
    );
    assert!(
        there["cells"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["seconds"] == 0.0),
        "every cell was computed on the cluster and read back here"
    );
    eval("eval-slurm", true);
    let (name, text) = ledger(&dir.path().join("eval-jobs"));
    assert_eq!(
        text.matches("\"submit\"").count(),
        1,
        "submitted twice: {text}"
    );
    assert!(
        text.contains("\"indices\":[0,1]"),
        "one task per seed: {text}"
    );
    assert_eq!(cluster.completions(&name), 2);
    eprintln!("foundation eval: 2 seeds as 2 array tasks, table equal to the local one");

    // 8. Predictions as a Slurm job: the panel the node writes into the shared directory is
    //    the local one, byte for byte; run again, it submits nothing.
    let m = models.to_str().unwrap();
    ok(&cluster
        .lim(&[
            "foundation",
            "finetune",
            "--name",
            "f",
            "--from",
            "p",
            "--dataset",
            "cn_futures_daily",
            "--train-end",
            "2014-12-31",
            "--valid-end",
            "2015-12-31",
            "--steps",
            "4",
            "--batch",
            "8",
            "--models-dir",
            m,
            "--json",
        ])
        .output()
        .unwrap());
    let jobs = dir.path().join("predict-jobs");
    let predict = |out: &Path, slurm: bool| {
        let mut args = vec![
            "foundation",
            "predict",
            "--model-name",
            "f",
            "--start",
            "2016-01-04",
            "--end",
            "2016-06-30",
            "--models-dir",
            m,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        if slurm {
            args.extend(["--executor", "slurm", "--job-dir", jobs.to_str().unwrap()]);
        }
        let v: serde_json::Value =
            serde_json::from_str(&ok(&cluster.lim(&args).output().unwrap())).unwrap();
        v
    };
    let (here, there) = (dir.path().join("pred-local"), dir.path().join("pred-slurm"));
    let a = predict(&here, false);
    let b = predict(&there, true);
    assert_eq!(
        (a["times"].clone(), a["predictions"].clone()),
        (b["times"].clone(), b["predictions"].clone())
    );
    assert_eq!(
        std::fs::read(here.join("f.csv")).unwrap(),
        std::fs::read(there.join("f.csv")).unwrap(),
        "the Slurm job's predictions differ from the local ones"
    );
    predict(&there, true);
    let (_, text) = ledger(&jobs);
    assert_eq!(
        text.matches("\"submit\"").count(),
        1,
        "submitted twice: {text}"
    );

    // 7. A research run's deadline passing while its batch is out (held in the queue by
    //    `--begin`): the batch is cancelled, nothing is left in the queue, and the run ends
    //    for its deadline with a report.
    let held = dir.path().join("held.toml");
    std::fs::write(&held, "extra = [\"--begin=now+600\"]\nshards = 2\n").unwrap();
    let store7 = dir.path().join("runs-deadline");
    let t = Instant::now();
    let out = cluster
        .lim(&[
            "research",
            goal,
            "--json",
            "--store",
            store7.to_str().unwrap(),
            "--executor",
            "slurm",
            "--slurm-config",
            held.to_str().unwrap(),
            "--deadline",
            "20s",
        ])
        .output()
        .unwrap();
    let run: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let took = t.elapsed();
    assert_eq!(run["summary"]["stop_reason"], "deadline reached", "{run}");
    assert!(
        took < Duration::from_secs(90),
        "the run overran its 20 s deadline by far: {took:?}"
    );
    let id = run["run"].as_str().unwrap();
    // The held batch, and no other: the final evaluator, past the deadline, ran here.
    let jobs7 = store7.join(id).join("work").join("jobs");
    let ledgers: Vec<(String, String)> = std::fs::read_dir(&jobs7)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ledger"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    let submitted: Vec<&(String, String)> = ledgers
        .iter()
        .filter(|(_, t)| t.contains("\"submit\""))
        .collect();
    assert_eq!(submitted.len(), 1, "{ledgers:?}");
    let (name7, text) = submitted[0];
    assert_eq!(text.matches("\"submit\"").count(), 1, "{text}");
    assert_eq!(
        cluster.queued(name7),
        0,
        "the held batch is still in the queue after the deadline"
    );
    assert_eq!(outputs(&store7.join(id).join("work")), 0, "a held task ran");
    eprintln!("research deadline: batch held, cancelled, run ended in {took:?}");
}
