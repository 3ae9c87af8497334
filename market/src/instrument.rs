//! What an instrument is: its asset class, exchange and trading session.
//!
//! The exchange comes from the symbol's prefix (`SHFE:CU0` → `SHFE`) when it has one, else from
//! the dataset's sidecar manifest, else from the symbol's form (`CL=F` is a Yahoo futures
//! ticker), else from the file name. The session tells the resampler where a trading day and
//! its hours begin.

use serde::{Deserialize, Serialize};

/// Broad kind of instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetClass {
    /// Shares and exchange-traded funds.
    Equity,
    /// Futures, including continuous main-contract series.
    Futures,
    /// Equity indices (not directly tradable).
    Index,
    /// Cryptocurrency pairs.
    Crypto,
    /// Currency pairs.
    Fx,
    /// Not known.
    Unknown,
}

impl AssetClass {
    /// Lowercase name as used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetClass::Equity => "equity",
            AssetClass::Futures => "futures",
            AssetClass::Index => "index",
            AssetClass::Crypto => "crypto",
            AssetClass::Fx => "fx",
            AssetClass::Unknown => "unknown",
        }
    }
}

/// Where a trading day starts, in exchange-local time, and its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    /// Minutes to add to UTC to get exchange-local time (IST is +330).
    pub utc_offset_minutes: i32,
    /// Local minutes after midnight at which the session opens (09:15 is 555).
    pub open_minute: u32,
}

impl Session {
    /// A market trading around the clock on UTC days (crypto, FX as stored here).
    pub const UTC: Session = Session {
        utc_offset_minutes: 0,
        open_minute: 0,
    };
}

/// One instrument of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Instrument {
    /// The symbol exactly as in the file.
    pub symbol: String,
    /// Exchange or venue code, when known.
    pub exchange: Option<String>,
    /// Broad kind.
    pub asset_class: AssetClass,
}

/// Dataset-level facts that the file itself cannot carry, read from `<stem>.meta.json`
/// beside the data file. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Asset class of every symbol without a more specific one.
    pub asset_class: Option<AssetClass>,
    /// Exchange of every symbol without a prefix.
    pub exchange: Option<String>,
    /// Session override for resampling.
    pub session: Option<Session>,
    /// Free text shown by `lim data show`.
    pub description: Option<String>,
}

struct KnownExchange {
    code: &'static str,
    class: AssetClass,
    session: Session,
}

const CN_FUTURES: Session = Session {
    utc_offset_minutes: 480,
    open_minute: 9 * 60,
};

const KNOWN: &[KnownExchange] = &[
    KnownExchange {
        code: "SHFE",
        class: AssetClass::Futures,
        session: CN_FUTURES,
    },
    KnownExchange {
        code: "INE",
        class: AssetClass::Futures,
        session: CN_FUTURES,
    },
    KnownExchange {
        code: "DCE",
        class: AssetClass::Futures,
        session: CN_FUTURES,
    },
    KnownExchange {
        code: "CZCE",
        class: AssetClass::Futures,
        session: CN_FUTURES,
    },
    KnownExchange {
        code: "GFEX",
        class: AssetClass::Futures,
        session: CN_FUTURES,
    },
    KnownExchange {
        code: "CFFEX",
        class: AssetClass::Futures,
        session: CN_FUTURES,
    },
    KnownExchange {
        code: "NSE",
        class: AssetClass::Equity,
        session: Session {
            utc_offset_minutes: 330,
            open_minute: 9 * 60 + 15,
        },
    },
    KnownExchange {
        code: "BSE",
        class: AssetClass::Equity,
        session: Session {
            utc_offset_minutes: 330,
            open_minute: 9 * 60 + 15,
        },
    },
    KnownExchange {
        code: "BINANCE",
        class: AssetClass::Crypto,
        session: Session::UTC,
    },
    KnownExchange {
        code: "GEMINI",
        class: AssetClass::Crypto,
        session: Session::UTC,
    },
    KnownExchange {
        code: "COINBASE",
        class: AssetClass::Crypto,
        session: Session::UTC,
    },
    KnownExchange {
        code: "ARCH",
        class: AssetClass::Index,
        session: Session {
            utc_offset_minutes: -300,
            open_minute: 9 * 60 + 30,
        },
    },
];

/// The hints a file name gives, e.g. `us_futures_daily` → futures.
fn class_from_file_name(name: &str) -> AssetClass {
    let n = name.to_ascii_lowercase();
    if n.contains("future") {
        AssetClass::Futures
    } else if n.contains("crypto") {
        AssetClass::Crypto
    } else if n.contains("indice") || n.contains("index") {
        AssetClass::Index
    } else if n.contains("fx") || n.contains("forex") {
        AssetClass::Fx
    } else if n.contains("equit") || n.contains("etf") || n.contains("stock") {
        AssetClass::Equity
    } else {
        AssetClass::Unknown
    }
}

/// Classifies a symbol of a dataset.
pub fn classify(symbol: &str, dataset: &str, manifest: Option<&Manifest>) -> Instrument {
    let prefix = symbol.split_once(':').map(|(p, _)| p);
    let known = prefix.and_then(|p| KNOWN.iter().find(|k| k.code == p));
    let exchange = prefix
        .map(str::to_string)
        .or_else(|| manifest.and_then(|m| m.exchange.clone()));
    let asset_class = if let Some(k) = known {
        k.class
    } else if let Some(c) = manifest.and_then(|m| m.asset_class) {
        c
    } else if symbol.ends_with("=F") {
        AssetClass::Futures
    } else if symbol.ends_with("=X") {
        AssetClass::Fx
    } else {
        class_from_file_name(dataset)
    };
    Instrument {
        symbol: symbol.to_string(),
        exchange,
        asset_class,
    }
}

/// The session used to resample an instrument's bars.
pub fn session_of(instrument: &Instrument, manifest: Option<&Manifest>) -> Session {
    if let Some(s) = manifest.and_then(|m| m.session) {
        return s;
    }
    instrument
        .exchange
        .as_deref()
        .and_then(|e| KNOWN.iter().find(|k| k.code == e))
        .map(|k| k.session)
        .unwrap_or(Session::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_suffixes_and_file_names_classify() {
        let cu = classify("SHFE:CU0", "cn_futures_daily", None);
        assert_eq!(
            (cu.exchange.as_deref(), cu.asset_class),
            (Some("SHFE"), AssetClass::Futures)
        );
        assert_eq!(
            classify("CL=F", "us_futures_daily", None).asset_class,
            AssetClass::Futures
        );
        assert_eq!(
            classify("AAPL", "us_equities_daily_adjusted", None).asset_class,
            AssetClass::Equity
        );
        assert_eq!(
            classify("BINANCE:BTCUSDT", "x", None).asset_class,
            AssetClass::Crypto
        );
        let m = Manifest {
            asset_class: Some(AssetClass::Index),
            exchange: Some("XNYS".into()),
            ..Manifest::default()
        };
        let spx = classify("SPX", "misc", Some(&m));
        assert_eq!(
            (spx.exchange.as_deref(), spx.asset_class),
            (Some("XNYS"), AssetClass::Index)
        );
        let nse = classify("NSE:RELIANCE", "in_equities_5min", None);
        assert_eq!(session_of(&nse, None).open_minute, 555);
    }
}
