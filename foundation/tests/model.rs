#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
//! Tiny configurations on the CPU backend, fixed seeds.

use std::path::Path;

use lim_foundation::checkpoint::{DataManifest, Kind, Meta, Store};
use lim_foundation::config::{FinetuneConfig, MixtureEntry, Mode, ModelConfig, PretrainConfig};
use lim_foundation::finetune::{finetune, predict_samples, samples, target_universe};
use lim_foundation::model::{Predictor, Pretrainer};
use lim_foundation::predict::{PredictionPanel, predict_panel};
use lim_foundation::pretrain::{PretrainData, Run};
use lim_foundation::rng::Rng;
use lim_foundation::{Device, FoundationError};
use lim_market::{AsOf, Catalog, Timestamp};

const DAY: i64 = 86_400;

/// Writes `<dir>/<name>.csv`: `symbols` random walks of `days` daily bars from 2010-01-01.
/// Bars after day `change_after` (if given) come from another generator, and the file gets
/// extra bars, so two files agree exactly up to that day and differ after it.
fn write_dataset(
    dir: &Path,
    name: &str,
    symbols: &[&str],
    days: usize,
    change_after: Option<usize>,
) {
    let mut text = String::from("ts,symbol,open,high,low,close,volume,open_interest\n");
    let start = Timestamp::from_ymd(2010, 1, 1).0;
    let total = days + if change_after.is_some() { 30 } else { 0 };
    for (k, sym) in symbols.iter().enumerate() {
        let mut rng = Rng::new(11, k as u64);
        let mut other = Rng::new(99, k as u64);
        let mut close = 100.0f64;
        for d in 0..total {
            let r = if change_after.is_some_and(|c| d > c) {
                &mut other
            } else {
                &mut rng
            };
            let open = close * (0.003 * r.normal()).exp();
            close = open * (0.01 * r.normal() + 0.0005 * (k as f64 - 1.0)).exp();
            let high = open.max(close) * (1.0 + 0.004 * r.uniform());
            let low = open.min(close) * (1.0 - 0.004 * r.uniform());
            let vol = 1000.0 * (0.3 * r.normal()).exp();
            let oi = 5000.0 + 100.0 * r.normal();
            let ts = Timestamp(start + d as i64 * DAY).date_string();
            text.push_str(&format!(
                "{ts},{sym},{open:.4},{high:.4},{low:.4},{close:.4},{vol:.0},{oi:.0}\n"
            ));
        }
    }
    std::fs::write(dir.join(format!("{name}.csv")), text).unwrap();
}

fn catalog(dir: &Path) -> Catalog {
    Catalog::open_dir(dir, None).unwrap()
}

fn fixture(change_after: Option<usize>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(
        dir.path(),
        "fut",
        &["SHFE:AA0", "SHFE:BB0", "DCE:CC0", "DCE:DD0"],
        400,
        change_after,
    );
    write_dataset(dir.path(), "eq", &["X1", "X2"], 400, change_after);
    dir
}

fn err<T>(r: Result<T, FoundationError>) -> FoundationError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn cpu() -> Device {
    Device::flex()
}

fn date(d: usize) -> AsOf {
    AsOf(Timestamp(
        Timestamp::from_ymd(2010, 1, 1).0 + (d as i64 + 1) * DAY,
    ))
}

fn mixture() -> Vec<MixtureEntry> {
    vec![
        MixtureEntry::parse("fut:2").unwrap(),
        MixtureEntry::parse("eq").unwrap(),
    ]
}

fn pretrain_cfg(steps: usize) -> PretrainConfig {
    let mut p = PretrainConfig::new(steps, 8, 7);
    p.optim.lr = 3e-3;
    p
}

/// Loss of a fixed batch, as a fingerprint of the weights.
fn fingerprint(model: &Pretrainer, data: &PretrainData, cfg: &ModelConfig) -> f32 {
    let mut rng = Rng::new(5, 5);
    let dev = cpu().autodiff();
    let b = data.batch(cfg, 16, 0.4, &mut rng, &dev).unwrap();
    model.loss(&b, 1.0).total.into_scalar::<f32>()
}

