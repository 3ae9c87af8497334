//! JSON for numbers that may be NaN or infinite.
//!
//! JSON has no NaN and no infinity, and serde_json writes both as `null`, which a plain `f64`
//! refuses to read back. Metrics are NaN when a part of the data had no active bar (no
//! trades) and infinite when a ratio divides by zero (a Calmar ratio without a drawdown), so
//! every `f64` that reaches the journal, a report or `--json` goes through this module:
//! a finite number is written as itself, NaN as `null`, and the infinities as the strings
//! `"inf"` and `"-inf"`; all four read back to what was written. Older journals, which hold
//! `null` for every non-finite number, read back as NaN.
//!
//! Use it as `#[serde(with = "lim_backtest::nonfinite")]` on an `f64` field.

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `v`: a number, `null` (NaN), `"inf"` or `"-inf"`.
///
/// # Errors
/// Those of the serializer.
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_none()
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Text(String),
}

/// Reads a number, `null` (as NaN), or one of `"nan"`, `"inf"`, `"-inf"` (any case; also
/// `"infinity"`).
///
/// # Errors
/// Anything else, naming what was found.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Option::<Repr>::deserialize(d)? {
        None => Ok(f64::NAN),
        Some(Repr::Number(v)) => Ok(v),
        Some(Repr::Text(t)) => match t.to_ascii_lowercase().as_str() {
            "nan" => Ok(f64::NAN),
            "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(serde::de::Error::custom(format!(
                "'{t}' is not a number; expected a number, null (NaN), \"inf\" or \"-inf\""
            ))),
        },
    }
}

/// The same for a list of `(key, value)` pairs, e.g. IC by horizon:
/// `#[serde(with = "lim_backtest::nonfinite::pairs")]` on a `Vec<(usize, f64)>`.
pub mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Pair(usize, #[serde(with = "super")] f64);

    /// Writes the pairs as two-element arrays.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(v: &[(usize, f64)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&(k, x)| Pair(k, x)))
    }

    /// Reads what [`serialize`] wrote.
    ///
    /// # Errors
    /// Anything else.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(usize, f64)>, D::Error> {
        Ok(Vec::<Pair>::deserialize(d)?
            .into_iter()
            .map(|Pair(k, x)| (k, x))
            .collect())
    }
}

/// A number for people: `places` decimals when finite, otherwise `missing` for NaN (say,
/// "no trades") and `∞` / `-∞` for the infinities.
pub fn show(v: f64, places: usize, missing: &str) -> String {
    if v.is_finite() {
        format!("{v:.places$}")
    } else if v.is_nan() {
        missing.to_string()
    } else if v > 0.0 {
        "∞".to_string()
    } else {
        "-∞".to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct X {
        #[serde(with = "super")]
        v: f64,
    }

    fn round_trip(v: f64) -> f64 {
        let text = serde_json::to_string(&X { v }).unwrap_or_default();
        let back: X = serde_json::from_str(&text).unwrap_or(X { v: 12345.0 });
        // Through a `Value` too: the journal stores artifacts as values.
        let value = serde_json::to_value(X { v }).unwrap_or_default();
        let again: X = serde_json::from_value(value).unwrap_or(X { v: 54321.0 });
        assert_eq!(
            back.v.to_bits(),
            again.v.to_bits(),
            "{v}: text and value differ"
        );
        back.v
    }

    #[test]
    fn every_kind_of_number_round_trips() {
        for v in [0.0, -0.0, 1.5, -2.25e-300, f64::MAX, f64::MIN_POSITIVE] {
            assert_eq!(round_trip(v).to_bits(), v.to_bits(), "{v}");
        }
        assert!(round_trip(f64::NAN).is_nan());
        assert_eq!(round_trip(f64::INFINITY), f64::INFINITY);
        assert_eq!(round_trip(f64::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn old_nulls_read_as_nan_and_junk_is_named() {
        let x: Result<X, _> = serde_json::from_str(r#"{"v": null}"#);
        assert!(x.is_ok_and(|x| x.v.is_nan()));
        let e = serde_json::from_str::<X>(r#"{"v": "lots"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("'lots' is not a number"), "{e}");
    }

    #[test]
    fn shown_for_people() {
        assert_eq!(super::show(0.123, 2, "no trades"), "0.12");
        assert_eq!(super::show(f64::NAN, 2, "no trades"), "no trades");
        assert_eq!(super::show(f64::NEG_INFINITY, 2, "-"), "-∞");
    }
}
