//! The pure half of a posture lookup: which id a device has (from its certificate or its
//! MAC), and what a source's JSON answer says about it. Nothing here does I/O.
//!
//! Identity safety: an answer counts only when it is about the device asked for. A list
//! endpoint must come back with exactly one result, and that record's id fields must equal
//! the ids asked for: MDM list endpoints are known to ignore filters and return every
//! device, and taking the first would give one device another's compliance.

use serde_json::Value;

use super::settings::{BoolFact, Extractor, FactMap, IdFrom, Step};
use crate::pki::facts::CertFacts;
use crate::policy::Posture;

/// Longest device id, or value saved from one step for the next, put into a URL.
pub const MAX_ID: usize = 256;
/// Longest text fact kept from an answer (`os`, `os_version`, extra facts).
pub const MAX_TEXT: usize = 256;

/// A device's id for one source, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId {
    /// The extractor that yielded it.
    pub from: &'static str,
    /// The id.
    pub id: String,
}

/// The first id the extractors yield, in order: a value (its prefix stripped, values
/// without it skipped) that matches the extractor's pattern in full.
pub fn device_id(
    extractors: &[Extractor],
    cert: &CertFacts,
    calling_station: Option<&str>,
) -> Option<DeviceId> {
    for e in extractors {
        let values: Vec<&str> = match e.from {
            IdFrom::SanUri => cert.san.uri.iter().map(String::as_str).collect(),
            IdFrom::SanDns => cert.san.dns.iter().map(String::as_str).collect(),
            IdFrom::SanUpn => cert.san.upn.iter().map(String::as_str).collect(),
            IdFrom::Cn => cert.subject_cn.iter().map(String::as_str).collect(),
            IdFrom::Serial => vec![cert.serial.as_str()],
            IdFrom::CallingStation => calling_station.into_iter().collect(),
        };
        for v in values {
            let Some(rest) = strip_prefix_ignore_case(v, &e.prefix) else {
                continue;
            };
            if !rest.is_empty() && rest.len() <= MAX_ID && e.pattern.is_match(rest) {
                return Some(DeviceId {
                    from: e.from.label(),
                    id: rest.to_owned(),
                });
            }
        }
    }
    None
}

fn strip_prefix_ignore_case<'a>(v: &'a str, prefix: &str) -> Option<&'a str> {
    let head = v.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| v.get(prefix.len()..))
        .flatten()
}

/// What one step's answer gave.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome<'a> {
    /// The device's record.
    Record(&'a Value),
    /// The source does not know the device (no single record, or one about another id).
    Unknown(String),
}

/// The one record in `body` for this step: the body itself, or the single element of its
/// `results` array; checked against the step's `matches` with the values in `vars`
/// (ASCII case ignored when the source's ids are of a case-insensitive format).
///
/// # Errors
/// The body does not have the shape the step expects (no array at `results`).
pub fn record_of<'a>(
    step: &Step,
    body: &'a Value,
    vars: &dyn Fn(&str) -> Option<String>,
    fold_case: bool,
) -> Result<StepOutcome<'a>, String> {
    let record = match &step.results {
        None => body,
        Some(ptr) => {
            let Some(Value::Array(items)) = body.pointer(ptr) else {
                return Err(format!("no array at {ptr}"));
            };
            match items.as_slice() {
                [one] => one,
                [] => return Ok(StepOutcome::Unknown("no result".into())),
                many => {
                    return Ok(StepOutcome::Unknown(format!(
                        "{} results where exactly one was asked for (the source may ignore \
                         the filter)",
                        many.len()
                    )))
                }
            }
        }
    };
    for (ptr, expected) in &step.matches {
        let Some(expected) = expected.fill(vars, str::to_owned) else {
            return Err(format!("{ptr}: a placeholder without a value"));
        };
        match record.pointer(ptr).and_then(scalar) {
            Some(got) if got == expected || (fold_case && got.eq_ignore_ascii_case(&expected)) => {}
            Some(_) => {
                return Ok(StepOutcome::Unknown(format!(
                    "the record's {ptr} is another device's"
                )))
            }
            None => {
                return Ok(StepOutcome::Unknown(format!(
                    "the record has no {ptr} to check"
                )))
            }
        }
    }
    Ok(StepOutcome::Record(record))
}