#[test]
fn shapes() {
    let dir = fixture(None);
    let cfg = ModelConfig::tiny();
    let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(200), &cfg).unwrap();
    let dev = cpu().autodiff();
    let mut rng = Rng::new(1, 1);
    let b = data.batch(&cfg, 5, 0.4, &mut rng, &dev).unwrap();
    assert_eq!(b.patches.dims(), [5, cfg.n_patches, cfg.patch_dim()]);
    assert_eq!(b.targets.dims(), [5, cfg.horizons.len()]);
    let m = Pretrainer::new(&cfg, 1, &dev);
    let h = m
        .backbone
        .forward(b.patches.clone(), Some(b.mask.clone()), b.ids.clone());
    assert_eq!(h.dims(), [5, cfg.n_patches, cfg.d_model]);
    let p = Predictor::new(m.backbone, cfg.d_model, 1, &dev);
    assert_eq!(p.forward(b.patches, b.ids, false).dims(), [5]);

    // With volatility targets the same windows are drawn, their return targets come first, and
    // a log volatility ratio per horizon follows; the head has an output for each.
    let vcfg = ModelConfig {
        vol_targets: true,
        ..cfg.clone()
    };
    let mut rng = Rng::new(1, 1);
    let v = data.batch(&vcfg, 5, 0.4, &mut rng, &dev).unwrap();
    let nh = cfg.horizons.len();
    assert_eq!(v.targets.dims(), [5, 2 * nh]);
    let (plain, both) = (
        b.targets.to_data().try_to_vec::<f32>().unwrap(),
        v.targets.to_data().try_to_vec::<f32>().unwrap(),
    );
    for row in 0..5 {
        assert_eq!(
            plain[row * nh..(row + 1) * nh],
            both[row * 2 * nh..row * 2 * nh + nh]
        );
        let vols = &both[row * 2 * nh + nh..(row + 1) * 2 * nh];
        assert!(
            vols.iter().all(|x| x.is_finite() && x.abs() <= 10.0),
            "{vols:?}"
        );
    }
    assert!(both.iter().skip(nh).step_by(2 * nh).any(|x| *x != 0.0));
    let vm = Pretrainer::new(&vcfg, 1, &dev);
    assert!(vm.loss(&v, 1.0).forecast.into_scalar::<f32>().is_finite());
    assert_eq!(
        cfg.difference(&vcfg).as_deref(),
        Some("vol_targets is false in the checkpoint, true requested")
    );
}

#[test]
fn overfits_one_batch() {
    let dir = fixture(None);
    let cfg = ModelConfig::tiny();
    let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(300), &cfg).unwrap();
    let dev = cpu().autodiff();
    let mut rng = Rng::new(3, 3);
    let batch = data.batch(&cfg, 4, 0.4, &mut rng, &dev).unwrap();
    let mut p = pretrain_cfg(300);
    p.optim.warmup = 1;
    p.optim.weight_decay = 0.0;
    p.optim.lr = 1e-2;
    let mut run = Run::new(&cfg, &p, &dev);
    let first = run.model.loss(&batch, 1.0).total.into_scalar::<f32>();
    for step in 0..300 {
        let loss = run.model.loss(&batch, 1.0);
        let grads = burn::optim::GradientsParams::from_grads(loss.total.backward(), &run.model);
        run.model = run
            .optim
            .step(p.optim.lr_at(step), run.model.clone(), grads);
    }
    let last = run.model.loss(&batch, 1.0).total.into_scalar::<f32>();
    assert!(
        last < 0.1 * first,
        "loss {first} -> {last}: did not overfit one batch"
    );
}

/// A streamed mixture draws the very batches of the one in memory, reading each window from
/// its dataset's file; a file gone missing is an error naming it.
#[test]
fn a_streamed_mixture_trains_bit_for_bit_as_the_one_in_memory() {
    let dir = fixture(None);
    let spill = tempfile::tempdir().unwrap();
    let cfg = ModelConfig {
        vol_targets: true,
        ..ModelConfig::tiny()
    };
    let cat = catalog(dir.path());
    let memory = PretrainData::load(&cat, &mixture(), date(300), &cfg).unwrap();
    let streamed =
        PretrainData::load_streamed(&cat, &mixture(), date(300), &cfg, spill.path()).unwrap();
    assert!(streamed.sets.iter().all(|(_, b)| b.in_memory().is_none()));
    assert_eq!(memory.symbols(), streamed.symbols());
    let files = std::fs::read_dir(spill.path()).unwrap().count();
    assert_eq!(files, 2, "one file per dataset");
    let dev = cpu().autodiff();
    let values = |b: &lim_foundation::model::PretrainBatch| {
        (
            b.patches.to_data().try_to_vec::<f32>().unwrap(),
            b.mask.to_data().try_to_vec::<f32>().unwrap(),
            b.ids.to_data().try_to_vec::<i32>().unwrap(),
            b.targets.to_data().try_to_vec::<f32>().unwrap(),
        )
    };
    let (mut ra, mut rb) = (Rng::new(5, 1), Rng::new(5, 1));
    for _ in 0..5 {
        let a = memory.batch(&cfg, 16, 0.4, &mut ra, &dev).unwrap();
        let b = streamed.batch(&cfg, 16, 0.4, &mut rb, &dev).unwrap();
        assert_eq!(values(&a), values(&b));
    }
    let losses = |data: &PretrainData| {
        let p = pretrain_cfg(6);
        let mut run = Run::new(&cfg, &p, &dev);
        run.train(data, &cfg, &p, &dev, &mut |_| {}, &mut |_| Ok(()))
            .unwrap();
        run.state.losses
    };
    assert_eq!(losses(&memory), losses(&streamed));
    // The files are read as windows are drawn: take them away and the next batch says so.
    for f in std::fs::read_dir(spill.path()).unwrap() {
        std::fs::write(f.unwrap().path(), b"").unwrap();
    }
    let e = err(streamed.batch(&cfg, 16, 0.4, &mut rb, &dev));
    assert!(e.to_string().contains(".bars"), "{e}");
}

