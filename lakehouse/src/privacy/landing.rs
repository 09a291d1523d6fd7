//! Pseudonymization at landing: each value of a `pii: direct` column is replaced, as its record is parsed and
//! before anything is written, by its keyed pseudonym (lowercase hex HMAC-SHA-256 of the normalized value), with
//! the key id in the column beside it (`<column>_key_id`). The format readers feed it values; nothing else of
//! the clear value is kept.

use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{Array, ArrayRef, StringArray};
use arrow::buffer::OffsetBuffer;

use super::{Key, Pseudonymizer};
use crate::manifest::{Normalize, PhoneCountry};

/// The two bronze columns of a pseudonymized identifier, built row by row.
pub struct PseudonymColumn {
    /// The pseudonyms' hex digits one after the other, where each ends, and which rows have none: the string
    /// array they make is checked for UTF-8 once, when it is built, not value by value.
    digits: Vec<u8>,
    ends: Vec<i32>,
    nulls: NullBufferBuilder,
    pseudonymizer: Pseudonymizer,
    hex: String,
}

impl PseudonymColumn {
    pub fn new(key: &Key, normalize: Normalize, phone_country: Option<PhoneCountry>) -> Self {
        Self {
            digits: Vec::new(),
            ends: vec![0],
            nulls: NullBufferBuilder::new(0),
            pseudonymizer: Pseudonymizer::new(key, normalize, phone_country),
            hex: String::with_capacity(64),
        }
    }

    fn append_null(&mut self) {
        self.ends.push(self.end());
        self.nulls.append_null();
    }

    fn end(&self) -> i32 {
        i32::try_from(self.digits.len()).expect("a batch's pseudonyms take less than 2 GiB")
    }

    /// Appends the pseudonym of `value`; null when there is no value or nothing is left after normalization.
    pub fn append(&mut self, value: Option<&str>) {
        if value.is_none_or(|v| self.push(v).is_err()) {
            self.append_null();
        }
    }

    /// Appends the pseudonym of `value` (null when nothing is left after normalization), normalizing it once;
    /// when it is not what its normalization reads, appends nothing and says why (never with the value).
    pub fn push(&mut self, value: &str) -> Result<(), String> {
        match self.pseudonymizer.digest(value)? {
            Some(d) => {
                self.digits.extend_from_slice(&super::pseudonym::hex_digits(&d));
                self.ends.push(self.end());
                self.nulls.append_non_null();
            }
            None => self.append_null(),
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
        let digits = std::mem::replace(&mut self.digits, Vec::with_capacity(rows * 64));
        let mut ends = Vec::with_capacity(rows + 1);
        ends.push(0);
        let ends = OffsetBuffer::new(std::mem::replace(&mut self.ends, ends).into());
        let values = StringArray::try_new(ends, digits.into(), self.nulls.finish()).expect("hex digits are UTF-8");
        let key_ids =
            crate::format::constant_string(self.pseudonymizer.key_id(), values.len(), values.nulls().cloned());
        [Arc::new(values), key_ids]
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;

    use super::*;

    /// The column holds, row for row, what the pseudonymizer gives each value (the `pseudonymize` function's
    /// result), nulls where there is none, across batches; the key id beside each pseudonym.
    #[test]
    fn the_column_holds_each_values_pseudonym_batch_after_batch() {
        let key = Key { id: "police-1".into(), bytes: std::array::from_fn(|i| i as u8) };
        let mut column = PseudonymColumn::new(&key, Normalize::Casefold, None);
        let mut reference = Pseudonymizer::new(&key, Normalize::Casefold, None);
        let batches: [&[Option<&str>]; 2] = [
            &[Some("Dupont"), None, Some("  "), Some("ÉLODIE Σίσυφος"), Some(&"x".repeat(80))],
            &[Some("dupont "), Some("Ωmega")],
        ];
        for values in batches {
            for v in values {
                column.append(*v);
            }
            let [pseudonyms, key_ids] = column.finish(4);
            let (pseudonyms, key_ids) = (pseudonyms.as_string::<i32>(), key_ids.as_string::<i32>());
            assert_eq!(pseudonyms.len(), values.len());
            for (i, v) in values.iter().enumerate() {
                let mut expected = String::new();
                let has = v.is_some_and(|v| reference.pseudonym_into(v, &mut expected));
                assert_eq!(pseudonyms.is_valid(i), has, "row {i}");
                assert_eq!(key_ids.is_valid(i), has, "row {i}");
                if has {
                    assert_eq!(pseudonyms.value(i), expected, "row {i}");
                    assert_eq!(key_ids.value(i), "police-1");
                }
            }
        }
    }
}
