//! `[[posture.source]]` validated into [`PostureSettings`]: every error with its line, the
//! secrets read from their files, the lookup's steps checked so that its answer is always
//! proved to be about the device asked for.

use std::collections::BTreeSet;
use std::time::Duration;

use regex::RegexBuilder;
use reqwest::Url;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use toml::Spanned;
use zeroize::Zeroizing;

use super::{raw, ConfigError, Ctx};
use crate::posture::settings::{
    Auth, BoolFact, Extractor, FactMap, IdFrom, Poll, PostureSettings, Secret, SourceSettings,
    Step, Template, Webhook, WebhookAuth, PATTERNS,
};

/// The system's CA bundle (Debian), used for HTTPS sources without `ca_file`.
pub(super) const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Names a source may not take: the policy reads `posture.<fact>` across sources, so a
/// source named like a fact would be ambiguous.
const RESERVED: [&str; 9] = [
    "compliant",
    "managed",
    "risk_score",
    "os",
    "os_version",
    "last_seen_age",
    "unavailable",
    "unknown_device",
    "extra",
];

pub(super) fn posture_settings(
    ctx: &mut Ctx<'_>,
    raw: &raw::RawPosture,
) -> Option<PostureSettings> {
    let mut names = BTreeSet::new();
    let mut sources = Vec::new();
    for (i, s) in raw.source.iter().enumerate() {
        let name = s.get_ref().name.get_ref().clone();
        let key = format!("posture.source[{i}]");
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            ctx.err(
                s.get_ref().name.span(),
                format!("{key}.name"),
                "a name of 1..=32 letters, digits, `_` or `-`",
            );
        } else if RESERVED.contains(&name.as_str()) {
            ctx.err(
                s.get_ref().name.span(),
                format!("{key}.name"),
                format!("`{name}` is a posture fact's name; the policy could not tell them apart"),
            );
        } else if !names.insert(name.clone()) {
            ctx.err(
                s.get_ref().name.span(),
                format!("{key}.name"),
                format!("a second source named `{name}`"),
            );
        }
        if let Some(built) = source(ctx, s, &format!("posture.source.{name}")) {
            sources.push(built);
        }
    }
    Some(PostureSettings { sources })
}

fn pointer(ctx: &mut Ctx<'_>, span: std::ops::Range<usize>, key: &str, p: &str) -> String {
    if !(p.is_empty() || p.starts_with('/')) {
        ctx.err(
            span,
            key,
            format!("`{p}` is not a JSON pointer (RFC 6901: empty, or starting with `/`)"),
        );
    }
    p.to_owned()
}