#[test]
fn same_seed_same_model_other_seed_other_model() {
    let dir = fixture(None);
    let cfg = ModelConfig::tiny();
    let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(300), &cfg).unwrap();
    let dev = cpu().autodiff();
    let train = |seed: u64| {
        let mut p = pretrain_cfg(12);
        p.optim.seed = seed;
        let mut run = Run::new(&cfg, &p, &dev);
        run.train(&data, &cfg, &p, &dev, &mut |_| {}, &mut |_| Ok(()))
            .unwrap();
        (
            run.state.losses.clone(),
            fingerprint(&run.model, &data, &cfg),
        )
    };
    let (a, b, c) = (train(1), train(1), train(2));
    assert_eq!(a, b);
    assert_ne!(a.1, c.1);
}

#[test]
fn resumed_training_equals_uninterrupted() {
    resumed_equals_uninterrupted(None);
}

/// With a moving average of the weights, the checkpoint holds the average as its model and the
/// optimised weights beside it; a resumed run continues both and ends where an uninterrupted
/// one does, and the average differs from the optimised weights.
#[test]
fn resumed_training_with_a_moving_average_equals_uninterrupted() {
    resumed_equals_uninterrupted(Some(0.9));
}

fn resumed_equals_uninterrupted(ema: Option<f64>) {
    let dir = fixture(None);
    let models = tempfile::tempdir().unwrap();
    let store = Store::new(models.path());
    let cfg = ModelConfig::tiny();
    let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(300), &cfg).unwrap();
    let dev = cpu().autodiff();
    let mut p = pretrain_cfg(16);
    p.checkpoint_every = 6;
    p.ema = ema;
    // Batches of 8 cut into 3 shards on 3 threads, whatever the machine's cores.
    p.optim.shards = 3;

    let mut whole = Run::new(&cfg, &p, &dev);
    whole
        .train(&data, &cfg, &p, &dev, &mut |_| {}, &mut |_| Ok(()))
        .unwrap();

    // A run "killed" after its checkpoint at step 6, then resumed from disk.
    let meta = |run: &Run| Meta {
        name: "m".into(),
        kind: Kind::Pretrained,
        model: cfg.clone(),
        pretrain: Some(p.clone()),
        finetune: None,
        manifest: DataManifest {
            datasets: mixture(),
            symbols: Default::default(),
            cutoff: date(300),
            seed: 7,
            parent: None,
        },
        state: run.state.clone(),
        results: Default::default(),
        finetune_progress: None,
        checksums: Default::default(),
    };
    let mut first = Run::new(&cfg, &p, &dev);
    let killed = first.train(&data, &cfg, &p, &dev, &mut |_| {}, &mut |run| {
        let current = run.ema.as_ref().map(|_| &run.model);
        store.save(&meta(run), run.weights(), Some(&run.optim), current)?;
        Err(FoundationError::Config("killed".into()))
    });
    assert!(killed.is_err());
    let (m, model, current, optim) = store.load_pretrained("m", Some(&cfg), &dev).unwrap();
    assert_eq!(m.state.step, 6);
    assert_eq!(current.is_some(), ema.is_some());
    let (model, average) = match current {
        Some(c) => (c, Some(model)),
        None => (model, None),
    };
    let mut resumed = Run {
        model,
        ema: average,
        optim: optim.unwrap(),
        state: m.state,
    };
    resumed
        .train(&data, &cfg, &p, &dev, &mut |_| {}, &mut |_| Ok(()))
        .unwrap();

    assert_eq!(resumed.state, whole.state);
    assert_eq!(
        fingerprint(&resumed.model, &data, &cfg),
        fingerprint(&whole.model, &data, &cfg)
    );
    assert_eq!(
        fingerprint(resumed.weights(), &data, &cfg),
        fingerprint(whole.weights(), &data, &cfg)
    );
    assert_eq!(
        fingerprint(whole.weights(), &data, &cfg) == fingerprint(&whole.model, &data, &cfg),
        ema.is_none(),
        "the average should differ from the optimised weights exactly when there is one"
    );
}

fn finetuned(
    dir: &Path,
    mode: Mode,
) -> (
    Predictor,
    ModelConfig,
    FinetuneConfig,
    lim_foundation::finetune::SampleSet,
) {
    finetuned_on(
        dir,
        mode,
        lim_foundation::config::Target::Rank,
        Default::default(),
    )
}

