//! Roll detection, back-adjustment and resampling on the real series of the bundled sample.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use lim_market::{AsOf, Catalog, Field, Frequency, PanelQuery, PanelSet, RollPolicy, Timestamp};

fn query(dataset: &str, symbol: &str, roll: RollPolicy) -> PanelSet {
    let q = PanelQuery::new(AsOf::LATEST, [dataset])
        .symbols([symbol])
        .fields([Field::Open, Field::Close, Field::Returns])
        .roll(roll);
    Catalog::bundled(None)
        .panels(&q)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn day(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap_or_else(|| panic!("bad date {s}"))
}

/// On a roll day the clean return is the new contract's open-to-close return, taken from the
/// raw (unadjusted) series.
fn assert_clean_return_on(dataset: &str, symbol: &str, dates: &[&str]) {
    let adj = query(dataset, symbol, RollPolicy::BackAdjust);
    let raw = query(dataset, symbol, RollPolicy::None);
    let rolls = &adj.rolls[symbol];
    for d in dates {
        let ts = day(d);
        assert!(
            rolls.iter().any(|r| r.ts == ts),
            "{symbol}: no roll detected on {d}"
        );
        let t = raw
            .times
            .iter()
            .position(|x| *x == ts)
            .unwrap_or_else(|| panic!("{d} missing"));
        // Stray bars are dropped from the adjusted series, so its rows differ from the raw one.
        let ta = adj
            .times
            .iter()
            .position(|x| *x == ts)
            .unwrap_or_else(|| panic!("{d} missing"));
        let clean = adj
            .panel(Field::Returns)
            .map(|p| p.get(ta, 0))
            .unwrap_or(f64::NAN);
        let (o, c) = (
            raw.panel(Field::Open).map(|p| p.get(t, 0)),
            raw.panel(Field::Close).map(|p| p.get(t, 0)),
        );
        let expected = c.unwrap_or(f64::NAN) / o.unwrap_or(f64::NAN) - 1.0;
        assert!(
            (clean - expected).abs() < 1e-12,
            "{symbol} {d}: clean return {clean}, open-to-close {expected}"
        );
    }
}

#[test]
fn shfe_copper_main_contract_switches_are_found_from_open_interest() {
    assert_clean_return_on(
        "cn_futures_daily",
        "SHFE:CU0",
        &["2024-09-25", "2024-10-22", "2024-11-22", "2024-02-22"],
    );
    let adj = query("cn_futures_daily", "SHFE:CU0", RollPolicy::BackAdjust);
    // Copper's main contract moves about monthly; in recent years the detector finds most.
    let in_2022_2024 = adj.rolls["SHFE:CU0"]
        .iter()
        .filter(|r| r.ts >= day("2022-01-01"))
        .count();
    assert!(
        (24..=40).contains(&in_2022_2024),
        "found {in_2022_2024} rolls in 2022-2024"
    );
}

#[test]
fn wti_front_month_rolls_are_found_from_the_volume_collapse() {
    assert_clean_return_on(
        "us_futures_daily",
        "CL=F",
        &["2019-01-22", "2019-02-20", "2019-03-20", "2019-04-22"],
    );
    let adj = query("us_futures_daily", "CL=F", RollPolicy::BackAdjust);
    for year in 2017..=2020 {
        let (a, b) = (
            day(&format!("{year}-01-01")),
            day(&format!("{}-01-01", year + 1)),
        );
        let n = adj.rolls["CL=F"]
            .iter()
            .filter(|r| r.ts >= a && r.ts < b)
            .count();
        assert!(
            (10..=13).contains(&n),
            "CL=F {year}: {n} rolls, expected about 12 (monthly expiry)"
        );
    }
}

#[test]
fn back_adjusted_prices_keep_the_last_bar_and_shrink_roll_jumps() {
    let adj = query("cn_futures_daily", "SHFE:CU0", RollPolicy::BackAdjust);
    let raw = query("cn_futures_daily", "SHFE:CU0", RollPolicy::None);
    let close = |s: &PanelSet| {
        s.panel(Field::Close)
            .map(|p| p.get(s.times.len() - 1, 0))
            .unwrap_or(f64::NAN)
    };
    assert_eq!(adj.times.last(), raw.times.last());
    assert_eq!(close(&adj), close(&raw));
    assert!(
        adj.stray["SHFE:CU0"].len() < 10,
        "stray bars are rare: {:?}",
        adj.stray["SHFE:CU0"]
    );
    let worst = |s: &PanelSet| {
        let p = s
            .panel(Field::Returns)
            .map(|p| p.column(0).to_vec())
            .unwrap_or_default();
        p.iter()
            .copied()
            .filter(|x| x.is_finite())
            .map(f64::abs)
            .fold(0.0, f64::max)
    };
    assert!(worst(&adj) <= worst(&raw));
    // Equities are never adjusted.
    let aapl = query("us_equities_daily_adjusted", "AAPL", RollPolicy::BackAdjust);
    assert!(aapl.rolls.is_empty());
}

#[test]
fn five_minute_bars_resample_to_session_hours_and_days() {
    let catalog = Catalog::bundled(None);
    let fields = [
        Field::Open,
        Field::High,
        Field::Low,
        Field::Close,
        Field::Volume,
    ];
    let base = PanelQuery::new(AsOf::LATEST, ["in_equities_5min"])
        .symbols(["NSE:TCS"])
        .fields(fields);
    let five = catalog.panels(&base).unwrap_or_else(|e| panic!("{e}"));
    let hour = catalog
        .panels(&base.clone().frequency(Frequency::HOUR))
        .unwrap_or_else(|e| panic!("{e}"));
    let daily = catalog
        .panels(&base.clone().frequency(Frequency::Daily))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(five.frequency, Frequency::MIN5);

    // NSE opens 09:15 IST = 03:45 UTC: hourly bars start there, not on the clock hour.
    assert_eq!(
        hour.times[0],
        Timestamp::parse("2023-07-03T03:45:00Z").unwrap_or(Timestamp(0))
    );
    assert_eq!(
        hour.times[1],
        Timestamp::parse("2023-07-03T04:45:00Z").unwrap_or(Timestamp(0))
    );
    // 75 five-minute bars a day make 7 hourly bars (the last one holds 15:15-15:30).
    assert_eq!(hour.times.len(), 7 * daily.times.len());
    assert_eq!(
        daily.times[0],
        Timestamp::parse("2023-07-03").unwrap_or(Timestamp(0))
    );

    // First day by hand from the 5-minute bars.
    let p = |s: &PanelSet, f: Field| s.panel(f).map(|p| p.column(0).to_vec()).unwrap_or_default();
    let day1 = 0..75;
    assert!(five.times[74] < Timestamp::parse("2023-07-03T10:00:00Z").unwrap_or(Timestamp(0)));
    assert_eq!(p(&daily, Field::Open)[0], p(&five, Field::Open)[0]);
    assert_eq!(p(&daily, Field::Close)[0], p(&five, Field::Close)[74]);
    let hi = p(&five, Field::High)[day1.clone()]
        .iter()
        .copied()
        .fold(f64::MIN, f64::max);
    let lo = p(&five, Field::Low)[day1.clone()]
        .iter()
        .copied()
        .fold(f64::MAX, f64::min);
    let vol: f64 = p(&five, Field::Volume)[day1].iter().sum();
    assert_eq!(
        (
            p(&daily, Field::High)[0],
            p(&daily, Field::Low)[0],
            p(&daily, Field::Volume)[0]
        ),
        (hi, lo, vol)
    );

    // 5min -> 1h -> 1d gives the same days as 5min -> 1d.
    let hourly_vol: f64 = p(&hour, Field::Volume)[..7].iter().sum();
    assert_eq!(hourly_vol, vol);

    // Going finer is refused with the reason.
    let err = catalog
        .panels(&PanelQuery::new(AsOf::LATEST, ["cn_futures_daily"]).frequency(Frequency::HOUR));
    assert!(err.is_err_and(|e| {
        e.to_string()
            .contains("cannot resample 'cn_futures_daily' from 1d to 1h")
    }));
}

#[test]
fn datasets_align_on_the_union_of_their_calendars_with_derived_fields() {
    let q = PanelQuery::new(
        AsOf::end_of_day(2020, 12, 31),
        ["cn_futures_daily", "us_futures_daily"],
    )
    .symbols(["SHFE:CU0", "CL=F"])
    .fields([
        Field::High,
        Field::Low,
        Field::Close,
        Field::Volume,
        Field::Vwap,
        Field::DollarVolume,
        Field::Returns,
        Field::LogReturns,
    ])
    .roll(RollPolicy::None)
    .range(Timestamp::parse("2020-01-01"), None);
    let set = Catalog::bundled(None)
        .panels(&q)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.instruments.len(), 2);
    assert!(
        set.times
            .iter()
            .all(|t| *t >= day("2020-01-01") && *t <= day("2020-12-31"))
    );
    // Chinese holidays (Spring Festival) leave NaN for copper while WTI trades.
    let feb3 = set
        .times
        .iter()
        .position(|t| *t == day("2020-01-28"))
        .unwrap_or_else(|| panic!("2020-01-28 missing"));
    let cu = set.column_of("SHFE:CU0").unwrap_or(0);
    let cl = set.column_of("CL=F").unwrap_or(1);
    let get = |f: Field, t: usize, c: usize| set.panel(f).map(|p| p.get(t, c)).unwrap_or(f64::NAN);
    assert!(get(Field::Close, feb3, cu).is_nan() && !get(Field::Close, feb3, cl).is_nan());
    for t in 0..set.times.len() {
        for c in [cu, cl] {
            let (h, l, close, v) = (
                get(Field::High, t, c),
                get(Field::Low, t, c),
                get(Field::Close, t, c),
                get(Field::Volume, t, c),
            );
            if close.is_nan() {
                continue;
            }
            assert!((get(Field::Vwap, t, c) - (h + l + close) / 3.0).abs() < 1e-9);
            assert_eq!(get(Field::DollarVolume, t, c), close * v);
            let r = get(Field::Returns, t, c);
            if r.is_finite() {
                assert!((get(Field::LogReturns, t, c) - r.ln_1p()).abs() < 1e-12);
            }
        }
    }
    // The return after a holiday is measured from the symbol's previous bar, not lost.
    let after = set
        .times
        .iter()
        .position(|t| *t == day("2020-02-03"))
        .unwrap_or(0);
    assert!(get(Field::Returns, after, cu).is_finite());
}
