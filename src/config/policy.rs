//! Reads the `[policy]` folder: every `*.toml` in it, in name order, compiled against the
//! config's dictionary; then every `tests/*.toml` in it, run against the result. Any error
//! or failed expectation refuses the policy (at start, at `check`, at a reload) with
//! file:line, so a change that breaks an expectation never goes live.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::{Config, ConfigError, ConfigErrors, PolicySettings};
use crate::policy::cases::{self, Case};
use crate::policy::{Policy, PolicyError, PolicyFile};
use crate::radius::dictionary::Dictionary;

/// Most policy (or case) files read from one folder.
const MAX_FILES: usize = 256;

/// Largest policy (or case) file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The policy `config` asks for: the admin's rules with their expectations checked, or
/// the built-in policy when `[policy]` is not set. `now` (Unix seconds) is the time of
/// expectations that give none.
///
/// # Errors
/// A folder or file that cannot be read, every error in the rules, every failed
/// expectation; each with file:line.
pub fn load(config: &Config, now: i64) -> Result<Policy, ConfigErrors> {
    match &config.policy {
        None => Ok(Policy::builtin(
            config.vlan.clone(),
            config.dictionary.clone(),
        )),
        Some(s) => load_checked(s, &config.dictionary, now).map(|(p, _)| p),
    }
}

/// The admin's rules and their expectations (how many ran).
///
/// # Errors
/// As [`load`].
pub fn load_checked(
    s: &PolicySettings,
    dictionary: &Arc<Dictionary>,
    now: i64,
) -> Result<(Policy, usize), ConfigErrors> {
    let policy = compile(s, dictionary)?;
    let cases = read_cases(&s.dir.join("tests"), dictionary, now)?;
    let failures = cases::run(&policy, &cases);
    if !failures.is_empty() {
        return Err(ConfigErrors(
            failures
                .iter()
                .map(|f| ConfigError {
                    file: PathBuf::from(&f.at.file),
                    line: Some(f.at.line),
                    key: format!("case `{}`", f.case),
                    message: format!("expectation failed: {}", f.message),
                })
                .collect(),
        ));
    }
    Ok((policy, cases.len()))
}

/// The admin's rules, compiled and linted, without running their expectations.
///
/// # Errors
/// The folder cannot be read; every error in the rules.
pub fn compile(s: &PolicySettings, dictionary: &Arc<Dictionary>) -> Result<Policy, ConfigErrors> {
    let files = read_folder(&s.dir).map_err(|e| ConfigErrors(vec![s.at.error(e)]))?;
    Policy::compile(&files, dictionary.clone(), s.zone.clone())
        .map_err(|e| ConfigErrors(e.iter().map(policy_error).collect()))
}

/// The expectations in `dir` (`*.toml`, name order); none when the folder is missing.
///
/// # Errors
/// A file that cannot be read or parsed, a certificate it names that cannot be read.
pub fn read_cases(
    dir: &Path,
    dictionary: &Dictionary,
    now: i64,
) -> Result<Vec<Case>, ConfigErrors> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let files = read_folder(dir).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            file: dir.to_path_buf(),
            line: None,
            key: String::new(),
            message,
        }])
    })?;
    parse_cases(&files, dictionary, now)
}

/// The expectations in `files`.
///
/// # Errors
/// As [`read_cases`].
pub fn parse_cases(
    files: &[PolicyFile],
    dictionary: &Dictionary,
    now: i64,
) -> Result<Vec<Case>, ConfigErrors> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let base = Path::new(&f.name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut load_cert = |name: &str| read_chain(&base.join(name));
        match cases::parse(f, &mut load_cert, dictionary, now) {
            Ok(c) => all.extend(c),
            Err(e) => errors.extend(e.iter().map(policy_error)),
        }
    }
    if errors.is_empty() {
        Ok(all)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The certificates of a PEM file, device certificate first.
///
/// # Errors
/// The file cannot be read or holds no certificate.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// Every `*.toml` directly in `dir`, in name order.
///
/// # Errors
/// The folder or a file cannot be read, or there are too many or too large.
pub fn read_folder(dir: &Path) -> Result<Vec<PolicyFile>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.len() > MAX_FILES {
        return Err(format!(
            "{}: {} files, at most {MAX_FILES} are read",
            dir.display(),
            paths.len()
        ));
    }
    paths
        .into_iter()
        .map(|p| {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if size > MAX_FILE_BYTES {
                return Err(format!(
                    "{}: {size} bytes, at most {MAX_FILE_BYTES}",
                    p.display()
                ));
            }
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Ok(PolicyFile {
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

fn policy_error(e: &PolicyError) -> ConfigError {
    ConfigError {
        file: PathBuf::from(&e.at.file),
        line: Some(e.at.line),
        key: e.rule.as_ref().map_or_else(String::new, |r| {
            if r.starts_with("case ") {
                r.clone()
            } else {
                format!("rule `{r}`")
            }
        }),
        message: e.message.clone(),
    }
}