/// A secret from the file `f` names (trailing whitespace dropped); an error if it cannot be
/// read or is empty.
pub(super) fn secret(ctx: &mut Ctx<'_>, f: &Spanned<String>, key: &str) -> Secret {
    match ctx.read_secret(f, key) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            if text.is_empty() {
                ctx.err(f.span(), key, format!("{} is empty", f.get_ref()));
            }
            Secret(Zeroizing::new(text))
        }
        Err(e) => {
            ctx.err(f.span(), key, format!("cannot read {}: {e}", f.get_ref()));
            Secret(Zeroizing::new(String::new()))
        }
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one key after the other, in the order of the file"
)]
fn source(ctx: &mut Ctx<'_>, s: &Spanned<raw::RawSource>, key: &str) -> Option<SourceSettings> {
    let span = s.span();
    let s = s.get_ref();
    let before = ctx.errors.len();
    let base = match Url::parse(s.url.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            cleartext(ctx, &u, s.url.span(), &format!("{key}.url"));
            Some(u)
        }
        _ => {
            ctx.err(
                s.url.span(),
                format!("{key}.url"),
                format!("`{}` is not an http(s) URL", s.url.get_ref()),
            );
            None
        }
    };

    let mut identity = Vec::new();
    if s.identity.is_empty() {
        ctx.err(
            span.clone(),
            format!("{key}.identity"),
            "at least one extractor is needed",
        );
    }
    for (i, e) in s.identity.iter().enumerate() {
        let k = format!("{key}.identity[{i}]");
        let e = e.get_ref();
        let from = match e.from.get_ref().as_str() {
            "san_uri" => IdFrom::SanUri,
            "san_dns" => IdFrom::SanDns,
            "san_upn" => IdFrom::SanUpn,
            "cn" => IdFrom::Cn,
            "serial" => IdFrom::Serial,
            "calling_station" => IdFrom::CallingStation,
            other => {
                ctx.err(
                    e.from.span(),
                    format!("{k}.from"),
                    format!(
                        "`{other}`: one of san_uri, san_dns, san_upn, cn, serial, calling_station"
                    ),
                );
                continue;
            }
        };
        if from == IdFrom::CallingStation {
            let line = ctx.line_of(e.from.span());
            ctx.warnings.push(ConfigError {
                file: ctx.file.to_path_buf(),
                line,
                key: k.clone(),
                message: "a device chooses its own MAC: one that spoofs a compliant device's \
                          MAC gets that device's posture; take ids from the certificate \
                          (san_uri, san_dns, san_upn, cn, serial) wherever the source has them"
                    .into(),
            });
        }
        let text = e.pattern.get_ref();
        let pattern = PATTERNS
            .iter()
            .find(|(n, _)| n == text)
            .map_or(text.as_str(), |(_, p)| p);
        match RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
        {
            Ok(pattern) => identity.push(Extractor {
                from,
                prefix: e.prefix.clone(),
                pattern,
                fold_case: matches!(text.as_str(), "guid" | "hex" | "mac"),
            }),
            Err(err) => ctx.err(
                e.pattern.span(),
                format!("{k}.pattern"),
                format!("not a pattern name (guid, hex, mac, serial) or a regex: {err}"),
            ),
        }
    }

    // The steps: placeholders defined before use, and the last record proved to be the
    // device's (see `tied`).
    let mut steps = Vec::new();
    if s.step.is_empty() {
        ctx.err(
            span.clone(),
            format!("{key}.step"),
            "at least one [[…step]] is needed",
        );
    }
    let mut defined: BTreeSet<String> = BTreeSet::from(["id".to_owned()]);
    let mut tied: BTreeSet<String> = BTreeSet::from(["id".to_owned()]);
    for (i, st) in s.step.iter().enumerate() {
        let k = format!("{key}.step[{i}]");
        let st_span = st.span();
        let st = st.get_ref();
        let path = template(ctx, &st.path, &format!("{k}.path"), &defined, true);
        let results = st
            .results
            .as_ref()
            .map(|r| pointer(ctx, r.span(), &format!("{k}.results"), r.get_ref()));
        let mut matches = Vec::new();
        for (ptr, t) in &st.matches {
            let p = pointer(ctx, t.span(), &format!("{k}.match"), ptr);
            if let Some(t) = template(ctx, t, &format!("{k}.match.\"{ptr}\""), &defined, false) {
                matches.push((p, t));
            }
        }
        // This record is the device's when a field of it equals a value already proved to
        // be the device's; the values it is matched against then are too (its fields
        // equal the device's own).
        let record_tied = matches
            .iter()
            .any(|(_, t)| t.vars().next().is_some() && t.vars().all(|v| tied.contains(v)));
        if record_tied {
            for (_, t) in &matches {
                tied.extend(t.vars().map(str::to_owned));
            }
        }
        let mut save = Vec::new();
        for (name, ptr) in &st.save {
            if name == "id"
                || name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                ctx.err(
                    ptr.span(),
                    format!("{k}.save"),
                    format!("`{name}`: a placeholder name (letters, digits, _; not `id`)"),
                );
                continue;
            }
            let p = pointer(ctx, ptr.span(), &format!("{k}.save.{name}"), ptr.get_ref());
            if !defined.insert(name.clone()) {
                // Which of the two a placeholder meant would be a guess (and the check of
                // the records would count the other).
                ctx.err(
                    ptr.span(),
                    format!("{k}.save"),
                    format!("`{name}` is saved twice: give each saved value its own name"),
                );
                continue;
            }
            // A value saved from the device's record is not the device (a group, a
            // tenant): it is proved the device's only when a record proved to be the
            // device's is matched against it, as `{id}` is.
            save.push((name.clone(), p));
        }
        if let Some(path) = path {
            steps.push(Step {
                path,
                results,
                matches,
                save,
            });
        }
        if i + 1 == s.step.len() && !record_tied {
            ctx.err(
                st_span,
                format!("{k}.match"),
                "the last step's record is never checked against the device: add \
                 `match = { \"/<id field>\" = \"{id}\" }` (or a value an earlier checked \
                 record gave), or a list filter that is ignored would hand this device \
                 another's posture",
            );
        }
    }

    let facts = fact_map(
        ctx,
        s.facts.get_ref(),
        s.facts.span(),
        &format!("{key}.facts"),
    );
    let auth = match &s.auth {
        None => Auth::None,
        Some(a) => auth(ctx, a, &format!("{key}.auth"))?,
    };
    let headers: Vec<(String, String)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (h, v) in &headers {
        if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
            || h.eq_ignore_ascii_case("authorization")
        {
            ctx.err(
                span.clone(),
                format!("{key}.headers"),
                format!("`{h}` is not a header this may set (Authorization comes from auth)"),
            );
        }
    }
    // A NAS waits some 30 s for an answer; a lookup may be asked twice (see checks.rs).
    let timeout = ctx.bounded(&s.timeout_ms, &format!("{key}.timeout_ms"), 100..10_001);
    let fresh = ctx.bounded(&s.fresh_secs, &format!("{key}.fresh_secs"), 0..86_401);
    let max_stale = ctx.bounded(
        &s.max_stale_secs,
        &format!("{key}.max_stale_secs"),
        fresh.max(1)..604_801,
    );
    let cache_size = ctx.bounded(&s.cache_size, &format!("{key}.cache_size"), 1..10_000_001);
    let rate = ctx.bounded(&s.rate_per_sec, &format!("{key}.rate_per_sec"), 1..10_001);
    let burst = s
        .burst
        .as_ref()
        .map_or(rate, |b| ctx.bounded(b, &format!("{key}.burst"), 1..10_001));
    let roots = roots(ctx, s, key, base.as_ref());
    let poll = s
        .poll
        .as_ref()
        .and_then(|p| poll(ctx, p, &format!("{key}.poll")));
    let webhook = s
        .webhook
        .as_ref()
        .and_then(|w| webhook(ctx, w, &format!("{key}.webhook")));
    // A polled record is cached under its `id` field: the field a lookup's last step
    // checks against the device id, or a record could be cached as another device's.
    if let (Some(p), Some(raw_poll)) = (&poll, &s.poll) {
        let checked: Vec<&str> = steps
            .last()
            .map(|st| {
                st.matches
                    .iter()
                    .filter(|(_, t)| t.vars().eq(["id"]))
                    .map(|(ptr, _)| ptr.as_str())
                    .collect()
            })
            .unwrap_or_default();
        if !checked.contains(&p.id.as_str()) {
            ctx.err(
                raw_poll.get_ref().id.span(),
                format!("{key}.poll.id"),
                format!(
                    "`{}` is not a field the lookup checks against `{{id}}` ({}): polled \
                     records would be cached under ids no lookup proves",
                    p.id,
                    if checked.is_empty() {
                        "none".to_owned()
                    } else {
                        checked.join(", ")
                    }
                ),
            );
        }
    }
    // An event's record is checked against the device id it names by the last step's
    // id-only matches (the values earlier steps saved are not in an event).
    let checkable = steps.last().is_some_and(|st| {
        st.matches
            .iter()
            .any(|(_, t)| t.vars().next().is_some() && t.vars().all(|v| v == "id"))
    });
    if let (Some(w), false) = (&s.webhook, checkable) {
        ctx.err(
            w.span(),
            format!("{key}.webhook"),
            "events for this source cannot be checked against the device: its last step \
             matches no field against `{id}` alone",
        );
    }
    if ctx.errors.len() > before {
        return None;
    }
    #[allow(clippy::cast_precision_loss, reason = "rates are at most 10000")]
    Some(SourceSettings {
        name: s.name.get_ref().clone(),
        base: base?,
        identity,
        steps,
        facts,
        auth,
        headers,
        timeout: Duration::from_millis(timeout),
        fresh: Duration::from_secs(fresh),
        max_stale: Duration::from_secs(max_stale),
        cache_size,
        rate: rate as f64,
        burst: burst as f64,
        roots,
        poll,
        webhook,
    })
}

