//! Pseudonymization at landing: each value of a `pii: direct` column is replaced, as its record is parsed and
//! before anything is written, by its keyed pseudonym (lowercase hex HMAC-SHA-256 of the normalized value), with
//! the key id in the column beside it (`<column>_key_id`). The format readers feed it values; nothing else of
//! the clear value is kept.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};

use super::{Key, Pseudonymizer};
use crate::manifest::{Normalize, PhoneCountry};

/// The two bronze columns of a pseudonymized identifier, built row by row.
pub struct PseudonymColumn {
    values: StringBuilder,
    key_ids: StringBuilder,
    pseudonymizer: Pseudonymizer,
    hex: String,
}

impl PseudonymColumn {
    pub fn new(key: &Key, normalize: Normalize, phone_country: Option<PhoneCountry>) -> Self {
        Self {
            values: StringBuilder::new(),
            key_ids: StringBuilder::new(),
            pseudonymizer: Pseudonymizer::new(key, normalize, phone_country),
            hex: String::with_capacity(64),
        }
    }

    /// Appends the pseudonym of `value`; null when there is no value or nothing is left after normalization.
    pub fn append(&mut self, value: Option<&str>) {
        match value {
            Some(v) if self.pseudonymizer.pseudonym_into(v, &mut self.hex) => {
                self.values.append_value(&self.hex);
                self.key_ids.append_value(self.pseudonymizer.key_id());
            }
            _ => {
                self.values.append_null();
                self.key_ids.append_null();
            }
        }
    }

    /// The pseudonym `value` would be appended as (None: nothing is left after normalization), for comparing
    /// keys before the row is appended.
    pub fn token(&mut self, value: &str) -> Option<&str> {
        self.pseudonymizer.pseudonym_into(value, &mut self.hex).then_some(self.hex.as_str())
    }

    /// The pseudonyms and their key ids since the last call; the builders restart with room for `rows` rows.
    pub fn finish(&mut self, rows: usize) -> [ArrayRef; 2] {
        let values = self.values.finish();
        let key_ids = self.key_ids.finish();
        self.values = StringBuilder::with_capacity(rows, rows * 64);
        self.key_ids = StringBuilder::with_capacity(rows, rows * self.pseudonymizer.key_id().len());
        [Arc::new(values), Arc::new(key_ids)]
    }
}