fn finetuned_on(
    dir: &Path,
    mode: Mode,
    target: lim_foundation::config::Target,
    anchor: lim_foundation::config::VolAnchor,
) -> (
    Predictor,
    ModelConfig,
    FinetuneConfig,
    lim_foundation::finetune::SampleSet,
) {
    let cfg = ModelConfig::tiny();
    let cat = catalog(dir);
    let dev = cpu().autodiff();
    let mut ft = FinetuneConfig::new(mode, 30, 16, 3);
    ft.horizon = 2;
    ft.target = target;
    ft.vol_anchor = anchor;
    let u = target_universe(&cat, "fut", None, date(300)).unwrap();
    let train = samples(u.clone(), &cfg, &ft, None, date(200), "training").unwrap();
    let valid = samples(u, &cfg, &ft, Some(date(200)), date(300), "validation").unwrap();
    let backbone = Pretrainer::new(&cfg, 4, &dev).backbone;
    let out = finetune(
        Predictor::new(backbone, cfg.d_model, 4, &dev),
        &train,
        &valid,
        &cfg,
        &ft,
        &dev,
        &mut |_| {},
    )
    .unwrap();
    (out.model, cfg, ft, valid)
}

/// A volatility model's panel holds the forecast volatility per bar, ready to size a book
/// with: the head's output (how much busier than the window, or than EWMA's forecast) added to
/// the anchor's log volatility, exponentiated. The anchor travels with the model.
#[test]
fn a_volatility_models_panel_holds_the_forecast_volatility_per_bar() {
    use lim_foundation::config::VolAnchor;
    for anchor in [VolAnchor::Window, VolAnchor::Ewma] {
        volatility_panel(anchor);
    }
}

fn volatility_panel(anchor: lim_foundation::config::VolAnchor) {
    use lim_foundation::config::{Target, VolAnchor};
    use lim_foundation::predict::{About, predict_with};
    let dir = fixture(None);
    let (model, cfg, ft, _) = finetuned_on(dir.path(), Mode::Full, Target::LogVol, anchor);
    // A checkpoint of a window-anchored model reads as it did before anchors existed.
    let json = serde_json::to_value(&ft).unwrap();
    assert_eq!(json.get("vol_anchor").is_some(), anchor == VolAnchor::Ewma);
    let back: lim_foundation::FinetuneConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.vol_anchor, anchor);
    let cat = catalog(dir.path());
    let u = target_universe(&cat, "fut", None, date(399)).unwrap();
    let about = About {
        model: "vol",
        cfg: &cfg,
        cutoff: date(300),
        finetune: Some(&ft),
    };
    let start = Timestamp(date(300).0.0 + DAY);
    let panel = predict_with("v", &model, &about, &u, start, date(399).0, &cpu()).unwrap();
    // The same windows as samples (which carry the window's log volatility as their scale).
    let set = samples(u, &cfg, &ft, Some(date(300)), date(399), "after").unwrap();
    let head = predict_samples(&model, &set, &cfg, &cpu()).unwrap();
    let first = panel.times[0];
    let mut checked = 0;
    for (s, h) in set.samples.iter().zip(&head) {
        let time = set.universe.times[s.row];
        if time < first {
            continue;
        }
        let t = panel.times.iter().position(|x| *x == time).unwrap();
        let got = panel.get(t, s.series);
        let want = (f64::from(*h) + s.scale).exp() as f32;
        assert_eq!(got, want, "series {} bar {}", s.series, s.end);
        let series = &set.universe.series[s.series];
        let scale = match anchor {
            VolAnchor::Window => {
                lim_foundation::finetune::window_log_vol(series, s.end, cfg.window())
            }
            VolAnchor::Ewma => lim_foundation::vol::ewma_log_vol(series, s.end, 0.94),
        };
        assert_eq!(s.scale, scale, "{anchor:?}");
        checked += 1;
    }
    assert!(checked > 50, "{checked}");
    // The fixture's bars move about 1 % a day: forecasts are on that scale.
    let mut v: Vec<f32> = panel
        .values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    v.sort_by(f32::total_cmp);
    let median = v[v.len() / 2];
    assert!(v[0] > 0.0 && (0.003..0.03).contains(&median), "{median}");
}

