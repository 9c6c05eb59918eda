//! Reloads when the policy files (`[policy] dir`, its `tests/`) or the dictionary files
//! change on disk, while `[policy] watch` is on. The files are looked at once a second (name,
//! size, modification time: no inotify limits, works on any filesystem and through
//! configuration-management tools' rename-into-place), and a change is applied once the
//! files have stayed the same for one more look, so an editor's half-written save or a
//! `git checkout` in progress is not loaded. The reload is the same as SIGHUP's: the new set
//! is compiled, linted and tested first, and refused (the running one kept) if anything is
//! wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::Config;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// Most files looked at in one folder (the policy loader reads at most 256).
const MAX_ENTRIES: usize = 1024;

/// What the watched files look like: each one's path, size and modification time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

/// The files `config` loads policies and dictionaries from, as folders to list; empty when
/// watching is off.
pub fn watched(config: &Config) -> Vec<PathBuf> {
    let Some(policy) = config.policy.as_ref().filter(|p| p.watch) else {
        return Vec::new();
    };
    let mut dirs = vec![policy.dir.clone(), policy.dir.join("tests")];
    if let Some(dictionary) = &config.dictionary_path {
        dirs.push(
            dictionary
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf),
        );
    }
    dirs
}

/// Lists `dirs` (missing ones count as empty). Blocking.
pub fn fingerprint(dirs: &[PathBuf]) -> Fingerprint {
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok).take(MAX_ENTRIES) {
            let path = e.path();
            // Editors' swap and backup files are not policy.
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with('~') {
                continue;
            }
            if let Ok(m) = std::fs::metadata(&path) {
                if m.is_file() {
                    files.push((path, m.len(), m.modified().ok()));
                }
            }
        }
    }
    files.sort();
    Fingerprint(files)
}

/// Watches until `stop`, reloading after each settled change.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let look = |shared: &Arc<Shared>| {
        let dirs = watched(&shared.live().config);
        async move {
            tokio::task::spawn_blocking(move || fingerprint(&dirs))
                .await
                .unwrap_or_default()
        }
    };
    let mut seen = look(&shared).await;
    let mut pending: Option<Fingerprint> = None;
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = look(&shared).await;
        if now == seen {
            pending = None;
            continue;
        }
        // Changed: wait until it holds still for one more look.
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        pending = None;
        super::reload_logged(shared.clone(), "policy or dictionary files changed").await;
        // What the (possibly new) configuration watches, as it is now.
        seen = look(&shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_changes_with_a_file_and_ignores_editor_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf(), dir.path().join("missing")];
        let empty = fingerprint(&dirs);
        std::fs::write(dir.path().join("10.toml"), "a").unwrap();
        let one = fingerprint(&dirs);
        assert_ne!(empty, one);
        std::fs::write(dir.path().join(".10.toml.swp"), "x").unwrap();
        std::fs::write(dir.path().join("10.toml~"), "x").unwrap();
        assert_eq!(fingerprint(&dirs), one);
        std::fs::write(dir.path().join("10.toml"), "ab").unwrap();
        assert_ne!(fingerprint(&dirs), one);
    }
}
