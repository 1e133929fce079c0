//! Declarative documents: a [`Spec`] in YAML, TOML or JSON.

use std::path::Path;

use crate::Spec;
use crate::error::ControlError;

/// A document format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (`.yaml`, `.yml`; also what standard input is read as).
    Yaml,
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format a file name's extension says; YAML otherwise.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Format::Toml,
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Parses a document; unknown fields and bad values are errors naming the
/// offending field's path. The result is also [validated](Spec::validate).
///
/// # Errors
/// [`ControlError::Parse`] or [`ControlError::Invalid`].
pub fn parse(text: &str, format: Format, what: &str) -> Result<Spec, ControlError> {
    let spec = parse_unchecked(text, format, what)?;
    spec.validate()?;
    Ok(spec)
}

/// As [`parse`], without [validating](Spec::validate) (for one part of a
/// description spread over several files, checked once merged).
///
/// # Errors
/// [`ControlError::Parse`].
pub fn parse_unchecked(text: &str, format: Format, what: &str) -> Result<Spec, ControlError> {
    use crate::store::parse_error;
    let spec: Spec = match format {
        Format::Yaml => {
            if text.trim().is_empty() {
                Spec::default()
            } else {
                let de = serde_yaml_ng::Deserializer::from_str(text);
                serde_path_to_error::deserialize(de).map_err(|e| parse_error(what, &e))?
            }
        }
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| ControlError::Parse {
                what: what.to_owned(),
                message: e.to_string(),
            })?;
            serde_path_to_error::deserialize(de).map_err(|e| parse_error(what, &e))?
        }
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| parse_error(what, &e))?
        }
    };
    Ok(spec)
}

/// Writes a document.
pub fn render(spec: &Spec, format: Format) -> String {
    match format {
        Format::Yaml => serde_yaml_ng::to_string(spec).expect("a spec serializes"),
        Format::Toml => toml::to_string_pretty(spec).expect("a spec serializes"),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(spec).expect("a spec serializes");
            s.push('\n');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
plans:
  free:
    limits:
      - {name: rps, rate: 10, window: 1s, burst: 20}
    quotas:
      - {name: daily, rate: 10000, window: 1d}
tenants:
  acme: {plan: free, display_name: Acme}
";

    #[test]
    fn round_trips_in_every_format() {
        let spec = parse(YAML, Format::Yaml, "t").unwrap();
        assert_eq!(spec.plans["free"].limits[0].burst, Some(20));
        for f in [Format::Yaml, Format::Toml, Format::Json] {
            assert_eq!(parse(&render(&spec, f), f, "t").unwrap(), spec, "{f:?}");
        }
    }

    #[test]
    fn errors_name_the_offending_field() {
        let e = parse(&YAML.replace("burst: 20", "bursts: 20"), Format::Yaml, "t").unwrap_err();
        assert!(e.to_string().contains("plans.free.limits[0]"), "{e}");
        assert!(e.to_string().contains("bursts"), "{e}");
        let e = parse(&YAML.replace("rate: 10,", "rate: 0,"), Format::Yaml, "t").unwrap_err();
        assert!(e.to_string().contains("plans.free.limits[0].rate"), "{e}");
        let e = parse(&YAML.replace("plan: free", "plan: gold"), Format::Yaml, "t").unwrap_err();
        assert!(e.to_string().contains("tenants.acme.plan"), "{e}");
        let e = parse(&YAML.replace("window: 1d", "window: 1w"), Format::Yaml, "t").unwrap_err();
        assert!(e.to_string().contains("plans.free.quotas[0].window"), "{e}");
        let e = parse("[plans.free]\nlimits = 3\n", Format::Toml, "t").unwrap_err();
        assert!(e.to_string().contains("plans.free.limits"), "{e}");
        let e = parse(
            "tenants:\n  a: {plan: free}\n  a: {plan: free}\n",
            Format::Yaml,
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        let e = parse(r#"{"plans": {"free": {}, "free": {}}}"#, Format::Json, "t").unwrap_err();
        assert!(e.to_string().contains("duplicate id `free`"), "{e}");
        let e = parse("{\"schema\": 2}", Format::Json, "t").unwrap_err();
        assert!(e.to_string().contains("schema"), "{e}");
    }
}