#[test]
fn checkpoint_round_trip_gives_identical_predictions_and_bad_files_are_refused() {
    let dir = fixture(None);
    let models = tempfile::tempdir().unwrap();
    let store = Store::new(models.path());
    let (model, cfg, ft, valid) = finetuned(dir.path(), Mode::Full);
    let dev = cpu().autodiff();
    let meta = Meta {
        name: "ft".into(),
        kind: Kind::Finetuned,
        model: cfg.clone(),
        pretrain: None,
        finetune: Some(ft),
        manifest: DataManifest {
            datasets: vec![MixtureEntry::parse("fut").unwrap()],
            symbols: Default::default(),
            cutoff: date(300),
            seed: 3,
            parent: None,
        },
        state: lim_foundation::pretrain::TrainState {
            step: 30,
            rng: Rng::new(0, 0),
            losses: vec![],
        },
        results: Default::default(),
        finetune_progress: None,
        checksums: Default::default(),
    };
    store.save(&meta, &model, None, None).unwrap();
    let (m2, loaded) = store.load_predictor("ft", &dev).unwrap();
    let a = predict_samples(&model, &valid, &cfg, &dev).unwrap();
    let b = predict_samples(&loaded, &valid, &cfg, &dev).unwrap();
    assert_eq!(a, b);

    // Predictions only strictly after the cutoff; the panel file round-trips.
    let cat = catalog(dir.path());
    let u = target_universe(&cat, "fut", None, date(399)).unwrap();
    let early = predict_panel(
        "p",
        &loaded,
        &m2,
        &u,
        Timestamp(date(250).0.0 - DAY),
        Timestamp(date(399).0.0),
        &cpu(),
    );
    assert!(
        matches!(early, Err(FoundationError::NotOutOfSample { .. })),
        "{early:?}"
    );
    let panel = predict_panel(
        "p",
        &loaded,
        &m2,
        &u,
        date(300).0,
        Timestamp(date(399).0.0),
        &cpu(),
    )
    .unwrap();
    assert_eq!(panel.times.len(), 99);
    assert!(panel.values.iter().all(|v| v.is_finite()));
    let out = models.path().join("predictions");
    panel.write(&out).unwrap();
    let back = PredictionPanel::read(&out, "p").unwrap();
    assert_eq!(back.times, panel.times);
    assert_eq!(back.symbols, panel.symbols);

    // A pretrained model is not a predictor; a checkpoint of another shape is refused.
    let wrong = err(store.load_pretrained("ft", Some(&ModelConfig::small()), &dev));
    assert!(
        wrong.to_string().contains("another configuration"),
        "{wrong}"
    );
    let pm = Meta {
        name: "pre".into(),
        kind: Kind::Pretrained,
        finetune: None,
        ..meta.clone()
    };
    store
        .save(&pm, &Pretrainer::new(&cfg, 1, &dev), None, None)
        .unwrap();
    let wrong = err(store.load_pretrained("pre", Some(&ModelConfig::small()), &dev));
    assert!(
        matches!(wrong, FoundationError::ConfigMismatch { .. }),
        "{wrong}"
    );
    assert!(
        wrong
            .to_string()
            .contains("d_ff is 32 in the checkpoint, 64 requested"),
        "{wrong}"
    );

    // A corrupt weights file is named, with the fix.
    let ckpt = store.latest("ft").unwrap();
    let f = ckpt.join("model.bpk");
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xFF;
    bytes.truncate(n - 7);
    std::fs::write(&f, bytes).unwrap();
    let e = store.load_predictor("ft", &dev).unwrap_err().to_string();
    assert!(e.contains("model.bpk") && e.contains("corrupt"), "{e}");

    // Starting a model over an existing one is refused.
    let e = store.check_new("ft").unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    let e = store.load_predictor("fx", &dev).unwrap_err().to_string();
    assert!(e.contains("did you mean 'ft'"), "{e}");
}

#[test]
fn nothing_after_the_cutoff_changes_the_model() {
    // Two data directories that agree up to day 300 and differ after it.
    let (a, b) = (fixture(None), fixture(Some(300)));
    let cfg = ModelConfig::tiny();
    let dev = cpu().autodiff();
    let pretrained = |dir: &Path, vol_targets: bool| {
        let cfg = ModelConfig {
            vol_targets,
            ..cfg.clone()
        };
        let data = PretrainData::load(&catalog(dir), &mixture(), date(300), &cfg).unwrap();
        let p = pretrain_cfg(10);
        let mut run = Run::new(&cfg, &p, &dev);
        run.train(&data, &cfg, &p, &dev, &mut |_| {}, &mut |_| Ok(()))
            .unwrap();
        (
            run.state.losses.clone(),
            data.sets
                .iter()
                .map(|(_, s)| s.total_bars())
                .collect::<Vec<_>>(),
        )
    };
    // With volatility targets too: the next bars' volatility is read only before the cutoff.
    for vol in [false, true] {
        assert_eq!(pretrained(a.path(), vol), pretrained(b.path(), vol));
    }
    assert_ne!(pretrained(a.path(), false), pretrained(a.path(), true));
    // The data really differ after the cutoff.
    let late = |dir: &Path| {
        PretrainData::load(&catalog(dir), &mixture(), date(420), &cfg)
            .unwrap()
            .sets[0]
            .1
            .in_memory()
            .unwrap()[0]
            .feats
            .clone()
    };
    assert_ne!(late(a.path()), late(b.path()));
    // Fine-tuning (training up to day 200, early stopping on 200..300) sees nothing later either.
    let (ma, _, _, va) = finetuned(a.path(), Mode::Full);
    let (mb, cfg, _, _) = finetuned(b.path(), Mode::Full);
    assert_eq!(
        predict_samples(&ma, &va, &cfg, &dev).unwrap(),
        predict_samples(&mb, &va, &cfg, &dev).unwrap()
    );
}

