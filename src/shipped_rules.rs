//! The shipped rules (`rules/` of the source tree), compiled into the binary, so a
//! binary without a rules directory beside it (a sidecar image, a download) still
//! runs: `serve`, `replay` and `check` use them when the default directory does not
//! exist, and `driftwarden rules --write DIR` starts a directory from them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The shipped rule files: name and text.
pub const FILES: [(&str, &str); 3] = [
    ("drift.toml", include_str!("../rules/drift.toml")),
    ("pricing.toml", include_str!("../rules/pricing.toml")),
    ("tiers.toml", include_str!("../rules/tiers.toml")),
];

/// Why the shipped rules could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum ShippedError {
    /// The private directory could not be made, or a file written.
    #[error("cannot write the shipped rules to {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// `rules --write` would overwrite a file.
    #[error("{path} exists; choose an empty directory (nothing was written)")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
}

/// The private directory the shipped rules were written to for this process, removed
/// by `remove_private` (the readers of the rules take a directory).
static PRIVATE: Mutex<Option<tempfile::TempDir>> = Mutex::new(None);

/// A directory holding the shipped rules, private to this process (mode 0700 in
/// the temp directory); the same one for every call.
pub fn private_dir() -> Result<PathBuf, ShippedError> {
    let mut held = PRIVATE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = held.as_ref() {
        return Ok(dir.path().to_path_buf());
    }
    let dir = tempfile::Builder::new()
        .prefix("driftwarden-shipped-rules-")
        .tempdir()
        .map_err(|source| ShippedError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
    write_files(dir.path())?;
    let path = dir.path().to_path_buf();
    *held = Some(dir);
    Ok(path)
}

/// Remove the private directory, if one was made (at the end of a command).
pub fn remove_private() {
    drop(PRIVATE.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// Write the shipped rules into `dir` (made if missing) to start a rules directory
/// from; refuses to overwrite any file. The paths written.
pub fn write_new(dir: &Path) -> Result<Vec<PathBuf>, ShippedError> {
    if let Some((name, _)) = FILES.iter().find(|(name, _)| dir.join(name).exists()) {
        return Err(ShippedError::Exists {
            path: dir.join(name),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| ShippedError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_files(dir)?;
    Ok(FILES.iter().map(|(name, _)| dir.join(name)).collect())
}

fn write_files(dir: &Path) -> Result<(), ShippedError> {
    for (name, text) in FILES {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| ShippedError::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_directory_holds_the_shipped_files_until_removed() {
        let dir = private_dir().expect("a private directory");
        assert_eq!(private_dir().unwrap(), dir, "one per process");
        for (name, text) in FILES {
            assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), text);
        }
        remove_private();
        assert!(!dir.exists());
    }

    #[test]
    fn writing_a_new_directory_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rules");
        assert_eq!(write_new(&dir).unwrap().len(), FILES.len());
        std::fs::write(dir.join("tiers.toml"), "# mine").unwrap();
        let err = write_new(&dir).unwrap_err();
        assert!(
            err.to_string()
                .contains(" exists; choose an empty directory"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("tiers.toml")).unwrap(),
            "# mine"
        );
    }
}