/// A string, number or boolean as text; `None` for null, arrays, objects and absence.
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The posture facts in a device record.
///
/// # Errors
/// A mapped field holds the wrong kind of value (an object where a boolean was expected,
/// a time that does not parse): the source's answer has an unexpected shape.
pub fn posture_of(map: &FactMap, record: &Value) -> Result<Posture, String> {
    let get = |ptr: &String| record.pointer(ptr).filter(|v| !v.is_null());
    let shape = |ptr: &str, what: &str| format!("{ptr} is not {what}");
    let boolean = |f: &Option<BoolFact>| -> Result<Option<bool>, String> {
        let Some(f) = f else { return Ok(None) };
        match (get(&f.pointer), f.equals.is_empty()) {
            (None, _) => Ok(None),
            (Some(Value::Bool(b)), true) => Ok(Some(*b)),
            (Some(Value::String(s)), false) => {
                Ok(Some(f.equals.iter().any(|e| e.eq_ignore_ascii_case(s))))
            }
            (Some(_), true) => Err(shape(&f.pointer, "a boolean")),
            (Some(_), false) => Err(shape(&f.pointer, "a string")),
        }
    };
    let text = |p: &Option<String>| -> Result<Option<String>, String> {
        let Some(p) = p else { return Ok(None) };
        match get(p) {
            None => Ok(None),
            Some(v) => scalar(v)
                .map(|s| Some(cap(&s)))
                .ok_or_else(|| shape(p, "text")),
        }
    };
    let risk_score = match &map.risk_score {
        None => None,
        Some(p) => match get(p) {
            None => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| shape(p, "a number"))?,
            ),
            Some(_) => return Err(shape(p, "a number")),
        },
    };
    let last_seen = match &map.last_seen {
        None => None,
        Some(p) => match get(p) {
            None => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| shape(p, "Unix seconds"))?),
            Some(Value::String(s)) => Some(
                s.parse::<jiff::Timestamp>()
                    .map_err(|_| shape(p, "an RFC 3339 time"))?
                    .as_second(),
            ),
            Some(_) => return Err(shape(p, "a time")),
        },
    };
    let mut extra = Vec::new();
    for (name, p) in &map.extra {
        if let Some(v) = text(&Some(p.clone()))? {
            extra.push((name.clone(), v));
        }
    }
    Ok(Posture {
        compliant: boolean(&map.compliant)?,
        managed: boolean(&map.managed)?,
        risk_score,
        os: text(&map.os)?,
        os_version: text(&map.os_version)?,
        last_seen,
        extra,
    })
}