#[test]
fn bad_inputs_name_the_input_and_the_fix() {
    let dir = fixture(None);
    let cat = catalog(dir.path());
    let cfg = ModelConfig::tiny();
    let e = PretrainData::load(
        &cat,
        &[MixtureEntry::parse("futs").unwrap()],
        date(300),
        &cfg,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("futs"), "{e}");
    let mut m = MixtureEntry::parse("fut").unwrap();
    m.symbols = Some(vec!["SHFE:AA1".into()]);
    let e = PretrainData::load(&cat, &[m], date(300), &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("SHFE:AA1"), "{e}");
    let mut long = cfg.clone();
    long.n_patches = 200;
    let e = PretrainData::load(&cat, &mixture(), date(300), &long).unwrap_err();
    assert!(matches!(e, FoundationError::WindowTooLong { .. }), "{e}");
    assert!(e.to_string().contains("800 bars"), "{e}");
    let e = PretrainData::load(
        &cat,
        &mixture(),
        AsOf(Timestamp::from_ymd(2005, 1, 1)),
        &cfg,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("leaves no training data") && e.contains("--cutoff"),
        "{e}"
    );
}

#[test]
fn probe_trains_only_the_head() {
    let dir = fixture(None);
    let cfg = ModelConfig::tiny();
    let dev = cpu().autodiff();
    let (probe, _, _, valid) = finetuned(dir.path(), Mode::Probe);
    let fresh = Pretrainer::new(&cfg, 4, &dev).backbone;
    let b = {
        let mut rng = Rng::new(1, 2);
        let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(300), &cfg).unwrap();
        data.batch(&cfg, 4, 0.0, &mut rng, &dev).unwrap()
    };
    let h1 = probe
        .backbone
        .forward(b.patches.clone(), None, b.ids.clone())
        .into_data();
    let h2 = fresh.forward(b.patches, None, b.ids).into_data();
    assert_eq!(h1, h2);
    assert!(!valid.samples.is_empty());
}

#[test]
fn resumed_finetuning_equals_uninterrupted() {
    use lim_foundation::finetune::FinetuneRun;
    let dir = fixture(None);
    let models = tempfile::tempdir().unwrap();
    let store = Store::new(models.path());
    let cfg = ModelConfig::tiny();
    let cat = catalog(dir.path());
    let dev = cpu().autodiff();
    let mut ft = FinetuneConfig::new(Mode::Full, 40, 16, 3);
    ft.horizon = 2;
    ft.eval_every = 10;
    ft.patience = 100;
    ft.optim.shards = 3;
    let u = target_universe(&cat, "fut", None, date(300)).unwrap();
    let train = samples(u.clone(), &cfg, &ft, None, date(200), "training").unwrap();
    let valid = samples(u, &cfg, &ft, Some(date(200)), date(300), "validation").unwrap();
    let start = || {
        Predictor::new(
            Pretrainer::new(&cfg, 4, &dev).backbone,
            cfg.d_model,
            4,
            &dev,
        )
    };

    let mut whole = FinetuneRun::new(start(), &ft);
    whole
        .train(
            &train,
            &valid,
            &cfg,
            &ft,
            &dev,
            &mut |_| {},
            &mut |_| Ok(()),
        )
        .unwrap();

    let meta = |r: &FinetuneRun| Meta {
        name: "f".into(),
        kind: Kind::Finetuned,
        model: cfg.clone(),
        pretrain: None,
        finetune: Some(ft.clone()),
        manifest: DataManifest {
            datasets: vec![MixtureEntry::parse("fut").unwrap()],
            symbols: Default::default(),
            cutoff: date(300),
            seed: 3,
            parent: None,
        },
        state: lim_foundation::pretrain::TrainState {
            step: r.progress.step,
            rng: r.progress.rng,
            losses: vec![],
        },
        results: Default::default(),
        finetune_progress: Some(r.progress.clone()),
        checksums: Default::default(),
    };
    // Killed after its second checkpoint (step 20), then resumed from disk.
    let mut first = FinetuneRun::new(start(), &ft);
    let mut saves = 0;
    let killed = first.train(&train, &valid, &cfg, &ft, &dev, &mut |_| {}, &mut |r| {
        store.save(&meta(r), &r.best, Some(&r.optim), Some(&r.model))?;
        saves += 1;
        if saves == 2 {
            Err(FoundationError::Config("killed".into()))
        } else {
            Ok(())
        }
    });
    assert!(killed.is_err());
    let (_, mut resumed) = store.load_finetune_run("f", &dev).unwrap();
    assert_eq!(resumed.progress.step, 20);
    resumed
        .train(
            &train,
            &valid,
            &cfg,
            &ft,
            &dev,
            &mut |_| {},
            &mut |_| Ok(()),
        )
        .unwrap();
    assert_eq!(resumed.progress, whole.progress);
    let a = resumed.finish(&valid, &cfg, &dev).unwrap();
    let b = whole.finish(&valid, &cfg, &dev).unwrap();
    assert_eq!(
        predict_samples(&a.model, &valid, &cfg, &dev).unwrap(),
        predict_samples(&b.model, &valid, &cfg, &dev).unwrap()
    );
}