/// Warns about plain HTTP to a host other than this one: credentials and answers would
/// cross the network unprotected.
fn cleartext(ctx: &mut Ctx<'_>, u: &Url, span: std::ops::Range<usize>, key: &str) {
    let local = u.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    });
    if u.scheme() == "http" && !local {
        let line = ctx.line_of(span);
        ctx.warnings.push(ConfigError {
            file: ctx.file.to_path_buf(),
            line,
            key: key.to_owned(),
            message: "plain HTTP to another host: credentials and posture travel unprotected; \
                      use https"
                .into(),
        });
    }
}

/// A URL or match template whose placeholders are all `defined`.
fn template(
    ctx: &mut Ctx<'_>,
    t: &Spanned<String>,
    key: &str,
    defined: &BTreeSet<String>,
    path: bool,
) -> Option<Template> {
    if path && !t.get_ref().starts_with('/') {
        ctx.err(
            t.span(),
            key,
            "a path after the source's url, starting with `/`",
        );
        return None;
    }
    match Template::parse(t.get_ref()) {
        Ok(tpl) => {
            if let Some(v) = tpl.vars().find(|v| !defined.contains(*v)) {
                ctx.err(
                    t.span(),
                    key,
                    format!(
                        "`{{{v}}}` is neither the device `{{id}}` nor saved by an earlier step"
                    ),
                );
                return None;
            }
            Some(tpl)
        }
        Err(e) => {
            ctx.err(t.span(), key, e);
            None
        }
    }
}

