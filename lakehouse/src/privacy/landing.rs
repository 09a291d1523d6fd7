//! Pseudonymization at landing: each value of a `pii: direct` column is replaced, as its record is parsed and
//! before anything is written, by its keyed pseudonym (lowercase hex HMAC-SHA-256 of the normalized value), with
//! the key id in the column beside it (`<column>_key_id`). The format readers feed it values; nothing else of
//! the clear value is kept.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};

use super::{Key, Pseudonymizer};
use crate::manifest::{Normalize, PhoneCountry};

/// The two bronze columns of a pseudonymized identifier, built row by row.
pub struct PseudonymColumn {
    values: StringBuilder,
    pseudonymizer: Pseudonymizer,
    hex: String,
}

impl PseudonymColumn {
    pub fn new(key: &Key, normalize: Normalize, phone_country: Option<PhoneCountry>) -> Self {
        Self {
            values: StringBuilder::new(),
            pseudonymizer: Pseudonymizer::new(key, normalize, phone_country),
            hex: String::with_capacity(64),
        }
    }

    /// Appends the pseudonym of `value`; null when there is no value or nothing is left after normalization.
    pub fn append(&mut self, value: Option<&str>) {
        if value.is_none_or(|v| self.push(v).is_err()) {
            self.values.append_null();
        }
    }

    /// Appends the pseudonym of `value` (null when nothing is left after normalization), normalizing it once;
    /// when it is not what its normalization reads, appends nothing and says why (never with the value).
    pub fn push(&mut self, value: &str) -> Result<(), String> {
        match self.pseudonymizer.digest(value)? {
            Some(d) => self.values.append_value(super::pseudonym::hex(&d, &mut [0; 64])),
            None => self.values.append_null(),
        }
        Ok(())
    }

    /// The pseudonym `value` would be appended as (None: nothing is left after normalization), for comparing
    /// keys before the row is appended.
    pub fn token(&mut self, value: &str) -> Option<&str> {
        self.pseudonymizer.pseudonym_into(value, &mut self.hex).then_some(self.hex.as_str())
    }

    /// The pseudonyms and their key ids (the key's id where there is a pseudonym) since the last call; the
    /// builder restarts with room for `rows` rows.
    pub fn finish(&mut self, rows: usize) -> [ArrayRef; 2] {
        let values = std::mem::replace(&mut self.values, StringBuilder::with_capacity(rows, rows * 64)).finish();
        let key_ids =
            crate::format::constant_string(self.pseudonymizer.key_id(), values.len(), values.nulls().cloned());
        [Arc::new(values), key_ids]
    }
}