#[test]
fn checkpoints_of_the_exact_gelu_load_as_they_were_and_are_refused_for_another_activation() {
    use lim_foundation::config::Activation;
    // A configuration written before the activation and shard settings existed.
    let mut old = serde_json::to_value(ModelConfig::tiny()).unwrap();
    old.as_object_mut().unwrap().remove("activation");
    let old: ModelConfig = serde_json::from_value(old).unwrap();
    assert_eq!(old.activation, Activation::Gelu);
    assert_eq!(ModelConfig::tiny().activation, Activation::GeluTanh);
    let mut optim = serde_json::to_value(pretrain_cfg(4)).unwrap();
    optim["optim"].as_object_mut().unwrap().remove("shards");
    let optim: PretrainConfig = serde_json::from_value(optim).unwrap();
    assert_eq!(optim.optim.shards, 1);

    let dir = fixture(None);
    let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(300), &old).unwrap();
    let dev = cpu().autodiff();
    let models = tempfile::tempdir().unwrap();
    let store = Store::new(models.path());
    let model = Pretrainer::new(&old, 9, &dev);
    let meta = Meta {
        name: "old".into(),
        kind: Kind::Pretrained,
        model: old.clone(),
        pretrain: Some(optim),
        finetune: None,
        manifest: DataManifest {
            datasets: mixture(),
            symbols: Default::default(),
            cutoff: date(300),
            seed: 9,
            parent: None,
        },
        state: lim_foundation::pretrain::TrainState {
            step: 0,
            rng: Rng::new(9, 9),
            losses: vec![],
        },
        results: Default::default(),
        finetune_progress: None,
        checksums: Default::default(),
    };
    store.save(&meta, &model, None, None).unwrap();
    let (m, loaded, _, _) = store.load_pretrained("old", None, &dev).unwrap();
    assert_eq!(m.model.activation, Activation::Gelu);
    let exact = fingerprint(&loaded, &data, &old);
    assert_eq!(exact, fingerprint(&model, &data, &old));
    // The same weights under the tanh approximation compute (slightly) other numbers.
    let tanh = Pretrainer::new(&ModelConfig::tiny(), 9, &dev);
    let approx = fingerprint(&tanh, &data, &old);
    assert_ne!(exact, approx);
    assert!(
        (exact - approx).abs() < 1e-2 * exact.abs(),
        "{exact} {approx}"
    );
    let e = err(store.load_pretrained("old", Some(&ModelConfig::tiny()), &dev)).to_string();
    assert!(e.contains("activation") && e.contains("gelu_tanh"), "{e}");
}

/// The sample-efficiency subsets are the most recent dates of the training samples: cut
/// before the cutoff, never after it, every sample of a kept date kept.
#[test]
fn sample_efficiency_subsets_are_the_last_dates_before_the_cutoff() {
    let dir = fixture(None);
    let cfg = ModelConfig::tiny();
    let mut ft = FinetuneConfig::new(Mode::Full, 30, 16, 3);
    ft.horizon = 2;
    let cat = catalog(dir.path());
    let u = target_universe(&cat, "fut", None, date(300)).unwrap();
    let all = samples(u, &cfg, &ft, None, date(200), "training").unwrap();
    let cut = all.clone().last_bars(40);
    let mut rows: Vec<usize> = all.samples.iter().map(|s| s.row).collect();
    rows.sort_unstable();
    rows.dedup();
    let first = rows[rows.len() - 40];
    let mut kept: Vec<usize> = cut.samples.iter().map(|s| s.row).collect();
    kept.sort_unstable();
    kept.dedup();
    assert_eq!(kept.len(), 40, "forty dates");
    assert!(cut.samples.iter().all(|s| s.row >= first));
    assert_eq!(
        cut.samples.len(),
        all.samples.iter().filter(|s| s.row >= first).count(),
        "every sample of a kept date"
    );
    // Nothing after the cutoff: the latest kept sample is the full set's latest.
    assert_eq!(
        cut.samples.iter().map(|s| s.row).max(),
        all.samples.iter().map(|s| s.row).max()
    );
    let times = &all.universe.times;
    for s in &cut.samples {
        let series = &all.universe.series[s.series];
        assert!(date(200).sees(times[series.rows[s.end + 2]], all.universe.frequency));
    }
    assert_eq!(
        all.clone().last_bars(100_000).samples.len(),
        all.samples.len()
    );
}