fn fact_map(
    ctx: &mut Ctx<'_>,
    f: &raw::RawFacts,
    span: std::ops::Range<usize>,
    key: &str,
) -> FactMap {
    let bool_fact = |ctx: &mut Ctx<'_>, b: &Option<raw::RawBoolFact>, k: &str| {
        b.as_ref().map(|b| match b {
            raw::RawBoolFact::Pointer(p) => BoolFact {
                pointer: pointer(ctx, span.clone(), &format!("{key}.{k}"), p),
                equals: Vec::new(),
            },
            raw::RawBoolFact::Equals { pointer: p, equals } => BoolFact {
                pointer: pointer(ctx, span.clone(), &format!("{key}.{k}"), p),
                equals: match equals {
                    raw::RawOneOrMany::One(s) => vec![s.clone()],
                    raw::RawOneOrMany::Many(v) => v.clone(),
                },
            },
        })
    };
    let compliant = bool_fact(ctx, &f.compliant, "compliant");
    let managed = bool_fact(ctx, &f.managed, "managed");
    let text = |ctx: &mut Ctx<'_>, p: &Option<String>, k: &str| {
        p.as_ref()
            .map(|p| pointer(ctx, span.clone(), &format!("{key}.{k}"), p))
    };
    let map = FactMap {
        compliant,
        managed,
        risk_score: text(ctx, &f.risk_score, "risk_score"),
        os: text(ctx, &f.os, "os"),
        os_version: text(ctx, &f.os_version, "os_version"),
        last_seen: text(ctx, &f.last_seen, "last_seen"),
        extra: f
            .extra
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    pointer(ctx, span.clone(), &format!("{key}.extra.{n}"), p),
                )
            })
            .collect(),
    };
    for n in f.extra.keys() {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            ctx.err(
                span.clone(),
                format!("{key}.extra"),
                format!("`{n}`: letters, digits, _"),
            );
        }
    }
    if map == FactMap::default() {
        ctx.err(
            span,
            key,
            "no fact is mapped: the source would answer nothing",
        );
    }
    map
}

