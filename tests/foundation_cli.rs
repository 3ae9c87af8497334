//! `lim foundation` end to end on the bundled sample, with a tiny model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::path::Path;
use std::process::{Command, Output};

fn lim(args: &[&str], cache: &Path, models: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lim"))
        .args(args)
        .args(["--models-dir", models.to_str().unwrap()])
        .env_remove("LIM_DATA")
        .env_remove("LIM_MODELS")
        .env("LIM_CACHE", cache)
        .output()
        .expect("run lim")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON on stdout")
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn pretrain_finetune_predict_list_on_the_sample() {
    let cache = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let (c, m) = (cache.path(), models.path());
    let pre = [
        "foundation",
        "pretrain",
        "--name",
        "base",
        "--datasets",
        "cn_futures_daily:2,us_futures_daily",
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
        "--json",
    ];
    let v = json(&lim(&pre, c, m));
    assert_eq!(v["steps"], 6);
    let err = failure(&lim(&pre, c, m));
    assert!(
        err.contains("already exists") && err.contains("--resume"),
        "{err}"
    );
    let mut resume = pre.to_vec();
    resume.push("--resume");
    assert_eq!(json(&lim(&resume, c, m))["steps"], 6);

    let ft_args = [
        "foundation",
        "finetune",
        "--name",
        "base-cn",
        "--from",
        "base",
        "--dataset",
        "cn_futures_daily",
        "--train-end",
        "2015-12-31",
        "--valid-end",
        "2016-12-31",
        "--mode",
        "probe",
        "--steps",
        "10",
        "--batch",
        "16",
        "--json",
    ];
    let ft = json(&lim(&ft_args, c, m));
    assert!(ft["valid"]["dates"].as_u64().unwrap() > 100, "{ft}");
    let err = failure(&lim(&ft_args, c, m));
    assert!(err.contains("--resume"), "{err}");
    let mut again = ft_args.to_vec();
    again.push("--resume");
    let ft2 = json(&lim(&again, c, m));
    assert_eq!(ft2["best_step"], ft["best_step"]);
    assert_eq!(ft2["valid"], ft["valid"]);

    // Full fine-tuning, plain and in two stages (LP-FT): the second starts from the probe
    // stage's head, so it ends elsewhere; it resumes only as it was started.
    let full = |name: &'static str, lp_ft: bool| {
        let mut args = ft_args.to_vec();
        args[3] = name;
        let at = args.iter().position(|a| *a == "probe").unwrap();
        args[at] = "full";
        if lp_ft {
            args.push("--lp-ft");
        }
        args
    };
    let plain = json(&lim(&full("plain", false), c, m));
    let two = json(&lim(&full("two", true), c, m));
    assert_ne!(plain["valid"], two["valid"], "{plain} {two}");
    let mut again = full("two", true);
    again.push("--resume");
    assert_eq!(json(&lim(&again, c, m))["valid"], two["valid"]);
    let mut other = full("two", false);
    other.push("--resume");
    let err = failure(&lim(&other, c, m));
    assert!(
        err.contains("--lp-ft") && err.contains("other settings"),
        "{err}"
    );
    let mut probe = ft_args.to_vec();
    probe[3] = "three";
    probe.push("--lp-ft");
    let err = failure(&lim(&probe, c, m));
    assert!(
        err.contains("--lp-ft") && err.contains("--mode probe"),
        "{err}"
    );

    let err = failure(&lim(
        &[
            "foundation",
            "predict",
            "--model-name",
            "base-cn",
            "--start",
            "2016-06-01",
        ],
        c,
        m,
    ));
    assert!(err.contains("strictly out of sample"), "{err}");
    let p = json(&lim(
        &[
            "foundation",
            "predict",
            "--model-name",
            "base-cn",
            "--start",
            "2017-01-03",
            "--end",
            "2017-03-31",
            "--json",
        ],
        c,
        m,
    ));
    assert_eq!(p["symbols"], 30);
    assert!(p["predictions"].as_u64().unwrap() > 30 * 50, "{p}");
    let csv = std::fs::read_to_string(p["file"].as_str().unwrap()).unwrap();
    assert!(csv.starts_with("ts,"), "{csv}");

    // A registered panel is a field strategies can use, from the model's cutoff on.
    json(&lim(
        &[
            "foundation",
            "predict",
            "--model-name",
            "base-cn",
            "--name",
            "fc",
            "--start",
            "2017-01-03",
            "--json",
        ],
        c,
        m,
    ));
    let bt = json(&lim(
        &[
            "backtest",
            "--dataset",
            "cn_futures_daily",
            "--predictions",
            "fc",
            "--expr",
            "rank(fc)",
            "--json",
        ],
        c,
        m,
    ));
    let s = &bt["strategies"][0];
    assert!(s["error"].is_null(), "{bt}");
    assert!(s["metrics"][1][1]["bars"].as_u64().unwrap() > 100, "{bt}");
    let err = failure(&lim(
        &["backtest", "--predictions", "nope", "--expr", "rank(close)"],
        c,
        m,
    ));
    assert!(err.contains("prediction panel 'nope'"), "{err}");

    let list = json(&lim(&["foundation", "list", "--json"], c, m));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "base-cn", "plain", "two"]);
    // The two-stage run says so in its settings.
    assert_eq!(list[3]["finetune"]["lp_ft"], true, "{}", list[3]);
    assert!(list[2]["finetune"].get("lp_ft").is_none());
    assert_eq!(list[1]["manifest"]["parent"]["name"], "base");
    let text = lim(&["foundation", "list"], c, m);
    assert!(String::from_utf8_lossy(&text.stdout).contains("base@6"));

    let err = failure(&lim(
        &[
            "foundation",
            "pretrain",
            "--name",
            "y",
            "--datasets",
            "cn_futures_dayly",
            "--cutoff",
            "2015-12-31",
        ],
        c,
        m,
    ));
    assert!(err.contains("cn_futures_dayly"), "{err}");
}