/// Processes of a data-parallel group played by threads: a channel from every member to every
/// other, so a member that is a round ahead cannot be mistaken for one that is not.
struct ThreadGroup {
    rank: usize,
    to: Vec<Option<std::sync::mpsc::Sender<Vec<u8>>>>,
    from: Vec<Option<std::sync::mpsc::Receiver<Vec<u8>>>>,
}

fn thread_group(world: usize) -> Vec<ThreadGroup> {
    let mut groups: Vec<ThreadGroup> = (0..world)
        .map(|rank| ThreadGroup {
            rank,
            to: (0..world).map(|_| None).collect(),
            from: (0..world).map(|_| None).collect(),
        })
        .collect();
    for a in 0..world {
        for b in 0..world {
            if a != b {
                let (tx, rx) = std::sync::mpsc::channel();
                groups[a].to[b] = Some(tx);
                groups[b].from[a] = Some(rx);
            }
        }
    }
    groups
}

impl lim_foundation::parallel::Exchange for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.to.len()
    }
    fn all_gather(&mut self, mine: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
        for tx in self.to.iter().flatten() {
            tx.send(mine.clone()).map_err(|e| e.to_string())?;
        }
        let mut all = Vec::with_capacity(self.to.len());
        for (r, rx) in self.from.iter().enumerate() {
            match rx {
                Some(rx) => all.push(
                    rx.recv_timeout(std::time::Duration::from_secs(120))
                        .map_err(|e| format!("rank {r}: {e}"))?,
                ),
                None => all.push(mine.clone()),
            }
        }
        Ok(all)
    }
}

/// Every weight of a model, as bits.
fn weight_bits(m: &Pretrainer) -> Vec<u32> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct W(Vec<u32>);
    impl ModuleVisitor for W {
        fn visit_float<const D: usize>(&mut self, param: &Param<burn::tensor::Tensor<D>>) {
            let v = param.val().into_data().try_to_vec::<f32>().unwrap();
            self.0.extend(v.into_iter().map(f32::to_bits));
        }
    }
    let mut w = W(Vec::new());
    m.visit(&mut w);
    w.0
}

#[test]
fn a_group_of_processes_trains_the_model_one_process_trains_bit_for_bit() {
    let dir = fixture(None);
    let cfg = ModelConfig::tiny();
    let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(300), &cfg).unwrap();
    let dev = cpu().autodiff();
    let mut p = pretrain_cfg(5);
    p.optim.shards = 4;
    p.ema = Some(0.9);
    let alone = {
        let mut run = Run::new(&cfg, &p, &dev);
        run.train(&data, &cfg, &p, &dev, &mut |_| {}, &mut |_| Ok(()))
            .unwrap();
        (
            run.state.losses.clone(),
            weight_bits(&run.model),
            weight_bits(run.weights()),
        )
    };
    for world in [2, 3] {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = thread_group(world)
                .into_iter()
                .map(|mut g| {
                    let (data, cfg, p) = (&data, &cfg, &p);
                    s.spawn(move || {
                        let dev = cpu().autodiff();
                        let mut run = Run::new(cfg, p, &dev);
                        let mut saved = 0;
                        run.train_in(data, cfg, p, &dev, &mut g, &mut |_| {}, &mut |_| {
                            saved += 1;
                            Ok(())
                        })
                        .unwrap();
                        assert_eq!(saved, 1);
                        (
                            run.state.losses.clone(),
                            weight_bits(&run.model),
                            weight_bits(run.weights()),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, r) in results.iter().enumerate() {
            assert_eq!(r.0, alone.0, "losses of rank {rank} of {world}");
            assert!(r.1 == alone.1, "weights of rank {rank} of {world} differ");
            assert!(
                r.2 == alone.2,
                "averaged weights of rank {rank} of {world} differ"
            );
        }
    }
    // Another shard count adds in another order: the test can tell models apart.
    let mut p2 = p.clone();
    p2.optim.shards = 1;
    let mut other = Run::new(&cfg, &p2, &dev);
    other
        .train(&data, &cfg, &p2, &dev, &mut |_| {}, &mut |_| Ok(()))
        .unwrap();
    assert!(weight_bits(&other.model) != alone.1);
}

#[test]
fn a_group_member_that_leaves_fails_the_others_with_a_clear_error() {
    let dir = fixture(None);
    let cfg = ModelConfig::tiny();
    let data = PretrainData::load(&catalog(dir.path()), &mixture(), date(300), &cfg).unwrap();
    let dev = cpu().autodiff();
    let mut p = pretrain_cfg(3);
    p.optim.shards = 2;
    let mut group = thread_group(2);
    drop(group.pop());
    let mut g = group.pop().unwrap();
    let mut run = Run::new(&cfg, &p, &dev);
    let e = run
        .train_in(&data, &cfg, &p, &dev, &mut g, &mut |_| {}, &mut |_| Ok(()))
        .unwrap_err();
    assert!(e.to_string().starts_with("data-parallel group: "), "{e}");
}