fn auth(ctx: &mut Ctx<'_>, a: &Spanned<raw::RawSourceAuth>, key: &str) -> Option<Auth> {
    let span = a.span();
    let a = a.get_ref();
    let need = |ctx: &mut Ctx<'_>, f: &Option<Spanned<String>>, name: &str| match f {
        Some(f) => Some(secret(ctx, f, &format!("{key}.{name}"))),
        None => {
            ctx.err(
                span.clone(),
                format!("{key}.{name}"),
                format!("kind = \"{}\" needs {name}", a.kind.get_ref()),
            );
            None
        }
    };
    match a.kind.get_ref().as_str() {
        "none" => Some(Auth::None),
        "bearer" => need(ctx, &a.token_file, "token_file").map(Auth::Bearer),
        "api_key" => {
            let key_secret = need(ctx, &a.key_file, "key_file")?;
            let header = a.header.clone().unwrap_or_else(|| "X-API-Key".into());
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                ctx.err(
                    span,
                    format!("{key}.header"),
                    format!("`{header}` is not a header name"),
                );
                return None;
            }
            Some(Auth::ApiKey {
                header,
                key: key_secret,
            })
        }
        "oauth2" => {
            let client_secret = need(ctx, &a.client_secret_file, "client_secret_file")?;
            let Some(client_id) = a.client_id.clone().filter(|c| !c.is_empty()) else {
                ctx.err(
                    span,
                    format!("{key}.client_id"),
                    "kind = \"oauth2\" needs client_id",
                );
                return None;
            };
            let Some(url) = &a.token_url else {
                ctx.err(
                    span,
                    format!("{key}.token_url"),
                    "kind = \"oauth2\" needs token_url",
                );
                return None;
            };
            let token_url = match Url::parse(url.get_ref()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                _ => {
                    ctx.err(url.span(), format!("{key}.token_url"), "not an http(s) URL");
                    return None;
                }
            };
            cleartext(ctx, &token_url, url.span(), &format!("{key}.token_url"));
            Some(Auth::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope: a.scope.clone(),
            })
        }
        other => {
            ctx.err(
                a.kind.span(),
                format!("{key}.kind"),
                format!("`{other}`: one of none, bearer, api_key, oauth2"),
            );
            None
        }
    }
}

fn roots(
    ctx: &mut Ctx<'_>,
    s: &raw::RawSource,
    key: &str,
    base: Option<&Url>,
) -> Vec<CertificateDer<'static>> {
    let (path, span) = match &s.ca_file {
        Some(f) => (ctx.path(f.get_ref()), Some(f.span())),
        None if base.is_some_and(|u| u.scheme() == "https") => {
            (std::path::PathBuf::from(SYSTEM_CA_BUNDLE), None)
        }
        None => return Vec::new(),
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(&path)
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default();
    if certs.is_empty() {
        let message = format!("no CA certificate could be read from {}", path.display());
        match span {
            Some(span) => ctx.err(span, format!("{key}.ca_file"), message),
            None => {
                ctx.warnings.push(ConfigError {
                    file: ctx.file.to_path_buf(),
                    line: ctx.line_of(s.url.span()),
                    key: format!("{key}.ca_file"),
                    message: format!("{message}: HTTPS to this source will fail; set ca_file"),
                });
            }
        }
    }
    certs
}

