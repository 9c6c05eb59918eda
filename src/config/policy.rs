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
/// the built-in policy when `[policy]` is not set.
///
/// # Errors
/// A folder or file that cannot be read, every error in the rules, every failed
/// expectation; each with file:line.
pub fn load(config: &Config) -> Result<Policy, ConfigErrors> {
    match &config.policy {
        None => Ok(Policy::builtin(
            config.vlan.clone(),
            config.dictionary.clone(),
        )),
        Some(s) => {
            let (policy, _) = load_checked(s, &config.dictionary)?;
            unknown_sources(&policy, config.posture.as_ref())?;
            Ok(policy)
        }
    }
}

/// Refuses rules that read a posture source the config does not have: a misspelt source
/// would read as "unavailable" for every device.
fn unknown_sources(
    policy: &Policy,
    posture: Option<&crate::posture::PostureSettings>,
) -> Result<(), ConfigErrors> {
    let known = |n: &str| posture.is_some_and(|p| p.sources.iter().any(|s| s.name == n));
    let errors: Vec<ConfigError> = policy
        .rules()
        .iter()
        .flat_map(|r| r.conditions.iter().map(move |c| (r, c)))
        .filter_map(|(r, c)| match &c.field {
            crate::policy::rules::Field::Posture {
                source: Some(name), ..
            } if !known(name) => Some(ConfigError {
                file: PathBuf::from(&c.at.file),
                line: Some(c.at.line),
                key: format!("rule `{}`", r.name),
                message: format!(
                    "`{}` reads posture source `{name}`, which no [[posture.source]] in the \
                     config is named",
                    c.text
                ),
            }),
            _ => None,
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The admin's rules and their expectations (how many ran).
///
/// # Errors
/// As [`load`].
pub fn load_checked(
    s: &PolicySettings,
    dictionary: &Arc<Dictionary>,
) -> Result<(Policy, usize), ConfigErrors> {
    let policy = compile(s, dictionary)?;
    let cases = read_cases(&s.dir.join("tests"), dictionary)?;
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
    if files.is_empty() {
        return Err(ConfigErrors(vec![s.at.error(format!(
            "no *.toml policy files in {}: a policy needs at least its default rule",
            s.dir.display()
        ))]));
    }
    Policy::compile(&files, dictionary.clone(), s.zone.clone())
        .map_err(|e| ConfigErrors(e.iter().map(policy_error).collect()))
}

/// The expectations in `dir` (`*.toml`, name order); none when the folder is missing.
///
/// # Errors
/// A file that cannot be read or parsed, a certificate it names that cannot be read.
pub fn read_cases(dir: &Path, dictionary: &Dictionary) -> Result<Vec<Case>, ConfigErrors> {
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
    parse_cases(&files, dictionary)
}

/// The expectations in `files`.
///
/// # Errors
/// As [`read_cases`].
pub fn parse_cases(
    files: &[PolicyFile],
    dictionary: &Dictionary,
) -> Result<Vec<Case>, ConfigErrors> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let base = Path::new(&f.name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut load_cert = |name: &str| read_chain(&base.join(name));
        match cases::parse(f, &mut load_cert, dictionary) {
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
    let text = read_bounded(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
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
        // Hidden files are editors' and tools' (and the watcher ignores them too).
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
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
            let text = read_bounded(&p)?;
            Ok(PolicyFile {
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

/// A file's text, refused past [`MAX_FILE_BYTES`] (read with that bound, so a file that
/// grows while it is read cannot make it larger).
fn read_bounded(p: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{}: more than {MAX_FILE_BYTES} bytes", p.display()));
    }
    Ok(text)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Place;

    fn settings(dir: &Path) -> PolicySettings {
        PolicySettings {
            dir: dir.to_path_buf(),
            zone: jiff::tz::TimeZone::UTC,
            watch: false,
            at: Place {
                file: PathBuf::from("anchord.toml"),
                line: Some(7),
                key: "policy".into(),
            },
        }
    }

    #[test]
    fn an_empty_policy_folder_is_refused_at_the_policy_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".hidden.toml"),
            "[[rule]]\nname = \"d\"\naccept = true\n",
        )
        .unwrap();
        let dict = Arc::new(Dictionary::builtin().unwrap());
        let e = load_checked(&settings(dir.path()), &dict).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("anchord.toml:7: policy: no *.toml policy files in"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_expectation_names_its_case_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.toml"),
            "[[rule]]\nname = \"d\"\nreject = \"no\"\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/t.toml"),
            "# staff\n[[case]]\nname = \"staff\"\ncert = { cn = \"a\" }\nexpect = { vlan = 10 }\n",
        )
        .unwrap();
        let dict = Arc::new(Dictionary::builtin().unwrap());
        let text = load_checked(&settings(dir.path()), &dict)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(
                "t.toml:2: case `staff`: expectation failed: expected accept, got reject (no)"
            ),
            "{text}"
        );
    }
}