/// A tiny evaluation grid runs end to end on the sample, keeps each cell as it finishes, and a
/// second call (as after a kill) reads them back instead of training again.
#[test]
fn a_tiny_eval_grid_runs_and_resumes_from_its_cells() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, models, out) = (
        dir.path().join("c"),
        dir.path().join("m"),
        dir.path().join("eval"),
    );
    let args = [
        "foundation",
        "eval",
        "--grid",
        "vol:5,rank:5",
        "--pretrain-steps",
        "8",
        "--finetune-steps",
        "4",
        "--batch",
        "16",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    let first = lim(&args, &cache, &models);
    let v = json(&first);
    // Progress names each model's place among the seven a cell trains, so that one model's
    // ETA is not taken for the cell's.
    let progress = String::from_utf8_lossy(&first.stderr);
    assert!(
        progress.contains("model 1 of 7, pretrain target-only: step")
            && progress.contains("model 7 of 7, finetune cross-market full: step"),
        "{progress}"
    );
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    assert!(
        cells.iter().all(|c| c["seconds"].as_f64().unwrap() > 0.0),
        "run now"
    );
    let rows = v["rows"].as_array().unwrap();
    let vol: Vec<&str> = rows
        .iter()
        .filter(|r| r["target"] == "vol h5")
        .map(|r| r["arm"].as_str().unwrap())
        .collect();
    assert!(
        vol.contains(&"scratch") && vol.contains(&"cross-market full"),
        "{vol:?}"
    );
    assert!(
        vol.iter().any(|a| a.starts_with("HAR-RV")),
        "the simple forecasts are rows"
    );
    let rank: Vec<&str> = rows
        .iter()
        .filter(|r| r["target"] == "rank h5")
        .map(|r| r["arm"].as_str().unwrap())
        .collect();
    assert!(
        rank.contains(&"linear (4 features)")
            && rank.contains(&"-reversal 5")
            && rank
                .iter()
                .any(|a| a.starts_with("best single factor on training (")),
        "the return target's simple forecasts are rows: {rank:?}"
    );
    assert!(rows.iter().all(|r| r["metric"]
        == if r["target"] == "vol h5" {
            "qlike"
        } else {
            "rank_ic"
        }));
    // Each target names its best simple forecast, which the models are measured against:
    // the best on validation (what a researcher could know), not on the test.
    for target in ["vol h5", "rank h5"] {
        let best: Vec<&str> = rows
            .iter()
            .filter(|r| r["target"] == target && r["best_simple"] == true)
            .map(|r| r["arm"].as_str().unwrap())
            .collect();
        assert!(
            best.len() == 1 && !lim_foundation::eval::is_model(best[0]),
            "{target}: {best:?}"
        );
        let valid: Vec<(&str, f64)> = rows
            .iter()
            .filter(|r| {
                r["target"] == target && !lim_foundation::eval::is_model(r["arm"].as_str().unwrap())
            })
            .map(|r| {
                (
                    r["arm"].as_str().unwrap(),
                    r["valid"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect();
        assert!(
            valid.len() > 1 && valid.iter().all(|(_, v)| v.is_finite()),
            "{target}: every simple forecast is scored on validation: {valid:?}"
        );
        let vol = target.starts_with("vol");
        let top = valid
            .iter()
            .copied()
            .reduce(|a, b| if (b.1 < a.1) == vol { b } else { a })
            .unwrap();
        assert_eq!(best[0], top.0, "{target}: {valid:?}");
        assert!(
            rows.iter()
                .any(|r| r["arm"] == best[0] && r["chosen_on_validation"] == true),
            "{target}: the row says it was chosen on validation"
        );
    }
    // Volatility cells keep every forecast's losses date by date, on the same dates, so each
    // model is tested against the best simple forecast over the test (Diebold–Mariano).
    let vol_cell = cells.iter().find(|c| c["kind"] == "log_vol").unwrap();
    let dates: Vec<usize> = vol_cell["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["qlike_by_date"].as_array().map_or(0, Vec::len))
        .collect();
    assert!(
        dates[0] > 10 && dates.iter().all(|n| *n == dates[0]),
        "{dates:?}"
    );
    for r in rows {
        let model = lim_foundation::eval::is_model(r["arm"].as_str().unwrap());
        let dm = r["vs_best_simple_dm_t"].as_f64();
        assert_eq!(
            dm.is_some_and(f64::is_finite),
            model && r["target"] == "vol h5",
            "{r}"
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["grid.json", "rank-h5-s42.json", "vol-h5-s42.json"],
        "one file per cell, and the grid's recipe"
    );
    // Again, as after a kill: the cells are read back, the table is the same.
    let again = json(&lim(&args, &cache, &models));
    assert!(
        again["cells"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["seconds"] == 0.0)
    );
    assert_eq!(again["rows"], v["rows"]);
    // As text: one table per target, every line within a terminal's width, and the best
    // outside factor's expression (a long name) in a note under its table.
    let plain: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    let out = lim(&plain, &cache, &models);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for heading in ["vol h5: test QLIKE", "rank h5: test rank IC"] {
        assert!(text.contains(heading), "{text}");
    }
    let wide: Vec<&str> = text.lines().filter(|l| l.chars().count() > 120).collect();
    assert!(wide.is_empty(), "lines wider than a terminal: {wide:?}");
    let factor = rank.iter().find(|a| a.starts_with("best of ")).unwrap();
    let expression = &factor[factor.find(" (").unwrap() + 2..factor.len() - 1];
    assert!(
        text.lines()
            .any(|l| l.starts_with('(') && l.ends_with(expression)),
        "{text}"
    );
    let bad = lim(
        &["foundation", "eval", "--grid", "volume:5"],
        &cache,
        &models,
    );
    assert!(failure(&bad).contains("use rank, return or vol"));
}

/// An evaluation grid fine-tunes its cross-market arms from a model pretrained beforehand (one
/// long pretraining for every cell), runs only the arms asked for, and refuses a model that
/// learned from data after the fine-tuning cutoff or has another shape.
#[test]
fn an_eval_grid_fine_tunes_from_a_model_pretrained_beforehand() {
    let dir = tempfile::tempdir().unwrap();
    let (c, m) = (&dir.path().join("c"), &dir.path().join("m"));
    let pretrain = |name: &str, cutoff: &str, config: &str| {
        let out = lim(
            &[
                "foundation",
                "pretrain",
                "--name",
                name,
                "--datasets",
                "cn_futures_daily,us_futures_daily",
                "--cutoff",
                cutoff,
                "--config",
                config,
                "--steps",
                "4",
                "--batch",
                "8",
                "--json",
            ],
            c,
            m,
        );
        assert!(out.status.success(), "{}", failure(&out));
    };
    pretrain("early", "2019-12-31", "small");
    pretrain("late", "2020-06-30", "small");
    pretrain("tiny", "2019-12-31", "tiny");
    // A grid of the arms given, into its own directory.
    let grid = |model: &str, out: &str, arms: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "foundation",
            "eval",
            "--grid",
            "vol:5",
            "--cross-from",
            model,
            "--arms",
            arms,
            "--finetune-steps",
            "4",
            "--batch",
            "16",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        lim(&args, c, m)
    };
    let eval_with = |model: &str, out: &str, extra: &[&str]| {
        grid(model, out, "scratch,cross-market-full", extra)
    };
    let eval_anchored =
        |model: &str, out: &str, anchor: &str| eval_with(model, out, &["--vol-anchor", anchor]);
    let eval = |model: &str, out: &str| eval_anchored(model, out, "window");
    let v = json(&eval("early", "e1"));
    // Learned relative to EWMA's forecast, the same arms forecast otherwise.
    let anchored = json(&eval_anchored("early", "e4", "ewma"));
    let qlike = |v: &serde_json::Value| v["cells"][0]["arms"][0]["qlike"].as_f64().unwrap();
    assert_ne!(qlike(&v), qlike(&anchored));
    // Trained on QLIKE instead of the squared error: other models.
    let on_qlike = json(&eval_with("early", "e5", &["--vol-loss", "qlike"]));
    assert_ne!(qlike(&v), qlike(&on_qlike));
    // The two grids side by side, cell by cell (read back: nothing is trained again).
    let e1 = dir.path().join("e1");
    let side = json(&eval_with(
        "early",
        "e5",
        &["--vol-loss", "qlike", "--against", e1.to_str().unwrap()],
    ));
    let arm_of = |v: &serde_json::Value, arm: &str| {
        v["cells"][0]["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arm"] == arm)
            .unwrap()["qlike"]
            .as_f64()
            .unwrap()
    };
    let versus = side["against"].as_array().unwrap();
    let cross = versus
        .iter()
        .find(|r| r["arm"] == "cross-market full")
        .unwrap_or_else(|| panic!("{side}"));
    assert_eq!(
        cross["mean"].as_f64(),
        Some(arm_of(&on_qlike, "cross-market full"))
    );
    assert_eq!(
        cross["other"].as_f64(),
        Some(arm_of(&v, "cross-market full"))
    );
    assert!(
        versus
            .iter()
            .all(|r| !r["arm"].as_str().unwrap().starts_with("EWMA")),
        "only models: {side}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(
        side["against_settings"],
        serde_json::json!([r#"vol_loss: "qlike" / "mse""#]),
        "what the two grids were made with differently: {side}"
    );
    let none = failure(&eval_with(
        "early",
        "e5",
        &["--vol-loss", "qlike", "--against", empty.to_str().unwrap()],
    ));
    assert!(
        none.contains("--against") && none.contains("same --grid"),
        "{none}"
    );
    // Grids of other periods hold other samples: not compared.
    let later = failure(&eval_with(
        "early",
        "e6",
        &[
            "--test-end",
            "2024-06-28",
            "--against",
            e1.to_str().unwrap(),
        ],
    ));
    assert!(
        later.contains("other samples") && later.contains("test_end"),
        "{later}"
    );
    // A grid's directory keeps its recipe: cells made otherwise are not read back as this one's.
    let mixed = failure(&eval_with("early", "e1", &["--vol-loss", "qlike"]));
    assert!(
        mixed.contains("other settings")
            && mixed.contains("vol_loss")
            && mixed.contains("own --out"),
        "{mixed}"
    );
    let arms: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["arm"].as_str().unwrap())
        .filter(|a| !a.starts_with("HAR") && !a.starts_with("EWMA") && !a.starts_with("trailing"))
        .collect();
    // Each model arm, then each blended with EWMA by a weight chosen on validation.
    assert_eq!(
        arms,
        [
            "scratch",
            "cross-market full",
            "scratch with EWMA",
            "cross-market full with EWMA"
        ],
        "{v}"
    );
    for row in &v["rows"].as_array().unwrap()[2..4] {
        let w = row["weight"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&w), "{row}");
    }
    let cell = &v["cells"][0]["arms"];
    assert!(
        cell.as_array().unwrap().len() > 2,
        "the simple forecasts stay: {cell}"
    );

    let late = failure(&eval("late", "e2"));
    assert!(
        late.contains("model 'late' learned from data up to 2020-07-01")
            && late.contains("no later than --train-end"),
        "{late}"
    );
    let shape = failure(&eval("tiny", "e3"));
    assert!(shape.contains("another shape"), "{shape}");
    let bad = dir.path().join("bad");
    let arm = failure(&lim(
        &[
            "foundation",
            "eval",
            "--arms",
            "scratch,everything",
            "--out",
            bad.to_str().unwrap(),
        ],
        c,
        m,
    ));
    assert!(arm.contains("unknown arm 'everything'"), "{arm}");
    assert!(!bad.exists(), "a refused grid writes nothing");

    // LP-FT: the full arm starts from the probe stage's model; the probe arm is untouched.
    let pair = |out: &str, lp_ft: bool| {
        let extra: &[&str] = if lp_ft { &["--lp-ft"] } else { &[] };
        let v = json(&grid(
            "early",
            out,
            "cross-market-probe,cross-market-full",
            extra,
        ));
        let q = |arm: &str| {
            v["cells"][0]["arms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["arm"] == arm)
                .unwrap_or_else(|| panic!("{arm} in {v}"))["qlike"]
                .as_f64()
                .unwrap()
        };
        (q("cross-market probe"), q("cross-market full"))
    };
    let (plain, lp_ft) = (pair("p1", false), pair("p2", true));
    assert_eq!(plain.0, lp_ft.0, "the probe arm does not change");
    assert_ne!(plain.1, lp_ft.1, "the full arm starts elsewhere");
}

/// The losses of every step of a model's latest checkpoint, as written.
fn losses(models: &Path, name: &str) -> serde_json::Value {
    let latest = std::fs::read_to_string(models.join(name).join("LATEST")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(models.join(name).join(latest.trim()).join("meta.json")).unwrap(),
    )
    .unwrap();
    meta["state"]["losses"].clone()
}

#[test]
fn two_processes_pretrain_the_model_one_process_pretrains() {
    let cache = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let (c, m) = (cache.path(), models.path());
    let args = |name: &'static str, shards: &'static str| {
        vec![
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
            shards,
            "--checkpoint-every",
            "3",
            "--json",
        ]
    };
    json(&lim(&args("solo", "4"), c, m));
    json(&lim(&args("other", "1"), c, m));
    let rv = m.join("rv");
    let member = |rank: &'static str| {
        let mut a = args("group", "4");
        a.extend([
            "--world",
            "2",
            "--rank",
            rank,
            "--rendezvous",
            rv.to_str().unwrap(),
        ]);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let (c2, m2, one) = (c.to_path_buf(), m.to_path_buf(), member("1"));
    let follower = std::thread::spawn(move || {
        let a: Vec<&str> = one.iter().map(String::as_str).collect();
        lim(&a, &c2, &m2)
    });
    let a = member("0");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let lead = json(&lim(&a, c, m));
    assert!(follower.join().unwrap().status.success());
    assert_eq!(lead["steps"], 6);
    let solo = losses(m, "solo");
    assert_eq!(solo.as_array().unwrap().len(), 6);
    assert_eq!(losses(m, "group"), solo, "every step's loss, bit for bit");
    assert_ne!(
        losses(m, "other"),
        solo,
        "another shard count is told apart"
    );
    // Streamed from disk, the same steps; the files go when the run ends.
    let mut streamed = args("streamed", "4");
    streamed.push("--stream");
    json(&lim(&streamed, c, m));
    assert_eq!(losses(m, "streamed"), solo, "streamed, bit for bit");
    assert!(!m.join("streamed").join("stream-0").exists());
    assert!(!rv.exists(), "the rendezvous file is removed");

    // Fewer shards than processes, and a rank whose partner never comes, are refused.
    let mut a = args("g2", "1");
    a.extend(["--world", "2", "--rank", "0"]);
    let err = failure(&lim(&a, c, m));
    assert!(
        err.contains("--shards 1 is fewer than the group's 2 processes"),
        "{err}"
    );
    let mut a = args("g3", "2");
    a.extend(["--world", "2", "--rank", "0", "--group-timeout", "1"]);
    let err = failure(&lim(&a, c, m));
    assert!(
        err.contains("rank(s) 1 of 2 did not join within 1s"),
        "{err}"
    );
    let mut a = args("g4", "2");
    a.extend(["--ntasks", "2"]);
    let err = failure(&lim(&a, c, m));
    assert!(err.contains("--ntasks is for --executor slurm"), "{err}");
    let err = failure(&lim(
        &[
            "foundation",
            "finetune",
            "--name",
            "x",
            "--from",
            "solo",
            "--dataset",
            "cn_futures_daily",
            "--train-end",
            "2015-12-31",
            "--valid-end",
            "2016-12-31",
            "--executor",
            "slurm",
            "--ntasks",
            "2",
        ],
        c,
        m,
    ));
    assert!(
        err.contains("only `lim foundation pretrain` trains as a group"),
        "{err}"
    );
}

/// `--hours` sizes a run by this machine's step time: the count is printed, kept in the
/// checkpoint and honoured by --resume; a resumed run cannot be resized.
#[test]
fn pretraining_for_a_number_of_hours_sizes_the_run_by_its_step_time() {
    let cache = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let (c, m) = (cache.path(), models.path());
    let args = [
        "foundation",
        "pretrain",
        "--name",
        "night",
        "--datasets",
        "cn_futures_daily",
        "--cutoff",
        "2015-12-31",
        "--config",
        "tiny",
        "--batch",
        "8",
        "--hours",
        "0.0005",
        "--json",
    ];
    let out = lim(&args, c, m);
    let v = json(&out);
    let steps = v["steps"].as_u64().unwrap();
    // 1.8 s of a step of a few milliseconds: hundreds of steps, not the default 500 by chance.
    assert!(steps > 20 && steps != 500, "{steps}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("so {steps} steps")), "{err}");
    assert_eq!(losses(m, "night").as_array().unwrap().len() as u64, steps);
    let meta = std::fs::read_to_string(
        m.join("night")
            .join(
                std::fs::read_to_string(m.join("night").join("LATEST"))
                    .unwrap()
                    .trim(),
            )
            .join("meta.json"),
    )
    .unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["pretrain"]["optim"]["steps"], steps);
    assert_eq!(meta["pretrain"]["optim"]["warmup"], (steps / 10).max(1));
    let mut resume = args.to_vec();
    resume.push("--resume");
    let err = failure(&lim(&resume, c, m));
    assert!(
        err.contains("--hours sizes a new run") && err.contains("drop --hours"),
        "{err}"
    );
}