fn poll(ctx: &mut Ctx<'_>, p: &Spanned<raw::RawPoll>, key: &str) -> Option<Poll> {
    let p = p.get_ref();
    let interval = ctx.bounded(
        &p.interval_secs,
        &format!("{key}.interval_secs"),
        10..86_401,
    );
    let max_pages = ctx.bounded(&p.max_pages, &format!("{key}.max_pages"), 1..10_001);
    let path = template(ctx, &p.path, &format!("{key}.path"), &BTreeSet::new(), true)?;
    Some(Poll {
        interval: Duration::from_secs(interval),
        path,
        results: pointer(
            ctx,
            p.results.span(),
            &format!("{key}.results"),
            p.results.get_ref(),
        ),
        id: pointer(ctx, p.id.span(), &format!("{key}.id"), p.id.get_ref()),
        next: p
            .next
            .as_ref()
            .map(|n| pointer(ctx, n.span(), &format!("{key}.next"), n.get_ref())),
        max_pages: u32::try_from(max_pages).unwrap_or(100),
    })
}

fn webhook(ctx: &mut Ctx<'_>, w: &Spanned<raw::RawWebhook>, key: &str) -> Option<Webhook> {
    let span = w.span();
    let w = w.get_ref();
    let window = ctx.bounded(&w.window_secs, &format!("{key}.window_secs"), 10..3_601);
    let auth = match (&w.hmac_secret_file, &w.bearer_token_file) {
        (Some(f), None) => WebhookAuth::Hmac(secret(ctx, f, &format!("{key}.hmac_secret_file"))),
        (None, Some(f)) => WebhookAuth::Bearer(secret(ctx, f, &format!("{key}.bearer_token_file"))),
        _ => {
            ctx.err(
                span,
                key,
                "exactly one of hmac_secret_file or bearer_token_file: events are never taken \
                 unauthenticated",
            );
            return None;
        }
    };
    Some(Webhook {
        auth,
        window: Duration::from_secs(window),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, parse};
    use crate::posture::settings::{Auth, IdFrom};

    /// A source (the base config is nine lines: this starts on line 10), with `step`, and a
    /// secret file next to the config.
    fn source(auth: &str, step: &str) -> String {
        let (c, _) = parse("");
        let dir = c.unwrap().path.parent().unwrap().to_path_buf();
        // Tests run at once: each writes its own copy and renames it into place, so none
        // reads the file half-written.
        let secret = dir.join("posture-test.secret");
        let mine = dir.join(format!("posture-test.secret.{:x}", rand::random::<u64>()));
        std::fs::write(&mine, "s3cret\n").unwrap();
        std::fs::set_permissions(&mine, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::rename(&mine, &secret).unwrap();
        format!(
            "[[posture.source]]\nname = \"mdm\"\nurl = \"http://127.0.0.1:1\"\n\
             identity = [{{ from = \"san_uri\", prefix = \"IntuneDeviceId://\", pattern = \"guid\" }}]\n\
             {auth}\n{step}\n[posture.source.facts]\ncompliant = \"/compliant\"\n"
        )
    }

    /// `text` is refused with an error on a key ending in `key` saying `says`.
    fn refused(text: &str, key: &str, says: &str) {
        let e = errors(text);
        assert!(
            e.iter()
                .any(|(_, k, m)| k.ends_with(key) && m.contains(says)),
            "{key}: {says}: {e:?}"
        );
    }

    const DIRECT: &str =
        "[[posture.source.step]]\npath = \"/devices/{id}\"\nmatch = { \"/id\" = \"{id}\" }\n";

    #[test]
    fn a_source_reads_into_settings_with_its_secret() {
        let text = source(
            "auth = { kind = \"oauth2\", token_url = \"http://127.0.0.1:1/token\", client_id = \"c\", client_secret_file = \"posture-test.secret\" }",
            DIRECT,
        );
        let c = parse(&text).0.unwrap();
        let s = &c.posture.unwrap().sources[0];
        assert_eq!(s.name, "mdm");
        assert_eq!(s.identity[0].from, IdFrom::SanUri);
        assert!(s.identity[0]
            .pattern
            .is_match("0f6a2c1e-8f61-4a55-b0a9-2c7b3c1b7d10"));
        assert!(!s.identity[0]
            .pattern
            .is_match("0f6a2c1e-8f61-4a55-b0a9-2c7b3c1b7d10/../x"));
        assert!(
            matches!(&s.auth, Auth::OAuth2 { client_secret, .. } if client_secret.expose() == "s3cret")
        );
        assert!(!format!("{s:?}").contains("s3cret"), "secrets never shown");
    }

    #[test]
    fn a_lookup_whose_last_record_is_never_checked_against_the_device_is_refused() {
        // A list by a filter, without `match`: an ignored filter would give another
        // device's record.
        let text = source(
            "",
            "[[posture.source.step]]\npath = \"/devices?serial={id}\"\nresults = \"/value\"\n",
        );
        let e = errors(&text);
        assert!(
            e.iter().any(|(line, key, m)| *line == Some(15)
                && key.ends_with("step[0].match")
                && m.contains("never checked")),
            "{e:?}"
        );
        // Two steps: the second matched only against a value the first saved unchecked.
        let text = source(
            "",
            "[[posture.source.step]]\npath = \"/q?serial={id}\"\nresults = \"/r\"\nsave = { host = \"\" }\n\
             [[posture.source.step]]\npath = \"/hosts/{host}\"\nmatch = { \"/aid\" = \"{host}\" }\n",
        );
        assert!(errors(&text)
            .iter()
            .any(|(_, k, m)| k.ends_with("step[1].match") && m.contains("never checked")));
        // ... and with a middle step tying the host to the device's id, accepted.
        let text = source(
            "",
            "[[posture.source.step]]\npath = \"/q?serial={id}\"\nresults = \"/r\"\nsave = { host = \"\" }\n\
             [[posture.source.step]]\npath = \"/devices/{host}\"\nmatch = { \"/serial\" = \"{id}\", \"/device_id\" = \"{host}\" }\n\
             [[posture.source.step]]\npath = \"/scores/{host}\"\nmatch = { \"/aid\" = \"{host}\" }\n",
        );
        assert_eq!(errors(&text), Vec::new());
    }

    #[test]
    fn bad_sources_are_refused_with_their_lines() {
        let cases = [
            // Unknown placeholder, bad pattern, reserved name, auth without its secret,
            // webhook without authentication, a relative pointer.
            (source("", "[[posture.source.step]]\npath = \"/d/{serial}\"\nmatch = { \"/id\" = \"{id}\" }\n"), "neither the device"),
            (source("", DIRECT).replace("pattern = \"guid\"", "pattern = \"(\""), "not a pattern name"),
            (source("", DIRECT).replace("name = \"mdm\"", "name = \"compliant\""), "a posture fact's name"),
            (source("auth = { kind = \"bearer\" }", DIRECT), "needs token_file"),
            (source("", DIRECT) + "[posture.source.webhook]\nwindow_secs = 60\n", "exactly one of"),
            (source("", DIRECT).replace("compliant = \"/compliant\"", "compliant = \"compliant\""), "not a JSON pointer"),
            (source("", DIRECT).replace("url = \"http://127.0.0.1:1\"", "url = \"ftp://x\""), "not an http(s) URL"),
        ];
        for (text, want) in cases {
            let e = errors(&text);
            assert!(
                e.iter()
                    .any(|(line, _, m)| line.is_some_and(|l| l >= 10) && m.contains(want)),
                "{want}: {e:?}"
            );
        }
    }

    #[test]
    fn a_value_saved_twice_is_refused() {
        // The first (unchecked) `host` would be used, the check would count the second.
        let text = source(
            "",
            "[[posture.source.step]]\npath = \"/q?serial={id}\"\nresults = \"/r\"\nsave = { host = \"\" }\n\
             [[posture.source.step]]\npath = \"/devices/{id}\"\nmatch = { \"/serial\" = \"{id}\" }\nsave = { host = \"/device_id\" }\n\
             [[posture.source.step]]\npath = \"/scores/{host}\"\nmatch = { \"/aid\" = \"{host}\" }\n",
        );
        refused(&text, "step[1].save", "saved twice");
    }

    #[test]
    fn a_webhook_on_a_source_whose_records_cannot_be_checked_against_the_id_is_refused() {
        let text = source(
            "",
            "[[posture.source.step]]\npath = \"/q?serial={id}\"\nresults = \"/r\"\nsave = { host = \"\" }\n\
             [[posture.source.step]]\npath = \"/devices/{host}\"\nmatch = { \"/serial\" = \"{id}\", \"/device_id\" = \"{host}\" }\n\
             [[posture.source.step]]\npath = \"/scores/{host}\"\nmatch = { \"/aid\" = \"{host}\" }\n",
        ) + "[posture.source.webhook]\nhmac_secret_file = \"posture-test.secret\"\n";
        refused(&text, "webhook", "cannot be checked");
    }

    #[test]
    fn ids_a_device_chooses_and_secrets_in_clear_are_warned_about() {
        let text = source(
            "auth = { kind = \"oauth2\", token_url = \"http://idp.example.com/token\", client_id = \"c\", client_secret_file = \"posture-test.secret\" }",
            DIRECT,
        )
        .replace(
            "identity = [",
            "identity = [{ from = \"calling_station\", pattern = \"mac\" }, ",
        );
        let (c, warnings) = parse(&text);
        assert!(c.is_ok(), "{c:?}");
        let said = |k: &str, m: &str| {
            warnings
                .iter()
                .any(|w| w.key.ends_with(k) && w.message.contains(m))
        };
        assert!(said("identity[0]", "spoof"), "{warnings:?}");
        assert!(said("auth.token_url", "plain HTTP"), "{warnings:?}");
    }

    #[test]
    fn a_value_saved_from_the_device_record_does_not_prove_the_next_record_is_the_devices() {
        // The group a device is in is not the device: its status is every member's.
        let text = source(
            "",
            "[[posture.source.step]]\npath = \"/devices/{id}\"\nmatch = { \"/id\" = \"{id}\" }\nsave = { grp = \"/groupId\" }\n\
             [[posture.source.step]]\npath = \"/groups/{grp}/status\"\nmatch = { \"/groupId\" = \"{grp}\" }\n",
        );
        refused(&text, "step[1].match", "never checked");
    }

    #[test]
    fn a_poll_caches_records_only_under_the_field_lookups_check_the_id_against() {
        let poll = "[posture.source.poll]\ninterval_secs = 60\npath = \"/devices\"\nresults = \"/value\"\nid = \"/deviceName\"\n";
        refused(&(source("", DIRECT) + poll), "poll.id", "/id");
        let good = source("", DIRECT) + &poll.replace("/deviceName", "/id");
        assert_eq!(errors(&good), Vec::new());
    }

    #[test]
    fn an_admin_token_on_a_listener_others_can_reach_is_warned_about() {
        let _ = source("", DIRECT); // writes the secret file
        let (_, warnings) =
            parse("[admin]\nlisten = \"0.0.0.0:9812\"\ntoken_file = \"posture-test.secret\"\n");
        assert!(
            warnings
                .iter()
                .any(|w| w.key == "admin.token_file" && w.message.contains("plain HTTP")),
            "{warnings:?}"
        );
    }
}
