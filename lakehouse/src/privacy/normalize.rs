//! Normalizations applied before pseudonymizing, so that two notations of one identifier give one pseudonym.
//! The checks say what is wrong without repeating the value (it is personal data).

use crate::manifest::PhoneCountry;

/// Writes the E.164 form (`+33612345678`) of a phone number into `out`. Accepted: digits, spaces, `.`, `-`, `/`,
/// parentheses and a leading `+`; `(0)` after a calling code is dropped. A number starting with `+` or `00` is
/// international; one starting with the country's trunk prefix (`0` in France) is national; any other is
/// taken as a national number without its trunk prefix. Without `country`, only international numbers pass.
pub fn phone(value: &str, country: Option<&PhoneCountry>, out: &mut String) -> Result<(), String> {
    let v = value.trim();
    if let Some(c) = v.chars().find(|c| !(c.is_ascii_digit() || " .-/()+\u{a0}\u{202f}".contains(*c))) {
        let what = if c.is_alphabetic() { "a letter" } else { "a character other than digits, spaces, . - / ( ) +" };
        return Err(format!("not a phone number: it holds {what}"));
    }
    if v.char_indices().any(|(i, c)| c == '+' && i > 0) {
        return Err("not a phone number: `+` only at the start".into());
    }
    let international = v.starts_with('+');
    let digits: String = v.replace("(0)", "").chars().filter(char::is_ascii_digit).collect();
    out.clear();
    out.push('+');
    if international {
        out.push_str(&digits);
    } else if let Some(rest) = digits.strip_prefix("00") {
        out.push_str(rest);
    } else {
        let Some(country) = country else {
            return Err("a national phone number, and no `privacy.phone_country` to read it with".into());
        };
        out.push_str(country.calling_code());
        match country.trunk_prefix().and_then(|t| digits.strip_prefix(t)) {
            Some(national) => out.push_str(national),
            None => out.push_str(&digits),
        }
    }
    // E.164: at most 15 digits; fewer than 8 is no subscriber number anywhere.
    let n = out.len() - 1;
    if !(8..=15).contains(&n) {
        return Err(format!("not a phone number: {n} digits in international form (8 to 15 expected)"));
    }
    Ok(())
}

/// Writes an e-mail address trimmed and lower-cased into `out`; it must have one `@` between two non-empty parts
/// and no space.
pub fn email(value: &str, out: &mut String) -> Result<(), String> {
    let v = value.trim();
    match v.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {}
        _ => return Err("not an e-mail address: one `@` between a name and a domain expected".into()),
    }
    if v.chars().any(char::is_whitespace) {
        return Err("not an e-mail address: it holds a space".into());
    }
    out.clear();
    out.extend(v.chars().flat_map(char::to_lowercase));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr() -> PhoneCountry {
        PhoneCountry::try_from("FR".to_string()).unwrap()
    }

    #[test]
    fn french_notations_of_one_number_are_one_e164_number() {
        let mut out = String::new();
        for v in [
            "06 12 34 56 78",
            "+33 6 12 34 56 78",
            "+33 (0)6 12 34 56 78",
            "0033612345678",
            "06.12.34.56.78",
            "06-12-34-56-78",
            " 0612345678 ",
            "612345678",
        ] {
            phone(v, Some(&fr()), &mut out).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(out, "+33612345678", "{v}");
        }
        // Another country's number keeps its own calling code; a trunk-less country keeps its leading 0.
        phone("+32 2 123 45 67", Some(&fr()), &mut out).unwrap();
        assert_eq!(out, "+3221234567");
        let it = PhoneCountry::try_from("it".to_string()).unwrap();
        phone("06 1234 5678", Some(&it), &mut out).unwrap();
        assert_eq!(out, "+390612345678");
    }

    #[test]
    fn what_is_not_a_phone_number_is_refused_without_the_value() {
        let mut out = String::new();
        for (v, why) in [
            ("n/a", "letter"),
            ("06 12 34", "digits in international form"),
            ("06 12 34 56 78 90 12 34 56", "digits in international form"),
            ("06+12345678", "`+` only at the start"),
            ("06 12 34 56 78 #2", "a character other than"),
        ] {
            let e = phone(v, Some(&fr()), &mut out).unwrap_err();
            assert!(e.contains(why) && !e.contains(v), "{v}: {e}");
        }
        assert!(phone("0612345678", None, &mut out).unwrap_err().contains("phone_country"));
        phone("+33612345678", None, &mut out).unwrap();
    }

    #[test]
    fn email_addresses_are_trimmed_and_lower_cased() {
        let mut out = String::new();
        email(" Jean.Dupont@Mairie-Marseille.FR ", &mut out).unwrap();
        assert_eq!(out, "jean.dupont@mairie-marseille.fr");
        for bad in ["jean.dupont", "@mairie.fr", "jean@", "a@b@c", "jean dupont@mairie.fr"] {
            assert!(email(bad, &mut out).is_err(), "{bad}");
        }
    }
}