/// At most [`MAX_TEXT`] characters.
fn cap(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

#[cfg(test)]
mod tests {
    use regex::Regex;
    use serde_json::json;

    use super::*;
    use crate::posture::settings::Template;

    fn extractor(from: IdFrom, prefix: &str, pattern: &str) -> Extractor {
        Extractor {
            from,
            prefix: prefix.into(),
            pattern: Regex::new(&format!("^(?:{pattern})$")).unwrap(),
            fold_case: false,
        }
    }

    const GUID: &str =
        "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

    #[test]
    fn the_first_extractor_that_yields_a_valid_id_wins() {
        let mut cert = CertFacts::default();
        cert.san.uri = vec![
            "https://example.com/x".into(),
            "IntuneDeviceId://not-a-guid/../x".into(),
            "intunedeviceid://0f6a2c1e-8f61-4a55-b0a9-2c7b3c1b7d10".into(),
        ];
        cert.subject_cn = vec!["laptop-1".into()];
        let list = [
            extractor(IdFrom::SanUri, "IntuneDeviceId://", GUID),
            extractor(IdFrom::Cn, "", "[a-z0-9-]+"),
        ];
        let id = device_id(&list, &cert, None).unwrap();
        assert_eq!(id.from, "san_uri");
        assert_eq!(id.id, "0f6a2c1e-8f61-4a55-b0a9-2c7b3c1b7d10");
        // Without the SAN, the CN; with neither valid, none.
        cert.san.uri.clear();
        assert_eq!(device_id(&list, &cert, None).unwrap().id, "laptop-1");
        cert.subject_cn = vec!["laptop 1/../admin".into()];
        assert_eq!(device_id(&list, &cert, None), None);
        let mac = [extractor(
            IdFrom::CallingStation,
            "",
            "[0-9A-F]{2}(-[0-9A-F]{2}){5}",
        )];
        assert_eq!(
            device_id(&mac, &cert, Some("02-00-00-00-00-01"))
                .unwrap()
                .id,
            "02-00-00-00-00-01"
        );
    }

    fn list_step() -> Step {
        Step {
            path: Template::parse("/devices?serial={id}").unwrap(),
            results: Some("/value".into()),
            matches: vec![("/serial".into(), Template::parse("{id}").unwrap())],
            save: Vec::new(),
        }
    }

    fn vars(id: &'static str) -> impl Fn(&str) -> Option<String> {
        move |n: &str| (n == "id").then(|| id.to_owned())
    }

    #[test]
    fn a_list_that_ignored_its_filter_is_an_unknown_device() {
        let every = json!({"value": [
            {"serial": "AAA", "compliant": true},
            {"serial": "BBB", "compliant": false},
        ]});
        let got = record_of(&list_step(), &every, &vars("BBB"), false).unwrap();
        assert!(matches!(got, StepOutcome::Unknown(why) if why.contains("2 results")));
        // One record, but another device's.
        let other = json!({"value": [{"serial": "AAA", "compliant": true}]});
        let got = record_of(&list_step(), &other, &vars("BBB"), false).unwrap();
        assert!(matches!(got, StepOutcome::Unknown(why) if why.contains("another device")));
        // None.
        let none = json!({"value": []});
        assert!(matches!(
            record_of(&list_step(), &none, &vars("BBB"), false).unwrap(),
            StepOutcome::Unknown(_)
        ));
        // The one that is this device's.
        let one = json!({"value": [{"serial": "BBB", "compliant": false}]});
        assert!(matches!(
            record_of(&list_step(), &one, &vars("BBB"), false).unwrap(),
            StepOutcome::Record(r) if r["serial"] == "BBB"
        ));
        // No array where one was expected: the answer's shape is wrong.
        assert!(record_of(&list_step(), &json!({"value": {}}), &vars("BBB"), false).is_err());
    }

    #[test]
    fn facts_map_from_the_record_and_a_wrong_shape_is_an_error() {
        let map = FactMap {
            compliant: Some(BoolFact {
                pointer: "/complianceState".into(),
                equals: vec!["compliant".into()],
            }),
            managed: Some(BoolFact {
                pointer: "/managed".into(),
                equals: Vec::new(),
            }),
            risk_score: Some("/score".into()),
            os: Some("/os".into()),
            os_version: None,
            last_seen: Some("/seen".into()),
            extra: vec![("encrypted".into(), "/isEncrypted".into())],
        };
        let r = json!({"complianceState": "Compliant", "managed": true, "score": "42",
                       "os": "Windows", "seen": "2026-01-07T12:00:00Z", "isEncrypted": true});
        let p = posture_of(&map, &r).unwrap();
        assert_eq!(p.compliant, Some(true));
        assert_eq!(p.managed, Some(true));
        assert_eq!(p.risk_score, Some(42.0));
        assert_eq!(p.os.as_deref(), Some("Windows"));
        assert_eq!(p.last_seen, Some(1_767_787_200));
        assert_eq!(p.extra, vec![("encrypted".into(), "true".into())]);
        let p = posture_of(&map, &json!({"complianceState": "noncompliant"})).unwrap();
        assert_eq!(p.compliant, Some(false));
        assert_eq!(p.managed, None);
        for bad in [
            json!({"complianceState": {"x": 1}}),
            json!({"managed": "yes"}),
            json!({"score": "high"}),
            json!({"seen": "yesterday"}),
            json!({"os": ["Windows"]}),
        ] {
            assert!(posture_of(&map, &bad).is_err(), "{bad}");
        }
    }
}
