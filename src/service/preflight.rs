//! What start-up needs of the configuration and of the files and
//! directories it names. [`problems`] is the one function that decides both
//! `enrolld config check` and whether `enrolld run` starts, so the two
//! cannot disagree: a configuration that `check` refuses does not start,
//! and one it accepts starts and can upload.
//!
//! The values themselves (ranges, URLs, the vendors' rules) are checked when
//! the file is read ([`Config::parse`]); this adds what only the machine can
//! tell: the queue key, the provider's credentials and secret file, the
//! extra CA file, the model, the control socket's and the state directory's
//! places.

use crate::config::Config;
use crate::control::server::check_socket_file;
use std::path::Path;

/// [`problems`] as one error naming `source` (the file, or the defaults), or
/// `Ok` when there are none.
pub fn check(cfg: &Config, source: &Path) -> Result<(), crate::config::ConfigError> {
    let problems = problems(cfg);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(crate::config::ConfigError::Invalid {
            path: source.to_path_buf(),
            problems,
        })
    }
}

/// Every reason start-up or the first upload would fail, as (key, reason).
pub fn problems(cfg: &Config) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = Vec::new();
    let mut bad = |key: &str, why: String| p.push((key.to_string(), why));
    if let Err(e) = crate::queue::seal::QueueKey::from_file(&cfg.queue.key_file) {
        bad("queue.key_file", e);
    }
    credentials(cfg, &mut bad);
    if let Some(ca) = &cfg.tls.extra_ca_file {
        if let Err(e) = crate::cloud::http::load_ca_file(ca) {
            bad("tls.extra_ca_file", e.message);
        }
    }
    if let Some(model) = &cfg.detect.model {
        if let Err(e) = crate::trust::check(model, crate::trust::Privacy::Public) {
            bad("detect.model", format!("{}: {e}", model.display()));
        }
    }
    // A socket already there is systemd's (socket activation: its directory
    // is systemd's too) or a stale one the daemon replaces; otherwise the
    // daemon makes the directory and binds in it.
    let socket_exists = std::fs::symlink_metadata(&cfg.control.socket).is_ok();
    if let Err(e) = check_socket_file(&cfg.control.socket) {
        bad("control.socket", e);
    } else if let Some(dir) = cfg
        .control
        .socket
        .parent()
        .filter(|d| !socket_exists && !d.as_os_str().is_empty())
    {
        if let Err(e) = usable_dir(dir) {
            bad("control.socket", format!("its directory {e}"));
        }
    }
    if let Err(e) = usable_dir(&cfg.state_dir) {
        bad("state_dir", e);
    }
    p
}

/// The configured provider's key id, secret file and group: uploads cannot
/// start without them.
fn credentials(cfg: &Config, bad: &mut impl FnMut(&str, String)) {
    for (key, why) in cfg.provider_problems(cfg.upload.provider) {
        bad(key, why);
    }
}

/// Whether enrolld can work in `dir`: an existing directory it can write
/// in, or one it can create (as start-up does). The probe leaves nothing
/// behind: a file it makes is removed, and so are directories it created.
pub fn usable_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!("{} exists and is not a directory", dir.display())),
        Ok(_) => {
            let probe = dir.join(format!(".enrolld-check-{}", std::process::id()));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| format!("{}: cannot write in it: {e}", dir.display()))?;
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // The directories that do not exist yet, deepest last.
            let mut missing = vec![dir.to_path_buf()];
            let mut at = dir.parent();
            while let Some(parent) = at.filter(|p| !p.as_os_str().is_empty()) {
                match std::fs::metadata(parent) {
                    Ok(m) if m.is_dir() => break,
                    Ok(_) => {
                        return Err(format!(
                            "{} cannot be created: {} is not a directory",
                            dir.display(),
                            parent.display()
                        ))
                    }
                    Err(_) => missing.push(parent.to_path_buf()),
                }
                at = parent.parent();
            }
            let made = std::fs::create_dir_all(dir)
                .map_err(|e| format!("{} cannot be created: {e}", dir.display()));
            for d in &missing {
                let _ = std::fs::remove_dir(d);
            }
            made
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_probe_leaves_nothing_behind() {
        let t = tempfile::tempdir().expect("tempdir");
        let deep = t.path().join("a/b/c");
        assert_eq!(usable_dir(&deep), Ok(()));
        assert!(
            !t.path().join("a").exists(),
            "created directories are removed"
        );
        assert_eq!(usable_dir(t.path()), Ok(()));
        assert_eq!(std::fs::read_dir(t.path()).expect("read").count(), 0);
        let file = t.path().join("f");
        std::fs::write(&file, "x").expect("write");
        assert!(usable_dir(&file)
            .expect_err("a file")
            .contains("not a directory"));
        assert!(usable_dir(&file.join("sub"))
            .expect_err("under a file")
            .contains("is not a directory"));
    }
}
