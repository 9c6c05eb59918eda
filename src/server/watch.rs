//! Reloads when the policy files (`[policy] dir`, its `tests/`) or the dictionary files
//! change on disk, while `[policy] watch` is on. The files are looked at once a second (name,
//! size, modification and change times: no inotify limits, works on any filesystem and
//! through configuration-management tools' rename-into-place), and a change is applied once
//! the files have stayed the same for one more look, so an editor's half-written save or a
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
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>, i64)>);

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
                    // The change time too: a copy that keeps the modification time
                    // (`cp -p`, `rsync -t`) still changes it.
                    let changed = std::os::unix::fs::MetadataExt::ctime_nsec(&m).saturating_add(
                        std::os::unix::fs::MetadataExt::ctime(&m).saturating_mul(1_000_000_000),
                    );
                    files.push((path, m.len(), m.modified().ok(), changed));
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
    let mut debounce = Debounce::new(look(&shared).await);
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if debounce.observe(look(&shared).await) {
            super::reload_logged(shared.clone(), "policy or dictionary files changed").await;
        }
    }
}

/// When a change has settled: the files looked the same twice in a row, and not as they
/// did when last loaded.
#[derive(Debug, Clone, Default)]
pub struct Debounce {
    /// The files as last loaded (or as at the start).
    loaded: Fingerprint,
    /// A change seen once, waiting for a second look.
    pending: Option<Fingerprint>,
}

impl Debounce {
    /// Starts from the files as they are.
    pub fn new(now: Fingerprint) -> Self {
        Self {
            loaded: now,
            pending: None,
        }
    }

    /// Takes one look; true when a reload is due, which then counts as loading `now`
    /// (files changed again while it runs are seen on a later look, and loaded too).
    pub fn observe(&mut self, now: Fingerprint) -> bool {
        if now == self.loaded {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return false;
        }
        self.pending = None;
        self.loaded = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(files: &[(&str, u64)]) -> Fingerprint {
        Fingerprint(
            files
                .iter()
                .map(|(p, n)| (PathBuf::from(p), *n, None, 0))
                .collect(),
        )
    }

    #[test]
    fn a_change_is_loaded_once_settled_and_one_made_during_a_reload_is_loaded_after() {
        let (f0, f1, f2) = (print(&[("a", 1)]), print(&[("a", 2)]), print(&[("a", 3)]));
        let mut d = Debounce::new(f0.clone());
        assert!(!d.observe(f0.clone()), "nothing changed");
        assert!(!d.observe(f1.clone()), "changed: wait for it to settle");
        assert!(d.observe(f1.clone()), "settled: reload");
        // Saved again while that reload ran: seen next, and loaded once settled.
        assert!(!d.observe(f2.clone()));
        assert!(d.observe(f2.clone()));
        assert!(!d.observe(f2), "loaded: nothing more to do");
        // A change that flickers back before settling does nothing.
        assert!(!d.observe(f1));
        assert!(!d.observe(print(&[("a", 3)])));
    }

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

    #[test]
    fn a_re_pointed_release_link_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        for (release, text) in [("a", "x"), ("b", "xy")] {
            std::fs::create_dir_all(dir.path().join(release)).unwrap();
            std::fs::write(dir.path().join(release).join("p.toml"), text).unwrap();
        }
        let current = dir.path().join("current");
        std::os::unix::fs::symlink(dir.path().join("a"), &current).unwrap();
        let dirs = [current.clone()];
        let before = fingerprint(&dirs);
        let next = dir.path().join("next");
        std::os::unix::fs::symlink(dir.path().join("b"), &next).unwrap();
        std::fs::rename(&next, &current).unwrap();
        assert_ne!(fingerprint(&dirs), before);
    }
}
